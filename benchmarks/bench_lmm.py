"""LMM training throughput: packed vs padded batches (CPU, tiny model), or one full-shape SFT step.

Default (CPU): the same synthetic motion-QA samples at three patch budgets (so lengths vary, as in
real mixtures), the same tiny model and optimizer, grouped into the same batches of ``--batch``
samples; each group runs once packed (one sequence, block-diagonal attention) and once padded
(``[B, L_max]`` + attention mask). Prints real (non-pad) text tokens/s and visual tokens/s of both and
their ratio.

``--full`` (GPU): OV-Encoder-large + Qwen3-1.7B shapes with random weights, built and stepped by the
trainer's own code (the SFT stage's trainable modules and AdamW groups, the DeepSpeed engine at ZeRO-2,
bf16, the model's loss), on packed batches of 64-frame codec clips (2048 patches each) filling 8k /
16k / 32k LLM tokens: step time, tokens/s, TFLOP/s and MFU by :mod:`llava_ov.train.flops` (the
trainer's logged ``mfu``), peak memory. ``--profile`` adds GPU time by kernel family and a trace.

    python benchmarks/bench_lmm.py [--samples 24 --batch 4 --steps 2]
    python benchmarks/bench_lmm.py --full [--tokens 8192,16384,32768 --attn auto --checkpointing --profile]
    python benchmarks/bench_lmm.py --full --tiny   # the same path at tiny shapes on CPU
    python benchmarks/bench_lmm.py --scaling --tokens 4096,8192,16384   # CPU: step time vs pack length
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="one SFT step at full shapes (GPU, bf16)")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="CPU: step time per pack length (--tokens) and attn_implementation",
    )
    p.add_argument("--attns", default="auto,sdpa", help="--scaling: attn_implementations compared")
    p.add_argument("--samples", type=int, default=24, help="CPU mode: samples in all")
    p.add_argument("--batch", type=int, default=4, help="CPU mode: samples per batch")
    p.add_argument(
        "--steps", type=int, default=3, help="timed passes over the batches / timed steps per --full row"
    )
    p.add_argument("--budgets", default="64,128,256", help="CPU mode: codec patch budgets mixed")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument(
        "--tokens", default="8192,16384,32768", help="--full / --scaling: LLM tokens per pack, one row each"
    )
    p.add_argument("--attn", default="auto", help="--full: the LLM's attn_implementation (auto, sdpa, ...)")
    p.add_argument("--zero", type=int, default=2, help="--full: DeepSpeed ZeRO stage")
    p.add_argument("--warmup", type=int, default=2, help="--full: untimed steps per row")
    p.add_argument("--checkpointing", action="store_true", help="--full: activation checkpointing")
    p.add_argument("--compile", action="store_true", help="--full: model.compile (torch.compile per block)")
    p.add_argument("--profile", action="store_true", help="--full: one step under torch.profiler (16k row)")
    p.add_argument("--trace", default=None, help="--full --profile: Chrome trace file to write")
    p.add_argument(
        "--tiny", action="store_true", help="--full: tiny shapes, runs on CPU (a dry run of the path)"
    )
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
    from encoder.typed_config import merge_config
    from llava_ov.data import LMMItem, MixtureDataset, load_data_config, prepare_data

    base = load_data_config(ROOT / "data_configs" / "synthetic_motion_qa.yaml")
    prepare_data(base, progress=True)
    streams = []
    for b in budgets:
        updates = {"codec": {"select": {"budget": b}}, "repeat": False, "shuffle_buffer": 0}
        cfg = merge_config(base, updates)
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
    items = synthetic_items(
        args.samples, [int(b) for b in args.budgets.split(",")], tokenizer, model.token_counter()
    )
    groups = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]
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
    print(
        f"{len(items)} samples ({min(lengths)}-{max(lengths)} tokens), batches of {args.batch}, "
        f"{args.steps} timed passes, {torch.get_num_threads()} threads, "
        f"attn {model.config.llm.attn_implementation}"
    )
    print(f"{'layout':<8} {'text tok/s':>11} {'visual tok/s':>13} {'slots/token':>12}")
    for name, (tps, vps, waste) in results.items():
        print(f"{name:<8} {tps:>11.0f} {vps:>13.0f} {waste:>12.2f}")
    print(f"packed / padded tokens/s ratio: {results['packed'][0] / results['padded'][0]:.2f}")


# ----------------------------------------------------------------------------- CPU: step time vs pack length


def bench_scaling(args: argparse.Namespace) -> None:
    """A packed training step at 4k / 8k / 16k tokens of ~1k-token samples, per attn_implementation
    (side by side in one run): linear in pack length with ``auto``, quadratic with ``sdpa``'s mask."""
    from llava_ov.data import tokenizer_texts
    from llava_ov.model import build_model, debug_config
    from llava_ov.text import build_tokenizer

    tokenizer = build_tokenizer(tokenizer_texts(), 512)
    packs = {}
    results: dict[str, list[float]] = {}
    for attn in args.attns.split(","):
        torch.manual_seed(0)
        cfg = debug_config(hidden_size=128, intermediate_size=256, head_dim=32)
        cfg.llm.attn_implementation = attn
        model = build_model(cfg, tokenizer)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for max_tokens in [int(t) for t in args.tokens.split(",")]:
            if max_tokens not in packs:
                packs[max_tokens] = sample_pack(tokenizer, model.token_counter(), max_tokens)
            batch = packs[max_tokens]
            train_step(model, opt, batch)  # warmup
            seconds = float(np.median([train_step(model, opt, batch) for _ in range(args.steps)]))
            results.setdefault(attn, []).append(seconds)
    sizes = list(packs)
    print(
        f"packed training step (forward + backward + AdamW), debug tower + 2-layer Qwen3 (128 wide), "
        f"{torch.get_num_threads()} threads; "
        f"samples of ~{packs[sizes[0]].num_tokens // packs[sizes[0]].num_samples} tokens"
    )
    print(
        f"{'attn':<8}"
        + "".join(f"{f'{t} tok (n={packs[t].num_samples}) s':>22}" for t in sizes)
        + "".join(f"{f'x{t // sizes[0]} tokens':>14}" for t in sizes[1:])
    )
    for attn, times in results.items():
        print(
            f"{attn:<8}"
            + "".join(f"{t:>22.3f}" for t in times)
            + "".join(f"{f'{t / times[0]:.2f}x time':>14}" for t in times[1:])
        )


def sample_pack(tokenizer, tokens_for, max_tokens: int, sample_tokens: int = 1024):
    """A pack of ``max_tokens`` from samples of about ``sample_tokens`` (a 64-patch clip and text)."""
    from llava_ov.data import MediaSample, make_item, pack_items

    rng = np.random.default_rng(0)
    items, i = [], 0
    while sum(len(x) for x in items) + sample_tokens <= max_tokens:
        words = " ".join(["the red square moves left while the blue circle stays"] * 200)
        record = {
            "conversations": [
                {"from": "human", "value": "<video>\nWhat happens?"},
                {"from": "gpt", "value": words},
            ]
        }
        item = make_item(
            MediaSample(f"s{i}", record, [fake_clip(rng, patches=64, grid=4)], ["video"]),
            tokenizer,
            tokens_for,
            max_length=sample_tokens,
        )
        items.append(item)
        i += 1
    return next(pack_items(items, max_tokens, max_media_tokens=1 << 20))


# ----------------------------------------------------------------------------- GPU: full shapes


#: Qwen3-1.7B's layer width and vocabulary (also the 2-layer LLM of benchmarks/gpu_parity.py)
QWEN3_1_7B_WIDTH = dict(
    hidden_size=2048,
    intermediate_size=6144,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    tie_word_embeddings=True,
)
QWEN3_1_7B = dict(
    QWEN3_1_7B_WIDTH,
    num_hidden_layers=28,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
)


def fake_clip(rng: np.random.Generator, patches: int = 2048, grid: int = 16, frames: int = 64):
    """A codec-like selection: frame 0 dense, the rest scattered over frames 1..63, 14-px patches."""
    from encoder.codec import PatchSelection

    dense = [(0, h, w) for h in range(grid) for w in range(grid)]
    rest = rng.choice((frames - 1) * grid * grid, size=patches - len(dense), replace=False)
    pos = dense + sorted((1 + int(i) // (grid * grid), (int(i) // grid) % grid, int(i) % grid) for i in rest)
    k = len(pos)
    return PatchSelection(
        positions=np.array(pos),
        pixels=rng.integers(0, 255, (k, 3, 14, 14), dtype=np.uint8),
        scores=np.ones(k),
        frame_ids=np.arange(frames),
        frame_t=np.arange(frames),
        patch_size=14,
        grid_hw=(grid, grid),
        meta={"mode": "codec"},
    )


def full_batch(tokenizer, tokens_for, max_tokens: int, patches: int = 2048):
    """Packed codec clips (``patches`` each, a question and a long answer) filling ``max_tokens``."""
    from llava_ov.data import MediaSample, make_item, pack_items

    rng = np.random.default_rng(0)
    words = " ".join(["describe the motion of every object in this clip carefully"] * 40)
    grid = 16 if patches >= 256 else 4
    items = []
    while sum(len(i) for i in items) < max_tokens:
        record = {
            "conversations": [
                {"from": "human", "value": "<video>\n" + words[:600]},
                {"from": "gpt", "value": words},
            ]
        }
        clip = fake_clip(rng, patches=patches, grid=grid)
        item = make_item(
            MediaSample(f"s{len(items)}", record, [clip], ["video"]),
            tokenizer,
            tokens_for,
            max_length=max_tokens,
        )
        items.append(item)
    return next(pack_items(items[:-1] or items[:1], max_tokens, max_media_tokens=1 << 20))


def trainer_engine(model, zero_stage: int):
    """The trainer's own path: trainable modules, AdamW groups and DeepSpeed engine of an SFT stage."""
    from llava_ov.train import distributed as D
    from llava_ov.train.config import DeepSpeedConfig, StageConfig
    from llava_ov.train.optim import build_optimizer, configure_trainable, param_groups

    ds = DeepSpeedConfig(zero_stage=zero_stage)
    env = D.init_distributed(ds)
    stage = StageConfig(trainable=["vision", "projector", "llm"])
    configure_trainable(model, stage)
    optimizer = build_optimizer(param_groups(model, stage.optim), stage.optim)
    engine = D.build_engine(
        model, optimizer, D.deepspeed_config(ds, env, stage.grad_accum, stage.optim.grad_clip)
    )
    return engine, env


def engine_step(engine, batch, sync) -> float:
    """One optimizer step as the trainer's loop runs it (one micro-batch: weight 1)."""
    start = time.perf_counter()
    loss = engine(batch).loss
    engine.backward(loss)
    engine.step()
    sync()
    return time.perf_counter() - start


def batch_counts(batch) -> dict[str, float]:
    from llava_ov.train.flops import squared_lengths
    from llava_ov.train.trainer import num_targets, sample_sq

    return {
        "text": batch.num_tokens,
        "targets": num_targets(batch),
        "visual": int(batch.media.num_tokens.sum()),
        "patches": batch.media.num_patches,
        "sample_sq": sample_sq(batch),
        "media_sq": squared_lengths(batch.media.cu_seqlens),
    }


def bench_full(args: argparse.Namespace) -> None:
    from llava_ov.data import tokenizer_texts
    from llava_ov.model import TINY_QWEN3, LLMConfig, ModelConfig, TowerConfig, build_model
    from llava_ov.text import build_tokenizer
    from llava_ov.train.flops import flop_model
    from llava_ov.train.metrics import peak_flops

    cuda = torch.cuda.is_available()
    if not (cuda or args.tiny):
        raise SystemExit(
            "--full needs a GPU (bf16 full shapes do not fit a CPU run); --tiny runs the same path on CPU"
        )
    device = torch.device("cuda" if cuda else "cpu")
    tokenizer = build_tokenizer(tokenizer_texts(), 512)
    llm = dict(TINY_QWEN3, hidden_size=128, intermediate_size=256, head_dim=32) if args.tiny else QWEN3_1_7B
    cfg = ModelConfig(
        tower=TowerConfig(size="debug" if args.tiny else "large", overrides={"attn_backend": "auto"}),
        llm=LLMConfig(from_scratch=llm, attn_implementation=args.attn),
        activation_checkpointing=args.checkpointing,
        compile=args.compile,
    )
    torch.manual_seed(0)
    with torch.device(
        device
    ):  # random init on the device (the trainer builds on CPU, then DeepSpeed moves it)
        model = build_model(cfg, tokenizer)
    params = {
        "vision": sum(p.numel() for p in model.vision_tower.parameters()),
        "projector": sum(p.numel() for p in model.projector.parameters()),
        "llm": sum(p.numel() for p in model.llm.parameters()),
    }
    engine, env = trainer_engine(model, args.zero)
    fm = flop_model(model)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    peak = peak_flops(torch.cuda.get_device_name(device) if cuda else "cpu", args.peak_tflops)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(
        f"{name}: {sum(params.values()) / 1e9:.3f}B params (vision {params['vision'] / 1e6:.1f}M, "
        f"projector {params['projector'] / 1e6:.1f}M, llm {params['llm'] / 1e9:.3f}B), "
        f"attn_implementation={args.attn}, "
        f"{env.dtype}, DeepSpeed ZeRO-{args.zero}, checkpointing={args.checkpointing}, compile={args.compile}"
    )
    print(
        "MFU = model FLOPs (llava_ov/train/flops.py: matmuls, within-sample attention, LM head on targets) "
        f"/ (step time x peak {'n/a' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'}); "
        "6N = the old 6*N*tokens figure"
    )
    print(
        f"{'tokens/pack':>11} {'clips':>5} {'text tok':>8} {'patches':>8} {'step ms':>8} {'text tok/s':>10} "
        f"{'TFLOP/s':>8} {'MFU':>6} {'MFU 6N':>7} {'peak GiB':>8}"
    )
    rows = []
    for max_tokens in [int(t) for t in args.tokens.split(",")]:
        batch = full_batch(tokenizer, model.token_counter(), max_tokens, patches=64 if args.tiny else 2048)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            for _ in range(args.warmup):
                engine_step(engine, batch, sync)
            seconds = float(np.median([engine_step(engine, batch, sync) for _ in range(args.steps)]))
        except torch.OutOfMemoryError:
            engine.zero_grad()
            gc.collect()
            torch.cuda.empty_cache()
            print(f"{max_tokens:>11} {batch.num_samples:>5} out of memory (try --checkpointing)", flush=True)
            continue
        c = batch_counts(batch)
        flops = fm.step_flops(
            c["text"], c["targets"], c["visual"], c["patches"], c["sample_sq"], c["media_sq"]
        )
        six_n = (
            6.0 * (params["llm"] + params["projector"]) * c["text"] + 6.0 * params["vision"] * c["patches"]
        )
        mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        util = "n/a" if peak is None else f"{flops / seconds / peak:.1%}"
        util6 = "n/a" if peak is None else f"{six_n / seconds / peak:.1%}"
        print(
            f"{max_tokens:>11} {batch.num_samples:>5} {c['text']:>8} {c['patches']:>8} {seconds * 1e3:>8.0f} "
            f"{c['text'] / seconds:>10.0f} {flops / seconds / 1e12:>8.1f} {util:>6} {util6:>7} {mem:>8.1f}",
            flush=True,
        )
        rows.append((max_tokens, batch))
    if args.profile:
        from kernel_profile import profile_step

        max_tokens, batch = next((r for r in rows if r[0] == 16384), rows[0])
        print(f"\nprofile of one step at {max_tokens} tokens per pack:")
        profile_step(lambda: engine_step(engine, batch, sync), Path(args.trace) if args.trace else None)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full:
        bench_full(args)
    elif args.scaling:
        bench_scaling(args)
    else:
        bench_cpu(args)


if __name__ == "__main__":
    main()
