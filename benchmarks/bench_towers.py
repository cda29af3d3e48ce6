"""Tower forward time at equal LLM visual-token budgets: OV-Encoder (codec), SigLIP2 and Qwen3-ViT (frames).

For each budget K, one generated 224² clip of 64 frames is patchified the way each tower's run would
(OV-Encoder: K codec-selected patches of the 64 frames; SigLIP2 / Qwen3-ViT: the balanced frames split
of :func:`llava_ov.model.budget.balanced_frames`), and the tower's forward (no grad, fp32, random
weights of the full architecture) is timed, interleaved across towers, best of ``--repeats``. Reported:
LLM tokens per clip, tower patch rows, seconds, and the time relative to the OV-Encoder.

    python benchmarks/bench_towers.py                       # large / so400m / 8b, K = 512 1024 2048
    python benchmarks/bench_towers.py --sizes debug debug debug --budgets 128 256   # quick
    python benchmarks/bench_towers.py --device cuda         # on a GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from encoder.codec import CodecConfig, patchify
from encoder.codec.synthetic import make_clip
from encoder.typed_config import merge_config
from llava_ov.data import pack_media
from llava_ov.model import TowerConfig, build_tower
from llava_ov.model.budget import balanced_frames, plan_codec
from llava_ov.model.merge import TokenCounter
from llava_ov.model.towers import tower_spec

TOWERS = ("ov_encoder", "siglip2", "qwen3_vit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--sizes", nargs=3, default=["large", "so400m", "8b"], metavar=("OV", "SIGLIP2", "QWEN3"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    towers = {}
    for name, size in zip(TOWERS, args.sizes):
        cfg = TowerConfig(name=name, size=size, output_layer=-1 if name == "qwen3_vit" else -2)
        towers[name] = (cfg, build_tower(cfg).to(device).eval())
        params = sum(p.numel() for p in towers[name][1].parameters())
        print(f"{name:<10} {size:<7} {params / 1e6:7.1f}M parameters")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(
            Path(tmp) / "clip.mp4", "pan_mover", width=224, height=224, num_frames=64, seed=0
        ).path
        print(
            f"\n{'budget':>6} {'tower':<10} {'input':<22} {'LLM tokens':>10} {'tower patches':>13} "
            f"{'seconds':>8} {'vs OV':>6}"
        )
        for budget in args.budgets:
            batches = {}
            for name, (cfg, _) in towers.items():
                spec = tower_spec(cfg)
                plan = (
                    plan_codec(spec, budget, 64, 224)
                    if name == "ov_encoder"
                    else balanced_frames(spec, budget, 64, max_side=448)
                )
                sel = patchify(clip, merge_config(CodecConfig(), plan.codec_overrides(spec.patch_size)))
                counter = TokenCounter(1, spec.frames_per_token, spec.merge)
                batches[name] = (plan, pack_media([sel], ["video"], [counter(sel)]))
            best = {name: float("inf") for name in towers}
            with torch.no_grad():
                for _ in range(args.repeats + 1):  # first pass warms up
                    for name, (_, tower) in towers.items():
                        t0 = time.perf_counter()
                        tower(batches[name][1])
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        best[name] = min(best[name], time.perf_counter() - t0)
            for name, (plan, media) in batches.items():
                what = f"{plan.mode} {plan.num_frames}f {plan.height}px"
                print(
                    f"{budget:>6} {name:<10} {what:<22} {int(media.num_tokens[0]):>10} "
                    f"{media.num_patches:>13} {best[name]:>8.3f} {best[name] / best['ov_encoder']:>5.2f}x"
                )


if __name__ == "__main__":
    main()
