"""Parameters and FLOPs (multiply-accumulates, the paper's convention) of a model for one clip.

    python tools/flops.py --config configs/ssv1_rsa_8f.yaml [--opts model.transform.rsa.kernel_size=[3,5,5]]
    python tools/flops.py --config FILE --frames 16 --json      # {"params": <int>, "flops": <int>}
    python tools/flops.py --table [--config-dir configs/ablations]   # every ablation next to the paper

A clip is model.num_segments frames (--frames) at the config's test crop size (test.crop_size, else
data.crop_size: 224 for the paper's configs, 32 for configs/synthetic) unless --size is given.
"""
import argparse
import json

from rsanet.cli import REPO
from rsanet.config import ConfigError, load_config
from rsanet.flops import ablation_rows, complexity, format_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment YAML (default: the built-in SS-V1 8-frame RSANet-R50)")
    p.add_argument("--opts", nargs="*", default=[], help="overrides such as model.transform.rsa.queries=4")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: model.num_segments)")
    p.add_argument("--size", type=int, default=None,
                   help="frame side in pixels (default: the config's test crop size; 224 with --table)")
    p.add_argument("--json", action="store_true", help='print one object {"params": <int>, "flops": <int>}')
    p.add_argument("--table", action="store_true", help="count every config of --config-dir, with the paper's")
    p.add_argument("--config-dir", default=str(REPO / "configs" / "ablations"),
                   help="folder of configs for --table (default: configs/ablations)")
    p.add_argument("--real", action="store_true",
                   help="count on a real CPU forward instead of fake tensors (slower, same numbers)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.frames is not None and args.frames <= 0:
        raise SystemExit(f"--frames must be positive, got {args.frames}")
    if args.table:
        rows = ablation_rows(args.config_dir, frames=args.frames, fake=not args.real)
        print(json.dumps(rows, indent=1) if args.json else format_table(rows))
        return
    try:
        cfg = load_config(args.config, args.opts)
        if cfg.model.num_classes == 0:  # a list dataset: the classes come from its files
            from rsanet.data.check import resolve_from_files
            resolve_from_files(cfg, ["train", "val"])
    except (ConfigError, OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    size = args.size if args.size is not None else cfg.test.crop_size or cfg.data.crop_size
    if size <= 0:
        raise SystemExit(f"--size must be positive, got {size}")
    result = complexity(cfg, frames=args.frames, size=size, fake=not args.real)
    if args.json:
        print(json.dumps(result))
        return
    frames = args.frames or cfg.model.num_segments
    t = cfg.model.transform
    where = "2D convs only" if t.type == "conv2d" else f"{t.type} at blocks {t.positions}"
    print(f"{cfg.model.arch} ({where}), {frames} frames at {size}x{size}")
    print(f"params: {result['params']:,} ({result['params'] / 1e6:.2f} M)")
    print(f"FLOPs (multiply-accumulates): {result['flops']:,} ({result['flops'] / 1e9:.2f} G)")


if __name__ == "__main__":
    main()
