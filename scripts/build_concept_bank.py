"""Build a concept bank: teacher embeddings → spherical k-means → every sample's top-k centres.

    python scripts/build_concept_bank.py                      # embedded default: the synthetic clips
    python scripts/build_concept_bank.py --shards 'data/vid-{000000..000099}.tar' --centres 400000 \\
        --teacher ov_encoder --teacher-path runs/enc/final --frames 8 --input-size 224
    python scripts/build_concept_bank.py --teacher tower --tower siglip2 \
        --teacher-path google/siglip2-so400m-patch16-naflex --input-size 256 --centres 400000
    python scripts/build_concept_bank.py --teacher npy --teacher-path emb.npy --keys keys.txt \\
        --centres 2000000

The bank folder (default: ``concept_bank`` next to the shards) holds centres.npy, labels.npy (top-k
per sample), keys.txt and bank.json (sizes, empty clusters, teacher, k-means settings); pretraining
reads it with ``heads.<kind>.bank=FOLDER``. Teacher embeddings are computed once and kept (float16)
in ``OUT.features/``. Video embeddings are the concatenated per-frame
embeddings (time order kept). faiss is used when installed (``pip install 'llava-ov[kmeans]'``; GPU
when present), else torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from encoder.cli import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--shards",
        nargs="+",
        default=None,
        help="webdataset shards / patterns (default: the synthetic train split)",
    )
    ap.add_argument(
        "--data-config",
        default="data_configs/synthetic_motion_qa.yaml",
        help="with no --shards: the data config whose synthetic split is used",
    )
    ap.add_argument("--split", default="train", help="with no --shards: the synthetic split")
    ap.add_argument("--out", type=Path, default=None, help="bank folder (default: SHARD_DIR/concept_bank)")
    ap.add_argument("--teacher", default="pixels", help="pixels | motion | ov_encoder | tower | npy")
    ap.add_argument("--tower", default="siglip2", help="--teacher tower: siglip2 | qwen3_vit | ov_encoder")
    ap.add_argument(
        "--teacher-path", default=None, help="ov_encoder export / tower weights (folder, hub id) / .npy"
    )
    ap.add_argument("--keys", default=None, help="npy: sample keys, one per line")
    ap.add_argument("--frames", type=int, default=8, help="video frames per embedding (concatenated)")
    ap.add_argument("--input-size", type=int, default=112, help="frame side the teacher sees")
    ap.add_argument("--pool", type=int, default=4, help="pixels teacher: pooled grid side")
    ap.add_argument(
        "--centre", action="store_true", help="pixels teacher: subtract each clip's mean frame first"
    )
    ap.add_argument("--bins", type=int, default=8, help="motion teacher: direction bins")
    ap.add_argument("--segments", type=int, default=4, help="motion teacher: time segments")
    ap.add_argument("--centres", type=int, default=64, help="k-means centres")
    ap.add_argument("--topk", type=int, default=10, help="nearest centres stored per sample")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--redo", type=int, default=1, help="k-means runs (the best is kept)")
    ap.add_argument("--backend", default="auto", help="auto | faiss | torch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def default_shards(data_config: str, split: str) -> list[str]:
    from llava_ov.data import load_data_config, prepare_data
    from llava_ov.train.build import resolve_path

    shards = prepare_data(load_data_config(resolve_path(data_config)))
    if split not in shards:
        raise SystemExit(f"error: {data_config} has no synthetic split {split!r} ({sorted(shards)})")
    return shards[split]


def main(argv: list[str] | None = None) -> int:
    from encoder.pretrain.bank import build_bank
    from encoder.typed_config import ConfigError
    from llava_ov.data.shards import expand_shards, missing_local_shards
    from llava_ov.pretrain.config import BankBuildConfig
    from llava_ov.pretrain.features import FeatureStats, embedding_stream, spill

    args = parse_args(argv)
    build = BankBuildConfig(
        teacher=args.teacher,
        teacher_path=args.teacher_path,
        tower=args.tower,
        keys=args.keys,
        frames=args.frames,
        input_size=args.input_size,
        pool=args.pool,
        centre=args.centre,
        bins=args.bins,
        segments=args.segments,
        centres=args.centres,
        topk=args.topk,
        iters=args.iters,
        redo=args.redo,
        backend=args.backend,
        seed=args.seed,
    )
    teacher, km = build.teacher_config(), build.kmeans_config()
    try:
        teacher.validate()
        km.validate()
        shards: list[str] = []
        if args.teacher != "npy":
            shards = (
                expand_shards(args.shards) if args.shards else default_shards(args.data_config, args.split)
            )
            if not shards:
                raise ConfigError(f"no shards match {args.shards}")
            if args.shards and (missing := missing_local_shards(args.shards)):
                raise ConfigError(
                    f"{len(missing)} of the {len(shards)} shards of {args.shards!r} do not exist, "
                    f"e.g. {missing[0]}"
                )
        out = args.out or (
            Path(shards[0]).parent / "concept_bank"
            if shards
            else Path(args.teacher_path).parent / "concept_bank"
        )
        stats = FeatureStats()
        stream = embedding_stream(shards, teacher, stats)
        if args.teacher != "npy":  # the teacher runs once; both k-means passes read the spilled blocks
            stream = spill(stream, out.with_name(out.name + ".features"), progress=not args.no_progress)
        meta = {"teacher": teacher.name, "teacher_config": vars(teacher), "shards": [str(s) for s in shards]}
        summary = build_bank(stream, km, out, meta, progress=not args.no_progress)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary["skipped_samples"] = stats.skipped
    (out / "bank.json").write_text(json.dumps(summary, indent=1))
    cs = summary["cluster_size"]
    print(
        f"concept bank {out}: {summary['num_samples']} samples → {summary['num_centres']} centres "
        f"({summary['backend']}), top-{summary['topk']} labels; cluster size min/median/max "
        f"{cs['min']}/{cs['median']:.0f}/{cs['max']}, empty {summary['empty_clusters']}, re-seeded "
        f"{summary['reseeded_in_training']}; skipped {sum(stats.skipped.values())} samples; "
        f"{summary['points_per_s']['assign']:.0f} samples/s assigned"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
