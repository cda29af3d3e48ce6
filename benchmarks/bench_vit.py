"""OV-Encoder ViT benchmarks (prints tables; no asserts).

1. One 64-frame 224x224 clip: dense (64 x 256 = 16,384 tokens) vs codec selection (K = 2,048 tokens:
   frame 0 dense + top patches of frames 1..63; random here, the cost does not depend on which).
2. Packed varlen vs a padded batch of mixed lengths (same weights): tokens/s, the speed-up and its ratio
   to the ideal gain from not padding (padded tokens / real tokens); ``--train`` also for forward +
   backward, the setting training runs in.
3. With ``--device cuda``: every available attention backend (flash, torch_varlen, sdpa_loop,
   sdpa_mask) on the codec pack and on the mixed pack.

    python benchmarks/bench_vit.py --config base --device cpu --dtype float32 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from encoder.model import OVEncoder, PackedInput, cu_seqlens_from_lengths, get_config, pack_videos
from encoder.model.attention import backend_unavailable_reason
from encoder.model.rope import apply_rope, rope_cos_sin

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dense_clip(frames: int, size: int, patch: int) -> PackedInput:
    video = torch.randint(0, 256, (1, 3, frames, size, size), dtype=torch.uint8)
    return pack_videos(video, patch)


def codec_clip(k: int, frames: int, size: int, patch: int, seed: int = 0) -> PackedInput:
    """Frame 0 dense + (k - per_frame) distinct patches of frames 1..frames-1, as the codec selects."""
    g = torch.Generator().manual_seed(seed)
    grid = size // patch
    per_frame = grid * grid
    dense = pack_videos(
        torch.randint(0, 256, (1, 3, frames, size, size), dtype=torch.uint8, generator=g), patch
    )
    rest = per_frame + torch.randperm((frames - 1) * per_frame, generator=g)[: k - per_frame]
    idx = torch.cat([torch.arange(per_frame), rest.sort().values])
    cu = cu_seqlens_from_lengths([idx.numel()])
    return PackedInput(dense.pixels[idx], dense.positions[idx], cu)


def mixed_pack(lengths: list[int], patch: int, seed: int = 0) -> PackedInput:
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    pixels = torch.randint(0, 256, (n, 3, patch, patch), dtype=torch.uint8, generator=g)
    positions = torch.stack(
        [
            torch.randint(0, 64, (n,), generator=g),
            torch.randint(0, 32, (n,), generator=g),
            torch.randint(0, 32, (n,), generator=g),
        ],
        1,
    ).to(torch.int32)
    return PackedInput(pixels, positions, cu_seqlens_from_lengths(lengths))


def padded_forward(
    model: OVEncoder, packed: PackedInput, lengths: list[int], masked: bool = True
) -> torch.Tensor:
    """The same encoder as a classic padded batch [B, L_max] with a key-padding mask.

    ``masked=False`` drops the mask (wrong results for padded rows, but the cheapest padded kernel):
    a lower bound of the padded cost, to keep the comparison conservative.
    """
    cfg = model.config
    b, lmax, d = len(lengths), max(lengths), cfg.hidden_size
    h, hd = cfg.num_attention_heads, cfg.head_dim
    pix = packed.pixels.new_zeros(b, lmax, *packed.pixels.shape[1:])
    pos = packed.positions.new_zeros(b, lmax, 3)
    valid = torch.zeros(b, lmax, dtype=torch.bool, device=pix.device)
    for i, (s, n) in enumerate(zip(packed.cu_seqlens[:-1].tolist(), lengths)):
        pix[i, :n], pos[i, :n], valid[i, :n] = packed.pixels[s : s + n], packed.positions[s : s + n], True
    x = model.layernorm_pre(model.embeddings(model.normalize_pixels(pix.flatten(0, 1))))
    cos, sin = rope_cos_sin(pos.flatten(0, 1), cfg.rope_axis_sizes, cfg.rope_theta, cfg.rope_mode)
    mask = valid[:, None, None, :] if masked else None
    for layer in model.encoder.layers:
        att = layer.self_attn
        y = layer.layer_norm1(x)
        q = apply_rope(att.q_proj(y).view(-1, h, hd), cos, sin).view(b, lmax, h, hd).transpose(1, 2)
        k = apply_rope(att.k_proj(y).view(-1, h, hd), cos, sin).view(b, lmax, h, hd).transpose(1, 2)
        v = att.v_proj(y).view(b, lmax, h, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + att.out_proj(o.transpose(1, 2).reshape(-1, d))
        x = x + layer.mlp(layer.layer_norm2(x))
    return model.layernorm_post(x).view(b, lmax, d)


def run_model(model: OVEncoder, packed: PackedInput, **kw) -> Callable[[], object]:
    def fn() -> object:
        with torch.no_grad():
            return model(packed.pixels, packed.positions, packed.cu_seqlens, validate=False, **kw)

    return fn


def bench_dense_vs_codec(model: OVEncoder, args, device: torch.device) -> None:
    p = model.config.patch_size
    dense = dense_clip(args.frames, args.size, p).to(device)
    codec = codec_clip(args.k, args.frames, args.size, p).to(device)
    warm = codec_clip(p * 4, 2, p * 2, p).to(device)  # tiny warm-up (first-call overheads)
    run_model(model, warm)()
    rows = []
    for name, packed in (("dense", dense), ("codec", codec)):
        warmup = args.warmup if name == "codec" or device.type == "cuda" else 0
        t = timeit(run_model(model, packed), device, args.repeats, warmup)
        n = packed.pixels.shape[0]
        rows.append((name, n, t))
    print(
        f"\n## 1. one {args.frames}-frame {args.size}x{args.size} clip, config={args.config}, "
        f"{device.type}/{args.dtype}, backend={model.config.attn_backend}"
    )
    print(f"{'input':<8}{'tokens':>8}{'forward s':>12}{'tokens/s':>12}")
    for name, n, t in rows:
        print(f"{name:<8}{n:>8}{t:>12.3f}{n / t:>12.0f}")
    print(f"speed-up codec vs dense: {rows[0][2] / rows[1][2]:.1f}x (target >= 6x)")


def as_step(forward: Callable[[], torch.Tensor], train: bool) -> Callable[[], object]:
    """Forward only (no autograd), or forward + backward of the output's sum (parameter gradients)."""

    def fn() -> object:
        if not train:
            with torch.no_grad():
                return forward()
        forward().float().sum().backward()
        return None

    return fn


def bench_packed_vs_padded(model: OVEncoder, args, device: torch.device, train: bool = False) -> None:
    lengths = args.lengths or (
        [256, 512, 1024, 2048, 384, 768, 128, 1536]
        if device.type == "cuda"
        else [64, 128, 256, 512, 96, 192, 32, 384]
    )
    packed = mixed_pack(lengths, model.config.patch_size).to(device)
    real, padded_tokens = sum(lengths), len(lengths) * max(lengths)
    repeats = max(args.repeats, 3)  # cheap enough to repeat; medians tame noisy shared CPUs

    def run_packed() -> torch.Tensor:
        return model(
            packed.pixels,
            packed.positions,
            packed.cu_seqlens,
            validate=False,
            output_layer=-1,
            return_pooled=False,
        ).hidden_states

    t_packed = timeit(as_step(run_packed, train), device, repeats, args.warmup)
    t_padded = timeit(
        as_step(lambda: padded_forward(model, packed, lengths), train), device, repeats, args.warmup
    )
    t_nomask = timeit(
        as_step(lambda: padded_forward(model, packed, lengths, masked=False), train),
        device,
        repeats,
        args.warmup,
    )
    model.zero_grad(set_to_none=True)
    ideal = padded_tokens / real
    gain = min(t_padded, t_nomask) / t_packed
    what = "forward + backward" if train else "forward"
    print(f"\n## 2{'b' if train else ''}. packed varlen vs padded batch ({what}), lengths={lengths}")
    print(f"{'layout':<16}{'tokens':>8}{'computed':>10}{'step s':>12}{'real tokens/s':>15}")
    for name, n, t in (
        ("packed varlen", real, t_packed),
        ("padded + mask", padded_tokens, t_padded),
        ("padded, no mask", padded_tokens, t_nomask),
    ):
        print(f"{name:<16}{real:>8}{n:>10}{t:>12.4f}{real / t:>15.0f}")
    print(
        f"speed-up vs the faster padded run {gain:.2f}x, ideal (padded/real tokens) {ideal:.2f}x, "
        f"ratio {gain / ideal:.2f} ({what}; target >= 0.95)"
    )


def bench_backends(model: OVEncoder, args, device: torch.device) -> None:
    p = model.config.patch_size
    probe = torch.empty(1, 1, 1, device=device, dtype=DTYPES[args.dtype])
    lengths = args.lengths or [256, 512, 1024, 2048, 384, 768, 128, 1536]
    packs = {
        "codec K": codec_clip(args.k, args.frames, args.size, p).to(device),
        "mixed": mixed_pack(lengths, p).to(device),
    }
    print(f"\n## 3. attention backends on {device} ({args.dtype}), forward seconds")
    print(f"{'backend':<14}" + "".join(f"{name:>12}" for name in packs))
    original = model.config.attn_backend
    for backend in ("flash", "torch_varlen", "sdpa_loop", "sdpa_mask"):
        reason = backend_unavailable_reason(backend, probe)
        if reason is not None:
            print(f"{backend:<14}unavailable: {reason}")
            continue
        model.config.attn_backend = backend
        cells = [timeit(run_model(model, pk), device, args.repeats, args.warmup) for pk in packs.values()]
        print(f"{backend:<14}" + "".join(f"{t:>12.4f}" for t in cells))
    model.config.attn_backend = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="base", help="debug | base | large | huge")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dtype", default=None, choices=sorted(DTYPES), help="default: float32 on cpu, bf16 on cuda"
    )
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--repeats", type=int, default=None, help="default: 1 on cpu, 10 on cuda")
    ap.add_argument("--warmup", type=int, default=None, help="default: 1 on cpu, 3 on cuda")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--k", type=int, default=2048)
    ap.add_argument("--lengths", type=int, nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["clip", "packing", "backends"])
    ap.add_argument("--train", action="store_true", help="section 2 also as forward + backward (training)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.repeats = args.repeats or (10 if cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)

    torch.manual_seed(0)
    with torch.device(device):
        model = OVEncoder(get_config(args.config, attn_backend=args.backend))
    model = model.to(dtype=DTYPES[args.dtype]).eval()
    print(
        f"config={args.config} params={model.num_parameters() / 1e6:.1f}M device={device} "
        f"dtype={args.dtype} threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    if "clip" not in args.skip:
        bench_dense_vs_codec(model, args, device)
    if "packing" not in args.skip:
        bench_packed_vs_padded(model, args, device)
        if args.train:
            bench_packed_vs_padded(model.train(), args, device, train=True)
            model.eval()
    if cuda and "backends" not in args.skip:
        bench_backends(model, args, device)


if __name__ == "__main__":
    main()
