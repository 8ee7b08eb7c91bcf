"""Multi-view test of a checkpoint: test.clips x test.crops views per video, softmax averaged per video.

    python tools/test.py --checkpoint work_dirs/ssv1_rsa_8f/best.pth     # the config stored in the checkpoint
    python tools/test.py --config configs/ssv1_rsa_8f.yaml --checkpoint work_dirs/ssv1_rsa_8f/best.pth
    torchrun --nproc_per_node=8 tools/test.py --config configs/ssv1_rsa_8f.yaml \\
        --checkpoint work_dirs/ssv1_rsa_8f/best.pth --opts test.clips=2 --work-dir work_dirs/ssv1_rsa_8f/2clips

The authors' released checkpoints (KimManjin/RSA .pth.tar) are read directly (converted on the fly; their
file does not store T, the config does):

    python tools/test.py --config configs/ssv2_rsa_16f.yaml --checkpoint resnet_rgb_model_best.pth.tar

Writes to --work-dir, by default the checkpoint's folder: test_metrics.json (top1, top5, mean_class_accuracy
in percent, num_videos, views), scores.npz (per video: id, label, mean softmax scores, mean logits),
per_class.json (accuracy and support per class, the most confused pairs), confusion_matrix.png, test.log, and
the metrics as TensorBoard scalars test/* (runtime.tensorboard).
"""
import argparse
import json
import os
import sys

from rsanet.config import ConfigError, dump_config, load_config


def user_errors() -> tuple:
    """Exceptions that mean bad input (printed as one line), imported only once the config is valid."""
    from rsanet.data import BadDataError
    from rsanet.engine import CheckpointError
    from rsanet.models import PretrainedMismatchError
    from rsanet.storage import StorageError
    return (ConfigError, ValueError, FileNotFoundError, CheckpointError, BadDataError, PretrainedMismatchError,
            StorageError)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="experiment YAML (default: the resolved config stored in the checkpoint; an authors' "
                        ".pth.tar stores none)")
    p.add_argument("--checkpoint", required=True, help="best.pth / last.pth, a state dict, or an authors' .pth.tar")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. test.clips=2")
    p.add_argument("--work-dir", default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--print-config", action="store_true",
                   help="print the config the test would use (the file's, or the checkpoint's) as YAML and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.config is not None:
            cfg = load_config(args.config, args.opts)
        else:
            from rsanet.inference import resolve_config
            cfg = resolve_config(None, args.checkpoint, args.opts)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    from rsanet.engine import run_test
    try:
        metrics = run_test(cfg, args.checkpoint, args.work_dir)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
