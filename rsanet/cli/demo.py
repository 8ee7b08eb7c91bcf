"""The demo: TSN vs RSANet on the built-in synthetic motion benchmark, with the real tools end to end.

For each model it runs the train tool (checkpoints and TensorBoard logs in ``<work-dir>/<model>``), the test
tool on the held-out ``test`` split (``test_metrics.json``) and the flops tool (``--json``) at the synthetic
input size, each in its own process, then prints a table and writes ``<work-dir>/demo_results.json``: a list
with one object per model (``model``, ``params``, ``gflops``, ``top1``, ``mean_class_accuracy``, ``train_seconds``).

    python tools/demo.py --work-dir work_dirs/demo
    python tools/demo.py --work-dir /tmp/ci_demo --opts data.synthetic.train_size=64 train.epochs=1   # a quick run
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rsanet.cli import REPO
from rsanet.config import load_config

MODELS = {"TSN": "configs/synthetic/tsn.yaml", "RSANet": "configs/synthetic/rsa.yaml"}
MARKER = ".rsanet_demo"  # a work dir holding this file was made by this tool and may be cleared by it


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default=os.environ.get("DEMO_WORK_DIR", "work_dirs/demo"),
                   help="output folder (default: $DEMO_WORK_DIR or work_dirs/demo)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models to run")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for every model's config, e.g. train.epochs=1 runtime.device=cpu")
    return p.parse_args(argv)


class Stages:
    """Prints ``[demo k/n | mm:ss] what`` before every step, so that the log shows where the demo is."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def begin(self, what: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        print(f"\n[demo {self.done}/{self.total} | {elapsed // 60:02.0f}:{elapsed % 60:02.0f} elapsed] {what}",
              flush=True)


def run_tool(args: list[str], capture: bool = False) -> str:
    """Run ``python -m rsanet.cli.<tool> ...`` from the repository root; raise with the command line when it
    fails."""
    cmd = [sys.executable, "-m", *args]
    proc = subprocess.run(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}")
    return proc.stdout or ""


def train_and_test(config: str, work_dir: Path, opts: list[str], stages: Stages, name: str) -> dict:
    """Train ``config`` into ``work_dir``, test its last checkpoint and count its complexity."""
    cfg = load_config(REPO / config, opts)
    opt_args = ["--opts", *opts] if opts else []
    stages.begin(f"training {name} ({config}) -> {work_dir}")
    start = time.perf_counter()
    run_tool(["rsanet.cli.train", "--config", config, "--work-dir", str(work_dir), *opt_args])
    train_seconds = time.perf_counter() - start
    stages.begin(f"testing {name} on the held-out `{cfg.test.split}` split")
    run_tool(["rsanet.cli.test", "--config", config, "--checkpoint", str(work_dir / "last.pth"),
              "--work-dir", str(work_dir), *opt_args])
    metrics = json.loads((work_dir / "test_metrics.json").read_text())
    size = cfg.test.crop_size or cfg.data.crop_size
    counted = json.loads(run_tool(["rsanet.cli.flops", "--config", config, "--json", "--size", str(size),
                                   "--frames", str(cfg.model.num_segments), *opt_args], capture=True))
    return {"model": name, "params": int(counted["params"]), "gflops": counted["flops"] / 1e9,
            "top1": float(metrics["top1"]), "mean_class_accuracy": float(metrics["mean_class_accuracy"]),
            "train_seconds": round(train_seconds, 1)}


def format_table(rows: list[dict], size: int, frames: int, chance: float) -> str:
    lines = [f"| model | params | GFLOPs ({frames}x{size}x{size}) | top-1 (%) | mean class acc. (%) | training time |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["train_seconds"]
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['gflops']:.3f} | {r['top1']:.1f} | "
                     f"{r['mean_class_accuracy']:.1f} | {t // 60:.0f} min {t % 60:02.0f} s |")
    lines.append(f"\nchance: {chance:.1f} % top-1")
    return "\n".join(lines)


def prepare_work_dir(work_dir: Path) -> None:
    """Create the work dir, or clear a previous demo's results in it; never touch a foreign folder."""
    if work_dir.exists() and any(work_dir.iterdir()):
        if not (work_dir / MARKER).exists():
            raise SystemExit(f"error: {work_dir} exists and was not made by the demo; set DEMO_WORK_DIR "
                             "(or --work-dir) to a new or empty folder")
        for name in (*MODELS, "demo_results.json"):
            target = work_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / MARKER).write_text("made by tools/demo.py; its model folders are replaced on the next run\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    work_dir = Path(args.work_dir).resolve()
    prepare_work_dir(work_dir)
    stages = Stages(2 * len(args.models))
    rows = []
    try:
        for name in args.models:
            rows.append(train_and_test(MODELS[name], work_dir / name, args.opts, stages, name))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cfg = load_config(REPO / MODELS[args.models[0]], args.opts)
    (work_dir / "demo_results.json").write_text(json.dumps(rows, indent=2) + "\n")
    total = time.perf_counter() - stages.start
    synthetic = cfg.data.synthetic
    print(f"\nSynthetic motion benchmark ({synthetic.classes} motion classes, held-out `{cfg.test.split}` split of "
          f"{synthetic.val_size} clips), {total / 60:.1f} min in total:\n")
    print(format_table(rows, cfg.test.crop_size or cfg.data.crop_size, cfg.model.num_segments,
                       100.0 / synthetic.classes))
    print(f"\nwork dir: {work_dir}  (checkpoints and TensorBoard logs per model; "
          f"`tensorboard --logdir {work_dir}`)\ntable: {work_dir / 'demo_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
