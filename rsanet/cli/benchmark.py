"""Benchmarks with one subcommand per level; each prints a table and, with --json PATH, writes it.

    python tools/benchmark.py layer --batch 1 --frames 8 --dtype fp32 bf16
    python tools/benchmark.py layer --stages res4 --impl ours paper_eq12 --repeats 10 --json out/layer.json
    python tools/benchmark.py model --batch 8 --frames 8 16 --dtype bf16 --channels-last off on --compile off on
    python tools/benchmark.py memory --frames 8 --size 224 --json out/memory.json
    python tools/benchmark.py profile --stages res2 res5
    python tools/benchmark.py data --frames 8 16 --backends frames webm mp4 --json out/data.json
    python tools/benchmark.py synthetic --sizes 32 64 112 --frames 8

Installed, the same tool is the command ``rsanet-benchmark``.

On a CPU shared with other jobs, multi-threaded wall times are dominated by OpenMP threads waiting for each
other; `--threads 1` gives stable numbers there (`data` and `synthetic` always run on one thread, as a
DataLoader worker does).
"""
import argparse
import importlib
import sys

from rsanet.benchmark.common import format_table, write_json

# Subcommand -> (module, help). Modules are imported only when their subcommand runs; a new level is one
# entry here plus its module with OPTIONS and run().
SUBCOMMANDS = {
    "layer": ("rsanet.benchmark.layer", "one RSA layer at the RSANet-R50 stage shapes (ours, paper_eq12, reference)"),
    "model": ("rsanet.benchmark.model",
              "training-step videos/s and peak memory of RSANet-R50 vs TSN-R50 (fp32/bf16, channels-last, compile)"),
    "memory": ("rsanet.benchmark.memory",
               "activation memory saved for backward per clip: RSANet-R50 (each memory mode) vs TSN-R50, "
               "per RSA layer"),
    "profile": ("rsanet.benchmark.profile",
                "where one RSA layer's fwd+bwd time goes: window convs, matmuls, norms, layout copies "
                "(torch.profiler)"),
    "data": ("rsanet.benchmark.data",
             "data pipeline clips/s per worker: decode, then decode + train transforms, 8 and 16 frames"),
    "synthetic": ("rsanet.benchmark.synthetic",
                  "synthetic benchmark clips/s per worker: rendering, then a whole training item, per frame size"),
}


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="level", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:i]")
        p.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
        p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
        p.add_argument("--json", metavar="PATH", default=None, help="also write the table as JSON")
        if name == selected:  # only the chosen level's module is imported
            for flags, kwargs in importlib.import_module(module_name).OPTIONS:
                p.add_argument(*flags, **kwargs)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if a in SUBCOMMANDS), None)
    args = vars(build_parser(selected).parse_args(argv))
    level, json_path = args.pop("level"), args.pop("json")
    module = importlib.import_module(SUBCOMMANDS[level][0])
    try:
        result = module.run(**args, progress=lambda row: print(f"  done: {row}", file=sys.stderr, flush=True))
    except ValueError as e:  # a bad option value (stage, dtype, size, device ...), named by the level
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(result["rows"], result["columns"], title=result["title"]))
    if json_path:
        write_json(json_path, {"level": level, **result})
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
