"""Table 2 on the synthetic motion benchmark: every transform of configs/synthetic/, several seeds, mean ± std.

Each (config, seed) run trains with the train tool and tests the last checkpoint on the held-out ``test`` split
with the test tool (each in its own process); seed ``s`` sets both ``runtime.seed`` (initialisation, data
order) and ``data.synthetic.seed`` (a new draw of the benchmark). Runs that already have a ``test_metrics.json`` are
reused, so an interrupted table continues where it stopped. The table is printed as Markdown and saved
to ``<work-dir>/table2_synthetic.json`` (and ``.md``).

    python tools/table2_synthetic.py --seeds 3
    python tools/table2_synthetic.py --seeds 3 --jobs 2   # two runs at a time, each on half of the CPU threads
    python tools/table2_synthetic.py --seeds 1 --configs configs/synthetic/tsn.yaml configs/synthetic/rsa.yaml
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rsanet.cli import REPO
from rsanet.config import load_config
from rsanet.paper import ABLATIONS

ORDER = ["tsn", "conv3d", "conv2plus1d", "self_attention", "self_attention_content", "rsa"]  # the paper's row order
LABELS = {"tsn": "2D convolution (TSN)", "conv3d": "3D convolution", "conv2plus1d": "(2+1)D convolution",
          "self_attention": "self-attention (content + position)", "self_attention_content":
          "self-attention (content only)", "rsa": "RSA"}
# each synthetic config's row of the paper's Table 2 (rsanet.paper.ABLATIONS: its SS-V1 top-1)
PAPER_ROW = {"tsn": "table2_conv2d", "conv3d": "table2_conv3d", "conv2plus1d": "table2_conv2plus1d",
             "self_attention": "table2_self_attention", "self_attention_content": "table2_self_attention_content",
             "rsa": "table2_rsa"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per config (default 3)")
    p.add_argument("--configs", nargs="+", default=None, help="configs (default: every configs/synthetic/*.yaml)")
    p.add_argument("--work-dir", default="work_dirs/table2_synthetic", help="output folder")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time (default 1); each gets cpu_count / jobs CPU threads")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    return p.parse_args(argv)


def _run(args: list[str], capture: bool = False, threads: int = 0) -> str:

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, text=True, env=env,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise RuntimeError(f"failed (exit code {proc.returncode}): python -m {' '.join(args)}")
    return proc.stdout or ""


def run_one(config: Path, seed: int, work_dir: Path, opts: list[str], threads: int = 0) -> dict:
    """Train and test one (config, seed); reuse a finished run. Returns its test metrics and training time."""
    done = work_dir / "test_metrics.json"
    timing = work_dir / "train_seconds.json"
    if done.exists() and timing.exists():
        return {**json.loads(done.read_text()), **json.loads(timing.read_text())}
    run_opts = ["--opts", f"runtime.seed={seed}", f"data.synthetic.seed={seed}", *opts]
    start = time.perf_counter()
    print(f"[table2] {config.stem} seed {seed} -> {work_dir}", flush=True)
    _run(["rsanet.cli.train", "--config", str(config), "--work-dir", str(work_dir), "--resume", "auto", *run_opts],
         threads=threads)
    timing.write_text(json.dumps({"train_seconds": round(time.perf_counter() - start, 1)}) + "\n")
    _run(["rsanet.cli.test", "--config", str(config), "--checkpoint", str(work_dir / "last.pth"),
          "--work-dir", str(work_dir), *run_opts], threads=threads)
    return {**json.loads(done.read_text()), **json.loads(timing.read_text())}


def summarize(name: str, config: Path, runs: list[dict], opts: list[str]) -> dict:
    cfg = load_config(config, opts)
    counted = json.loads(_run(["rsanet.cli.flops", "--config", str(config), "--json", "--size",
                               str(cfg.test.crop_size or cfg.data.crop_size), *(["--opts", *opts] if opts else [])],
                              capture=True))
    top1 = np.array([r["top1"] for r in runs])
    mca = np.array([r["mean_class_accuracy"] for r in runs])
    return {"name": name, "transform": LABELS.get(name, name), "config": str(config), "seeds": len(runs),
            "top1": top1.tolist(), "top1_mean": float(top1.mean()),
            "top1_std": float(top1.std(ddof=1)) if len(runs) > 1 else 0.0,
            "mean_class_accuracy_mean": float(mca.mean()), "params": counted["params"],
            "gflops": counted["flops"] / 1e9, "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
            "paper_ssv1_top1": ABLATIONS[PAPER_ROW[name]].top1 if name in PAPER_ROW else None}


def format_table(rows: list[dict], chance: float) -> str:
    lines = ["| transform | params | GFLOPs | top-1 (%) mean ± std | mean class acc. (%) | train time / run | "
             "paper SS-V1 top-1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        paper = f"{r['paper_ssv1_top1']:.1f}" if r["paper_ssv1_top1"] is not None else "-"
        lines.append(f"| {r['transform']} | {r['params'] / 1e6:.2f} M | {r['gflops']:.3f} | {r['top1_mean']:.1f} ± "
                     f"{r['top1_std']:.1f} (n={r['seeds']}) | {r['mean_class_accuracy_mean']:.1f} | "
                     f"{r['train_seconds_mean'] / 60:.1f} min | {paper} |")
    lines.append(f"\nchance: {chance:.1f} % top-1")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {args.seeds}")
    configs = [Path(c) for c in args.configs] if args.configs else sorted(
        c.relative_to(REPO) for c in (REPO / "configs/synthetic").glob("*.yaml") if not c.name.startswith("_"))
    configs = sorted(configs, key=lambda c: ORDER.index(c.stem) if c.stem in ORDER else len(ORDER))
    missing = [str(c) for c in configs if not (REPO / c).is_file()]
    if missing:
        raise SystemExit(f"error: config not found: {missing[0]}")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    work = Path(args.work_dir).resolve()
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    tasks = [(config, seed) for config in configs for seed in range(args.seeds)]
    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each task is a pair of subprocesses
            futures = {task: pool.submit(run_one, REPO / task[0], task[1], work / task[0].stem / f"seed{task[1]}",
                                         args.opts, threads) for task in tasks}
            runs = {task: future.result() for task, future in futures.items()}
        rows = [summarize(config.stem, REPO / config, [runs[(config, seed)] for seed in range(args.seeds)], args.opts)
                for config in configs]
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cfg = load_config(REPO / configs[0], args.opts)
    table = format_table(rows, 100.0 / cfg.data.synthetic.classes)
    work.mkdir(parents=True, exist_ok=True)
    (work / "table2_synthetic.json").write_text(json.dumps(rows, indent=2) + "\n")
    (work / "table2_synthetic.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nsaved {work / 'table2_synthetic.json'} and {work / 'table2_synthetic.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
