"""Convert checkpoints between the authors' release format (KimManjin/RSA ``.pth.tar``) and RSANet's.

    # theirs -> ours: model state, resolved config and provenance (their file does not store T)
    python tools/convert_checkpoint.py resnet_rgb_model_best.pth.tar rsanet_ssv2_16f.pth \\
        --config configs/ssv2_rsa_16f.yaml
    # ours -> theirs: a file their main.py --resume reads (their code builds the 64-wide ResNet-50 only)
    python tools/convert_checkpoint.py work_dirs/ssv2_rsa_16f/best.pth ssv2_rsa_16f.pth.tar --to official

Without --config, a conversion into ours takes the defaults of rsanet/config.py with the model keys read from
the file's tensor shapes, and needs --opts model.num_segments=T. A conversion into theirs uses the config
stored in our checkpoint (or --config for a bare state dict). The conversion is exact: the converted model
computes what the original computes (tests/test_official_*.py check it against the authors' code).
"""
import argparse
import sys

from rsanet.config import ConfigError, load_config, parse_overrides
from rsanet.models.official import AUTHORS_L2_EPS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="checkpoint to convert")
    p.add_argument("output", help="file to write (atomically)")
    p.add_argument("--to", choices=["rsanet", "official"], default="rsanet",
                   help="target format: rsanet (default; input is the authors' file) or official (the authors')")
    p.add_argument("--config", default=None, help="experiment YAML of the model (required for T when --to rsanet, "
                                                  "unless --opts sets model.num_segments)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return p.parse_args(argv)


def _config(args, weights):
    """The config of the conversion: --config (+ --opts); into theirs, else the config stored in our checkpoint;
    into ours, else the defaults with the model keys read from the authors' file (+ --opts, which must set T)."""
    from rsanet.convert import inferred_overrides
    from rsanet.inference import resolve_config

    if args.to == "official":
        return None if weights.kind == "authors" else resolve_config(args.config, args.input, args.opts)
    if args.config is not None:
        return load_config(args.config, args.opts)
    if weights.kind != "authors" or "num_segments" not in parse_overrides(args.opts).get("model", {}):
        return None  # to_native says what is missing
    return load_config(None, inferred_overrides(weights) + list(args.opts))


def main(argv=None) -> int:
    args = parse_args(argv)
    from rsanet.convert import to_authors, to_native
    from rsanet.engine.checkpoint import CheckpointError, save_checkpoint
    from rsanet.engine.weights import read_model_weights

    try:
        weights = read_model_weights(args.input)
        cfg = _config(args, weights)
        state = to_native(weights, cfg) if args.to == "rsanet" else to_authors(weights, cfg)
        save_checkpoint(state, args.output)
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    frames = cfg.model.num_segments
    if args.to == "rsanet":
        print(f"wrote {args.output}: RSANet checkpoint converted from the authors' {args.input} "
              f"(T = model.num_segments = {frames}, {cfg.model.num_classes} classes)")
    else:
        print(f"wrote {args.output}: authors' format (KimManjin/RSA) converted from {args.input}; give their "
              f"scripts the number of frames of this model: {frames}")
        eps = cfg.model.transform.rsa.l2_eps
        if cfg.model.transform.type == "rsa" and eps != AUTHORS_L2_EPS:
            print(f"note: their RSA normalizes q, k, v as x / sqrt(|x|^2 + {AUTHORS_L2_EPS:g}); this model used "
                  f"model.transform.rsa.l2_eps={eps:g}: the outputs differ only where q, k or v is nearly zero")
    return 0


if __name__ == "__main__":
    sys.exit(main())
