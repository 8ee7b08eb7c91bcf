#!/usr/bin/env python
"""Train a model from a YAML config, single-process or as one rank of a torchrun job.

    python tools/train.py --config configs/ssv1_rsa_8f.yaml
    torchrun --nproc_per_node=8 tools/train.py --config configs/ssv1_rsa_8f.yaml --resume auto
    python tools/train.py --config configs/ssv1_rsa_8f.yaml --opts train.epochs=1 --work-dir work_dirs/try

Exit codes: 0 done, 1 bad input or a failed run (one line on stderr), 143 / 130 stopped by SIGTERM / SIGINT
after saving last.pth (continue with --resume auto).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import os  # noqa: E402

import rsanet  # noqa: E402,F401  (before any torchvision import)
from rsanet.config import ConfigError, load_config  # noqa: E402
from rsanet.dist import env_world_size  # noqa: E402


def user_errors() -> tuple:
    """Exceptions that mean bad input (printed as one line), imported only once the config is valid."""
    from rsanet.data import BadDataError
    from rsanet.engine import CheckpointError, NonFiniteLossError
    from rsanet.models import PretrainedMismatchError
    from rsanet.storage import StorageError
    return (ConfigError, ValueError, FileNotFoundError, FileExistsError, CheckpointError, NonFiniteLossError,
            BadDataError, PretrainedMismatchError, StorageError)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (sets what differs from rsanet/config.py)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.lr=0.01")
    p.add_argument("--work-dir", default=None, help="output folder (default: runtime.work_dir)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto' continues from the work dir's last checkpoint (or starts fresh), or a checkpoint path")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # a bad key or value fails here, before the data pipeline or the model are even imported
        cfg = load_config(args.config, args.opts, world_size=env_world_size())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from rsanet.engine import run_training
    try:
        summary = run_training(cfg, args.work_dir or cfg.runtime.work_dir, resume=args.resume)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started (afterwards Ctrl-C stops cleanly, see the engine)
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    if summary["finished"] and os.environ.get("RANK", "0") == "0":
        top1 = (f"best top1 {summary['best_top1']:.2f} (epoch {summary['best_epoch']}), last top1 "
                f"{summary['last_top1']:.2f}" if summary["best_epoch"] > 0 else "no validation")
        print(f"{top1}; work dir {summary['work_dir']}")
    return summary.get("exit_code", 0)


if __name__ == "__main__":
    sys.exit(main())
