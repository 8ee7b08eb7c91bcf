"""Distributed runs through torchrun (2 CPU processes, gloo): training with gradient accumulation and
validation, multi-view testing whose metrics and score files equal a 1-process evaluation although the
dataset size does not divide by 2, and a failure on one rank that ends the whole job instead of hanging."""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tools_support import run_job

from rsanet.config import load_config
from rsanet.engine import run_test
from rsanet.metrics import load_scores

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
model: {arch: resnet18, width: 8, num_classes: 2, num_segments: 4, pretrained: null,
        transform: {positions: [[1], [], [], []], kernel_size: [3, 3, 3]}}
data: {dataset: synthetic, synthetic: {classes: 2, frames: 4, resolution: [32, 32], train_size: 8, val_size: 7},
       resize: [32, 32], crop_size: 32, num_workers: 0}
train: {epochs: 1, warmup_epochs: 0, batch_size: 2, accumulate: 2, lr: 0.5}
test: {batch_size: 4, clips: 3}
runtime: {log_interval: 1, tensorboard: false, progress: false, dist_timeout_minutes: 5}
"""


def torchrun(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    return run_job(cmd, timeout, env)  # kills every rank on a timeout



def test_two_process_train_and_test_equal_one_process(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(CONFIG)
    w = tmp_path / "w"
    r = torchrun(ROOT / "tools" / "train.py", "--config", cfg_path, "--work-dir", w)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ckpt = torch.load(w / "last.pth", weights_only=True)
    # 8 clips / (2 per step x 2 accumulated x 2 processes) = 1 optimizer step; LR scaled to the total batch 8.
    run = ckpt["run_state"]
    assert run["world_size"] == 2 and ckpt["global_step"] == 1 and ckpt["steps_per_epoch"] == 1
    assert run["total_batch"] == 8 and run["clips_per_process"] == 4 and len(ckpt["rng"]) == 2
    assert run["scaled_lr"] == pytest.approx(0.5 * 8 / 64) and "scaled_lr" not in ckpt["config"]["train"]
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.5 * 8 / 64)
    assert "2 process(es)" in (w / "train.log").read_text()

    # 7 videos x 3 clips = 21 views: the 2-rank sampler pads one duplicate, which must be dropped.
    r = torchrun(ROOT / "tools" / "test.py", "--config", cfg_path, "--checkpoint", w / "last.pth",
                 "--work-dir", w / "two")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    one = run_test(load_config(cfg_path), w / "last.pth", w / "one")
    m1 = json.loads((w / "one" / "test_metrics.json").read_text())
    m2 = json.loads((w / "two" / "test_metrics.json").read_text())
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos", "views"):
        assert m1[key] == m2[key] == one[key], key
    assert m2["num_videos"] == 7 and m2["views"] == 3
    s1, s2 = load_scores(w / "one" / "scores.npz"), load_scores(w / "two" / "scores.npz")
    assert s1["video_ids"].tolist() == s2["video_ids"].tolist()
    assert s1["labels"].tolist() == s2["labels"].tolist() and s2["views"].tolist() == [3] * 7
    np.testing.assert_allclose(s2["scores"], s1["scores"], rtol=0, atol=1e-6)

    # The validation run inside the 2-process training (same split and views) agrees too.
    val = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines() if '"val"' in x][-1]
    one_val = run_test(load_config(cfg_path, ["test.split=val"]), w / "last.pth", w / "one_val")
    assert val["top1"] == one_val["top1"] and val["top5"] == one_val["top5"]


DRIVER = """\
import os, sys
import rsanet
import torch
from rsanet.engine import runner

real = runner.build_criterion

class FailingLoss(torch.nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base, self.calls = base, 0

    def forward(self, logits, target):
        self.calls += 1
        if os.environ["RANK"] == "1" and self.calls == 2:
            raise RuntimeError("injected failure on rank 1")
        return self.base(logits, target)


def build(cfg):
    return FailingLoss(real(cfg))

runner.build_criterion = build
from rsanet.cli import train  # what tools/train.py runs
sys.exit(train.main())
"""


def test_failure_on_one_rank_ends_the_job(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(CONFIG.replace("epochs: 1", "epochs: 3"))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)  # torchrun() puts this checkout on PYTHONPATH
    t0 = time.monotonic()
    r = torchrun(driver, "--config", cfg_path, "--work-dir", tmp_path / "w", timeout=200)
    assert r.returncode != 0
    assert "injected failure on rank 1" in r.stdout + r.stderr
    assert time.monotonic() - t0 < 180  # rank 0, waiting in a collective, was torn down, not left hanging
