"""Train a model from a YAML config, single-process or as one rank of a torchrun job.

    python tools/train.py --config configs/ssv1_rsa_8f.yaml
    torchrun --nproc_per_node=8 tools/train.py --config configs/ssv1_rsa_8f.yaml --resume auto
    python tools/train.py --config configs/ssv1_rsa_8f.yaml --opts train.epochs=1 --work-dir work_dirs/try
    python tools/train.py --config configs/ssv1_rsa_16f.yaml --print-config    # the resolved config, then exit

Installed, the same tool is the command ``rsanet-train``.

Exit codes: 0 done, 1 bad input or a failed run (one line on stderr), 143 / 130 stopped by SIGTERM / SIGINT
after saving last.pth (continue with --resume auto).
"""
import argparse
import os
import sys

from rsanet.config import ConfigError, dump_config, load_config


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
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (after _base_ files and --opts) as YAML and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # a bad key or value fails here, before the data pipeline or the model are even imported
        cfg = load_config(args.config, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
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
