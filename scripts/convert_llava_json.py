"""LLaVA-style JSON + media folder → webdataset shards for the LMM data loader.

    python scripts/convert_llava_json.py data.json --media-root images/ --out shards/llava558k
    python scripts/convert_llava_json.py videos.json --media-root videos/ --out shards/v --precompute-codec \\
        --workers 8 --set select.budget=2048 decode.num_frames=64

With --precompute-codec a still image is stored under the same token cap as a clip: at most
select.budget patches at its aspect (--set image_max_cells=N image_cell=PX for another cap).

Bad records (not an object, no list of turns, unknown roles) and records with missing or unreadable
media are skipped and listed (stderr and OUT/failures.txt), with a count per reason; the others are
written, in complete shards only. Exit code 1 when any record failed, 2 on bad arguments (an
unreadable or unparsable JSON file, a missing media folder, bad codec settings, --workers < 1): one line.
"""

from __future__ import annotations

import argparse
import sys

from encoder.cli import run_cli
from encoder.codec import CodecConfig
from encoder.typed_config import ConfigError, load_config
from llava_ov.data.convert import ConvertError, convert_llava_json
from llava_ov.data.shards import shard_pattern


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="LLaVA-style JSON list (or JSON Lines) of records")
    ap.add_argument(
        "--media-root", required=True, help="folder the records' image/video paths are relative to"
    )
    ap.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar")
    ap.add_argument(
        "--precompute-codec", action="store_true", help="store codec patches (.npz), not the media"
    )
    ap.add_argument("--codec-config", help="YAML with CodecConfig fields (for --precompute-codec)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="CodecConfig overrides")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes")
    ap.add_argument("--samples-per-shard", type=int, default=1000)
    ap.add_argument("--prefix", default="shard", help="shard file name prefix")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.workers < 1 or args.samples_per_shard < 1:
            raise ValueError("--workers and --samples-per-shard must be >= 1")
        codec = load_config(CodecConfig, args.codec_config, args.set)  # validated
        result = convert_llava_json(
            args.json,
            args.media_root,
            args.out,
            precompute_codec=args.precompute_codec,
            codec=codec,
            workers=args.workers,
            max_samples=args.samples_per_shard,
            prefix=args.prefix,
            progress=not args.quiet,
        )
    except (ConfigError, ConvertError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, reason in result.failures:
        print(f"failed: {key}: {reason}", file=sys.stderr)
    pattern = shard_pattern(result.shards) if result.shards else "(none)"
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(result.failures_by_reason().items()))
    print(
        f"wrote {result.written} samples to {pattern}; {len(result.failures)} failed"
        + (f" ({reasons})" if reasons else "")
    )
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
