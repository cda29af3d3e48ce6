"""LMM training throughput: packed vs padded batches (CPU, tiny model), or one full-shape SFT step.

Default (CPU): the same synthetic motion-QA samples at three patch budgets (so lengths vary, as in
real mixtures), the same tiny model and optimizer, grouped into the same batches of ``--batch``
samples; each group runs once packed (one sequence, block-diagonal attention) and once padded
(``[B, L_max]`` + attention mask). Prints real (non-pad) text tokens/s and visual tokens/s of both and
their ratio.

``--full`` (GPU): OV-Encoder-large + Qwen3-1.7B shapes with random weights, bf16, one SFT step
(forward + backward + AdamW) on a packed batch of 64-frame codec clips (2048 patches each) filling
``--max-tokens``; prints step time, tokens/s and MFU (6·N·tokens / (time · peak)).

    python benchmarks/bench_lmm.py [--samples 24 --batch 4 --steps 2]
    python benchmarks/bench_lmm.py --full [--max-tokens 16384 --flash --checkpointing]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="one SFT step at full shapes (GPU, bf16)")
    p.add_argument("--samples", type=int, default=24, help="CPU mode: samples in all")
    p.add_argument("--batch", type=int, default=4, help="CPU mode: samples per batch")
    p.add_argument("--steps", type=int, default=2, help="timed passes over the batches (after one warmup)")
    p.add_argument("--budgets", default="64,128,256", help="CPU mode: codec patch budgets mixed")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--max-tokens", type=int, default=16384, help="--full: text tokens per packed batch")
    p.add_argument("--flash", action="store_true", help="--full: flash_attention_2 (else sdpa)")
    p.add_argument("--checkpointing", action="store_true", help="--full: activation checkpointing")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak per device (default: GPU table)")
    return p.parse_args()


# ----------------------------------------------------------------------------- helpers


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch, sync=lambda: None) -> float:
    start = time.perf_counter()
    out = model(batch)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - start


def real_tokens(batch) -> int:
    text = batch.text
    return int(text.attention_mask.sum()) if hasattr(text, "attention_mask") else int(text.input_ids.numel())


# ----------------------------------------------------------------------------- CPU: packed vs padded


def synthetic_items(n: int, budgets: list[int], tokenizer, tokens_for) -> list:
    """``n`` items of the held-out synthetic clips, cycling through the patch budgets."""
    from encoder.config import merge
    from llava_ov.data import LMMItem, MixtureDataset, load_data_config, prepare_data

    base = load_data_config(ROOT / "data_configs" / "synthetic_motion_qa.yaml")
    prepare_data(base, progress=True)
    streams = []
    for b in budgets:
        updates = {"codec": {"select": {"budget": b}}, "repeat": False, "shuffle_buffer": 0}
        cfg = merge(base, updates)
        ds = MixtureDataset(cfg, tokenizer, tokens_for, sources=cfg.eval_sources, pack=False)
        streams.append(x for x in ds.iter_items() if isinstance(x, LMMItem))
    return [next(streams[i % len(streams)]) for i in range(n)]


def bench_cpu(args: argparse.Namespace) -> None:
    from llava_ov.data import collate_items, tokenizer_texts
    from llava_ov.model import build_model, debug_config
    from llava_ov.text import build_tokenizer

    tokenizer = build_tokenizer(tokenizer_texts(), 512)
    torch.manual_seed(0)
    model = build_model(debug_config(hidden_size=128, intermediate_size=256, head_dim=32), tokenizer)
    items = synthetic_items(args.samples, [int(b) for b in args.budgets.split(",")], tokenizer, model.tokens_counter())
    groups = [items[i:i + args.batch] for i in range(0, len(items), args.batch)]
    pad = int(tokenizer.pad_token_id)
    layouts = {
        "packed": [collate_items(g) for g in groups],
        "padded": [collate_items(g, padded=True, pad_token_id=pad) for g in groups],
    }
    init = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for name, batches in layouts.items():
        model.load_state_dict(init)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for b in batches:  # warmup
            train_step(model, opt, b)
        seconds = sum(train_step(model, opt, b) for _ in range(args.steps) for b in batches)
        tokens = args.steps * sum(real_tokens(b) for b in batches)
        slots = args.steps * sum(int(b.text.input_ids.numel()) for b in batches)
        patches = args.steps * sum(b.media.num_patches for b in batches)
        results[name] = (tokens / seconds, patches / seconds, slots / tokens)
    lengths = [len(it) for it in items]
    print(f"{len(items)} samples ({min(lengths)}-{max(lengths)} tokens), batches of {args.batch}, "
          f"{args.steps} timed passes, {torch.get_num_threads()} threads, sdpa on CPU")
    print(f"{'layout':<8} {'text tok/s':>11} {'visual tok/s':>13} {'slots/token':>12}")
    for name, (tps, vps, waste) in results.items():
        print(f"{name:<8} {tps:>11.0f} {vps:>13.0f} {waste:>12.2f}")
    print(f"packed / padded tokens/s ratio: {results['packed'][0] / results['padded'][0]:.2f}")


# ----------------------------------------------------------------------------- GPU: full shapes


QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                  rope_theta=1_000_000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)


def fake_clip(rng: np.random.Generator, patches: int = 2048, grid: int = 16, frames: int = 64):
    """A codec-like selection: frame 0 dense, the rest scattered over frames 1..63, 14-px patches."""
    from encoder.codec import PatchSelection

    dense = [(0, h, w) for h in range(grid) for w in range(grid)]
    rest = rng.choice((frames - 1) * grid * grid, size=patches - len(dense), replace=False)
    pos = dense + sorted((1 + int(i) // (grid * grid), (int(i) // grid) % grid, int(i) % grid) for i in rest)
    k = len(pos)
    return PatchSelection(positions=np.array(pos), pixels=rng.integers(0, 255, (k, 3, 14, 14), dtype=np.uint8),
                          scores=np.ones(k), frame_ids=np.arange(frames), frame_t=np.arange(frames),
                          patch_size=14, grid_hw=(grid, grid), meta={"mode": "codec"})


def full_batch(tokenizer, tokens_for, max_tokens: int):
    from llava_ov.data import MediaSample, make_item, pack_items

    rng = np.random.default_rng(0)
    words = " ".join(["describe the motion of every object in this clip carefully"] * 40)
    items = []
    while sum(len(i) for i in items) < max_tokens:
        record = {"conversations": [{"from": "human", "value": "<video>\n" + words[:600]},
                                    {"from": "gpt", "value": words}]}
        item = make_item(MediaSample(f"s{len(items)}", record, [fake_clip(rng)], ["video"]), tokenizer, tokens_for,
                         max_length=max_tokens)
        items.append(item)
    return next(pack_items(items[:-1], max_tokens, max_media_tokens=1 << 20))


def bench_full(args: argparse.Namespace) -> None:
    from llava_ov.data import tokenizer_texts
    from llava_ov.model import LLMConfig, ModelConfig, TowerConfig, build_model
    from llava_ov.text import build_tokenizer
    from llava_ov.train import peak_flops, train_flops

    if not torch.cuda.is_available():
        raise SystemExit("--full needs a GPU (bf16 full shapes do not fit a CPU run)")
    device = torch.device("cuda")
    tokenizer = build_tokenizer(tokenizer_texts(), 512)
    attn = "flash_attention_2" if args.flash else "sdpa"
    cfg = ModelConfig(tower=TowerConfig(size="large", overrides={"attn_backend": "auto"}),
                      llm=LLMConfig(from_scratch=QWEN3_1_7B, attn_implementation=attn),
                      activation_checkpointing=args.checkpointing)
    model = build_model(cfg, tokenizer, dtype=torch.bfloat16).to(device)
    params = {"vision": sum(p.numel() for p in model.vision_tower.parameters()),
              "projector": sum(p.numel() for p in model.projector.parameters()),
              "llm": sum(p.numel() for p in model.llm.parameters())}
    batch = full_batch(tokenizer, model.tokens_counter(), args.max_tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    sync = torch.cuda.synchronize
    train_step(model, opt, batch, sync)  # warmup (allocations, kernels)
    torch.cuda.reset_peak_memory_stats()
    times = [train_step(model, opt, batch, sync) for _ in range(args.steps)]
    seconds = float(np.median(times))
    tokens, patches = batch.num_tokens, batch.media.num_patches
    peak = peak_flops(torch.cuda.get_device_name(device), args.peak_tflops)
    flops = train_flops(params, tokens, patches)
    print(f"{torch.cuda.get_device_name(device)}: {sum(params.values()) / 1e9:.2f}B params "
          f"(vision {params['vision'] / 1e6:.0f}M, projector {params['projector'] / 1e6:.1f}M, "
          f"llm {params['llm'] / 1e9:.2f}B), {attn}, bf16, checkpointing={args.checkpointing}")
    print(f"batch: {batch.num_samples} clips, {tokens} text tokens, {patches} patches")
    print(f"step {seconds * 1000:.0f} ms | {tokens / seconds:.0f} text tok/s | {patches / seconds:.0f} visual tok/s | "
          f"{flops / seconds / 1e12:.1f} TFLOP/s | MFU {'n/a' if peak is None else f'{flops / seconds / peak:.1%}'} "
          f"| peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_full(args) if args.full else bench_cpu(args)


if __name__ == "__main__":
    main()
