"""Average the per-video scores of several models and print the metrics (Table 3's 8f+16f RSANet-R50EN).

    python tools/ensemble.py work_dirs/ssv1_rsa_8f/scores.npz work_dirs/ssv1_rsa_16f/scores.npz
"""
import argparse
import json
import sys

from rsanet.metrics import compute_metrics, ensemble_scores, save_scores


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", nargs="+", help="scores.npz files written by tools/test.py")
    p.add_argument("--weights", nargs="*", type=float, default=None, help="one weight per file (default: equal)")
    p.add_argument("--out", default=None, help="also write the averaged scores to this .npz file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        merged = ensemble_scores(args.scores, args.weights)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    views = int(merged["views"].max()) if len(merged["views"]) else 0
    metrics = compute_metrics(merged["scores"], merged["labels"], views=views)
    metrics["files"] = list(args.scores)
    if args.out:
        save_scores(args.out, merged["video_ids"], merged["labels"], merged["scores"], merged["views"],
                    merged.get("classes"))
        metrics["scores"] = args.out
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
