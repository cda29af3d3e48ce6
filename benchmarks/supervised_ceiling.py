"""How fast can the OV-Encoder learn a probe task end to end? The ceiling a pretrained, frozen encoder
cannot pass on the attentive probe: the encoder (random init) + its pooling head + a linear classifier,
trained supervised with cross-entropy on the probe's synthetic training clips, held-out top-1 printed
every ``--every`` steps.

    python benchmarks/supervised_ceiling.py                                  # direction, debug encoder
    python benchmarks/supervised_ceiling.py --steps 2500 --encoder '{"rope_theta": 100}'
    python benchmarks/supervised_ceiling.py --set synthetic.task=color

Defaults match the pretraining search's validation split (probe clips of seeds 11 / 12, never the
probe's test split): 128 training and 32 held-out clips per class, codec input at 256 patches.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from encoder.cli import run_cli
from encoder.model import OVEncoder, get_config, pack_selections
from encoder.typed_config import load_config
from llava_ov.experiments.probe.config import ProbeConfig
from llava_ov.experiments.probe.data import load_clips
from llava_ov.experiments.probe.run import patchify_clip, plan_and_codec

VALIDATION = [
    "synthetic.seed=11",
    "synthetic.heldout_seed=12",
    "synthetic.num_train=128",
    "synthetic.num_heldout=32",
    "synthetic.out_dir=${LLAVA_OV_CACHE:-.cache/llava_ov}/probe_val_ceiling",
    "media.budget=256",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--every", type=int, default=100, help="evaluate every N steps")
    ap.add_argument("--size", default="debug", help="encoder preset")
    ap.add_argument("--encoder", default='{"rope_mode": "clean"}', help="ViTConfig overrides (JSON)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ProbeConfig overrides")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(ProbeConfig, None, [*VALIDATION, *args.set])
    clips = load_clips(cfg.data, cfg.synthetic, progress=False)
    _, _, codec = plan_and_codec(cfg)
    data = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split, refs in clips.clips.items():
            data[split] = [(patchify_clip(c, codec, tmp), clips.classes.index(c.label)) for c in refs]
    torch.manual_seed(args.seed)
    enc = OVEncoder(get_config(args.size, **json.loads(args.encoder)))
    cls = torch.nn.Linear(enc.config.hidden_size, len(clips.classes))
    params = [*enc.parameters(), *cls.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)

    def logits(items):
        p = pack_selections([s for s, _ in items])
        return cls(enc(p.pixels, p.positions, p.cu_seqlens, return_pooled=True, validate=False).pooled)

    @torch.no_grad()
    def accuracy(items) -> float:
        right = 0
        for i in range(0, len(items), 32):
            chunk = items[i : i + 32]
            right += int((logits(chunk).argmax(1) == torch.tensor([y for _, y in chunk])).sum())
        return right / len(items)

    train, heldout = data["train"], data["heldout"]
    print(f"{len(train)} train / {len(heldout)} held-out clips, {len(clips.classes)} classes", flush=True)
    g, start = torch.Generator().manual_seed(args.seed), time.time()
    for step in range(1, args.steps + 1):
        batch = [train[i] for i in torch.randint(len(train), (args.batch,), generator=g)]
        for group in opt.param_groups:  # 50 steps of linear warmup, then constant
            group["lr"] = args.lr * min(1.0, step / 50)
        loss = F.cross_entropy(logits(batch), torch.tensor([y for _, y in batch]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            print(
                f"step {step}: loss {loss.item():.3f}  train top-1 {accuracy(train):.3f}  "
                f"held-out top-1 {accuracy(heldout):.3f}  ({time.time() - start:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
