"""Export a trained model to TorchScript, a torch.export program or ONNX, and check it against eager.

    python tools/export.py --config configs/ssv1_rsa_8f.yaml --checkpoint work_dirs/ssv1_rsa_8f/best.pth \\
        --format onnx --out rsanet_ssv1.onnx

The exported model takes a normalized clip batch (B, 3, T, S, S) (T = model.num_segments, S = the test crop
size; B is dynamic) and returns (B, num_classes) logits. After exporting, the tool runs the exported file and
the eager model on sample inputs of two batch sizes (and on --video's first test clip, if given) and fails
(exit code 1) when any logit differs by more than --atol. ONNX needs `pip install onnx onnxscript`, and
onnxruntime for the comparison (without it the graph is only validated with onnx.checker). A JSON file with
the input shape, normalization and class names is written next to the export (OUT.json).
"""
import argparse
import sys

from rsanet.config import ConfigError
from rsanet.engine import CheckpointError
from rsanet.export import (
    FORMATS,
    ExportDependencyError,
    ExportError,
    export_model,
    sample_inputs,
    verify_export,
    write_metadata,
)
from rsanet.inference import class_names, load_clip, load_model, resolve_config

USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ExportDependencyError, ExportError, ValueError)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="experiment YAML (default: the config stored in the checkpoint)")
    p.add_argument("--checkpoint", required=True, help="best.pth / last.pth, a state dict, or an authors' .pth.tar")
    p.add_argument("--format", required=True, choices=FORMATS, help="torchscript (.pt), exported_program (.pt2), onnx")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--video", default=None, help="also compare on this video's first test clip")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |exported - eager| logit difference")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = resolve_config(args.config, args.checkpoint, args.opts)
        model = load_model(cfg, args.checkpoint, "cpu", announce=lambda note: print(note, file=sys.stderr))
        inputs = sample_inputs(cfg)
        if args.video:
            inputs.append(load_clip(cfg, args.video)[0][None])
        out = export_model(model, inputs[0], args.format, args.out)
        results = verify_export(model, out, args.format, inputs)
        try:
            classes = class_names(cfg)
        except (ConfigError, FileNotFoundError, ValueError):
            classes = None  # no label map at hand: the export works without it
        meta = write_metadata(out, cfg, args.format, classes, args.checkpoint)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({args.format}) and {meta}")
    failed = False
    for r in results:
        if r.max_abs_diff is None:
            print(f"WARNING: batch {r.batch}: {r.note}")
            continue
        ok = r.ok(args.atol)
        failed |= not ok
        print(f"batch {r.batch}: max |exported - eager| = {r.max_abs_diff:.3g} "
              f"({'ok' if ok else 'MISMATCH'}, atol {args.atol:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
