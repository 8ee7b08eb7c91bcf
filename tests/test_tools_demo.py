"""Smoke runs of the demo and of the synthetic Table 2 driver: the real tools (train, test, flops) end to end
on a few clips, checking the files and tables they promise (the numbers themselves are measured in README)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.train_size=16", "data.synthetic.val_size=16", "train.epochs=1", "train.eval_every=1",
        "runtime.device=cpu", "runtime.tensorboard=false", "runtime.progress=false"]


def _run(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, text=True, capture_output=True, **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_demo_writes_its_table_and_results(tmp_path):
    out = _run(["tools/demo.py", "--work-dir", str(tmp_path / "demo"), "--opts", *TINY])
    rows = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert [r["model"] for r in rows] == ["TSN", "RSANet"]
    for r in rows:
        assert set(r) == {"model", "params", "gflops", "top1", "mean_class_accuracy", "train_seconds"}
        assert 0.0 <= r["top1"] <= 100.0 and r["params"] > 0 and r["gflops"] > 0 and r["train_seconds"] > 0
        # the numbers are the ones tools/test.py wrote for that model's checkpoint
        metrics = json.loads((tmp_path / "demo" / r["model"] / "test_metrics.json").read_text())
        assert metrics["top1"] == r["top1"] and metrics["num_videos"] == 16
    assert rows[1]["params"] > rows[0]["params"]  # RSA adds its kernels to the same backbone
    assert "| TSN |" in out and "| RSANet |" in out and "chance: 12.5 %" in out
    # a second run clears the demo's own folders; a folder the demo did not make is refused
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    proc = subprocess.run([sys.executable, "tools/demo.py", "--work-dir", str(foreign)], cwd=ROOT, text=True,
                          capture_output=True)
    assert proc.returncode != 0 and "was not made by the demo" in proc.stderr + proc.stdout
    assert (foreign / "keep.txt").exists()


@pytest.mark.slow
def test_table2_driver_runs_seeds_in_parallel_and_reuses_finished_runs(tmp_path):
    configs = ["configs/synthetic/tsn.yaml", "configs/synthetic/rsa.yaml"]
    args = ["tools/table2_synthetic.py", "--seeds", "2", "--jobs", "2", "--configs", *configs,
            "--work-dir", str(tmp_path), "--opts", *TINY]
    out = _run(args)
    rows = json.loads((tmp_path / "table2_synthetic.json").read_text())
    assert [r["name"] for r in rows] == ["tsn", "rsa"]  # the paper's row order
    for r in rows:
        assert r["seeds"] == 2 and len(r["top1"]) == 2
        seeds = [json.loads((tmp_path / r["name"] / f"seed{s}" / "test_metrics.json").read_text())["top1"]
                 for s in range(2)]
        assert r["top1"] == seeds and r["top1_mean"] == pytest.approx(sum(seeds) / 2)
    assert "| 2D convolution (TSN) |" in out and "| RSA |" in out
    assert (tmp_path / "table2_synthetic.md").read_text().startswith("| transform |")
    # finished runs are reused: a second call trains nothing
    again = _run(args)
    assert "[table2] tsn seed 0 ->" not in again and "| RSA |" in again
