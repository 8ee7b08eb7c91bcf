"""Top-5 class predictions of a trained model for video files and frame folders.

    python tools/predict.py --config configs/ssv1_rsa_8f.yaml --checkpoint work_dirs/ssv1_rsa_8f/best.pth \\
        clip1.webm clip2.mp4 frames/12345/

Every input goes through the test-time pipeline of the config (test.clips x test.crops views, test.resize,
test.crop_size; frame folders use data.frame_template and data.frame_start) and the softmax is averaged
over its views. Class names come from the dataset's label map (data.label_file; the synthetic benchmark
names its own classes). An input that cannot be read is reported and skipped; the exit code is 1 if any was.
Without --config, the config stored in the checkpoint is used.
"""
import argparse
import sys

from rsanet.config import ConfigError
from rsanet.data import AnnotationError
from rsanet.engine import CheckpointError
from rsanet.inference import class_names, load_model, resolve_config
from rsanet.predict import format_prediction, predict_paths

USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, AnnotationError, ValueError)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="video files or frame folders")
    p.add_argument("--config", default=None, help="experiment YAML (default: the config stored in the checkpoint)")
    p.add_argument("--checkpoint", required=True, help="best.pth / last.pth, a state dict, or an authors' .pth.tar")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. test.crops=3")
    p.add_argument("--topk", type=int, default=5, help="classes printed per input (default 5)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    args = p.parse_args(argv)
    # `--opts a=1 clip.mp4`: --opts swallows what follows it; anything without "=" is an input, not an override.
    args.videos += [o for o in args.opts if "=" not in o]
    args.opts = [o for o in args.opts if "=" in o]
    if not args.videos:
        p.error("no VIDEO given (video files or frame folders)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.topk < 1:
        print(f"error: --topk must be positive, got {args.topk}", file=sys.stderr)
        return 2
    try:
        cfg = resolve_config(args.config, args.checkpoint, args.opts)
        classes = class_names(cfg)
        model = load_model(cfg, args.checkpoint, args.device, announce=lambda note: print(note, file=sys.stderr))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = 0
    for pred in predict_paths(model, cfg, args.videos, classes, args.topk):
        if pred.ok:
            print(format_prediction(pred), flush=True)
        else:
            failed += 1
            print(f"error: {format_prediction(pred)}", file=sys.stderr, flush=True)
    if failed:
        print(f"{failed} of {len(args.videos)} inputs could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
