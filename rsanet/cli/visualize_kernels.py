"""Draw the dynamic kernels of a trained model's RSA (or self-attention) layer for one video (paper Fig. 3).

    python tools/visualize_kernels.py --config configs/synthetic/rsa.yaml \\
        --checkpoint work_dirs/synthetic/rsa/best.pth --video clip.mp4 --reverse --out viz/

Top row: the frames of the query's temporal window, with the query position (red) and its context (yellow).
Below: per query l of the layer, the self-attention weights (self-attention layers), the basic kernel kV and
the relational kernel kR (RSA layers), each as h x w heat maps under the frame they weight (red positive,
blue negative, scaled per row). The kernels are read with forward hooks on the layer's kernel taps.

--layer is a module name as in model.named_modules() (e.g. layer1.1.conv2; default: the first RSA layer).
--query T,H,W is a position in that layer's input feature map (time, row, column; before the layer's own
stride; default: the centre); the tool prints the feature-map size. --reverse also plays the clip backwards,
with the query on the same video frame (t -> T-1-t), and prints how much each kernel changed.
"""
import argparse
import sys

from rsanet.config import ConfigError
from rsanet.engine import CheckpointError
from rsanet.inference import load_model, resolve_config
from rsanet.visualize import Layout, parse_query, visualize_video

USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ValueError, RuntimeError)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="experiment YAML (default: the config stored in the checkpoint)")
    p.add_argument("--checkpoint", required=True, help="best.pth / last.pth, a state dict, or an authors' .pth.tar")
    p.add_argument("--video", required=True, help="video file or frame folder")
    p.add_argument("--layer", default=None, help="module name, e.g. layer1.1.conv2 (default: first RSA layer)")
    p.add_argument("--query", default=None, metavar="T,H,W", help="query in the layer's feature map (default: centre)")
    p.add_argument("--reverse", action="store_true", help="also draw the kernels of the clip played backwards")
    p.add_argument("--queries", default=None, metavar="L1,L2,...", help="which of the L queries to draw (default all)")
    p.add_argument("--cell", type=int, default=96, help="side of one frame / heat-map cell in pixels")
    p.add_argument("--out", default="kernel_viz", help="output folder (default: ./kernel_viz)")
    p.add_argument("--tensorboard", action="store_true", help="also write the images to OUT/tensorboard")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")
    return p.parse_args(argv)


def _int_list(text):
    try:
        return None if text is None else [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--queries must be comma-separated integers, got {text!r}") from None


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.cell < 8:
            raise ValueError(f"--cell must be at least 8 pixels, got {args.cell}")
        cfg = resolve_config(args.config, args.checkpoint, args.opts)
        model = load_model(cfg, args.checkpoint, args.device, announce=lambda note: print(note, file=sys.stderr))
        result = visualize_video(model, cfg, args.video, args.out, layer=args.layer, query=parse_query(args.query),
                                 reverse=args.reverse, queries=_int_list(args.queries), layout=Layout(cell=args.cell),
                                 tensorboard=args.tensorboard)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for cap in result.captures:
        kinds = ", ".join(f"{k} {tuple(v.shape)}" for k, v in cap.kernels.items())
        print(f"{cap.layer}{' (reversed clip)' if cap.reversed else ''}: feature map (T, H, W) = {cap.feature_shape}, "
              f"query {cap.query}, window {cap.kernel_size}; kernels {kinds}")
    if result.changes is not None:
        print("relative change of each kernel when the clip is reversed (same video frame): "
              + ", ".join(f"{k} {v:.3g}" for k, v in result.changes.items()))
    for path in result.files:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
