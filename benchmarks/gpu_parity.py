"""Parity of every attention path and of the chunked loss against an fp32 reference (GPU check, step 1).

Each check runs the fast path in bf16 and, as the yardstick, plain SDPA in bf16; both are compared with
the same computation in fp32 (relative L2 error of outputs and of every input / parameter gradient).
A fast path passes when its worst error is within 2x that of bf16 SDPA (or below 1e-2):

1. ViT varlen attention (non-causal, OV-Encoder-large heads) on a pack of mixed lengths;
2. LLM packed causal attention with GQA (Qwen3-1.7B heads: 16 query, 8 key/value, head_dim 128);
3. a Qwen3 LLM (2 layers at Qwen3-1.7B width) on a packed batch with ``attn_implementation=auto``
   against the padded batch with transformers' ``sdpa``: loss and every parameter gradient;
4. the chunked LM-head loss against full logits at V = 151,936 (loss, d(hidden), d(weight)) and
   the peak memory each needs.

    python benchmarks/gpu_parity.py [--tiny] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch
from bench_lmm import QWEN3_1_7B_WIDTH

from encoder.model.attention import SeqInfo, varlen_attention


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def attention_errors(lengths, heads, kv_heads, dim, causal, device, backend) -> dict[str, float]:
    """Worst relative error (output, dq, dk, dv) of ``backend`` in bf16 vs the fp32 computation."""
    g = torch.Generator(device="cpu").manual_seed(0)
    n = sum(lengths)
    base = [torch.randn(n, h, dim, generator=g) for h in (heads, kv_heads, kv_heads)]
    upstream = torch.randn(n, heads, dim, generator=g).to(device)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    info = SeqInfo.from_cu_seqlens(cu, device=device)

    def run(dtype, name):
        qkv = [t.to(device, dtype).detach().requires_grad_(True) for t in base]
        out = varlen_attention(*qkv, info, name, causal=causal)
        (out.float() * upstream).sum().backward()
        return [out.detach()] + [t.grad for t in qkv]

    ref = run(torch.float32, "sdpa_loop")
    got = run(torch.bfloat16, backend)
    return {"output": rel(got[0], ref[0]), "grad": max(rel(a, b) for a, b in zip(got[1:], ref[1:]))}


def _qwen3(width: dict, attn: str, dtype, device):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from llava_ov.model.attention import transformers_attn_implementation

    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(Qwen3Config(**width, use_cache=False))
    model.set_attn_implementation(transformers_attn_implementation(attn))
    return model.to(device, dtype).train()


def llm_errors(width: dict, lengths: list[int], device) -> dict[str, dict[str, float]]:
    """Packed ``auto`` and padded ``sdpa`` in bf16 against padded ``sdpa`` in fp32: loss and the worst
    parameter gradient."""
    from llava_ov.text.conversation import IGNORE_INDEX, TokenizedSample
    from llava_ov.text.packing import collate_packed, collate_padded, model_inputs

    g = torch.Generator().manual_seed(1)
    samples = []
    for n in lengths:
        ids = torch.randint(0, width["vocab_size"], (n,), generator=g)
        labels = ids.clone()
        labels[: n // 2] = IGNORE_INDEX
        samples.append(TokenizedSample(ids, labels, []))
    layouts = {"packed": collate_packed(samples), "padded": collate_padded(samples, pad_token_id=0)}

    def run(attn, layout, dtype):
        model = _qwen3(width, attn, dtype, device)
        kwargs = {
            k: v.to(device) if torch.is_tensor(v) else v
            for k, v in model_inputs(layouts[layout], attn).items()
        }
        loss = model(**kwargs).loss
        loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters()}
        del model
        return loss.detach().float(), grads

    ref_loss, ref_grads = run("sdpa", "padded", torch.float32)
    out = {}
    for name, (attn, layout) in {
        "packed auto": ("auto", "packed"),
        "padded sdpa": ("sdpa", "padded"),
    }.items():
        loss, grads = run(attn, layout, torch.bfloat16)
        out[name] = {
            "output": rel(loss, ref_loss),
            "grad": max(rel(grads[k], ref_grads[k]) for k in ref_grads),
        }
    return out


def loss_errors(targets: int, dim: int, vocab: int, device) -> dict[str, float]:
    """Chunked loss vs full logits (bf16 inputs, fp32 cross-entropy) and the peak memory each adds."""
    from torch import nn

    from llava_ov.model.loss import causal_lm_loss, lm_head_loss

    torch.manual_seed(2)
    head = nn.Linear(dim, vocab, bias=False).to(device, torch.bfloat16)
    hidden = torch.randn(1, targets + 1, dim, device=device, dtype=torch.bfloat16)
    labels = torch.randint(0, vocab, (1, targets + 1), device=device)
    results, peaks = [], []
    for fn in (lambda h: causal_lm_loss(head(h), labels)[0], lambda h: lm_head_loss(h, labels, head)[0]):
        head.zero_grad(set_to_none=True)
        h = hidden.clone().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        loss = fn(h)
        loss.backward()
        peaks.append(
            (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" else float("nan")
        )
        results.append((loss.detach(), h.grad, head.weight.grad))
    (a, ha, wa), (b, hb, wb) = results
    return {
        "output": rel(b, a),
        "grad": max(rel(hb, ha), rel(wb, wa)),
        "full_gib": peaks[0],
        "chunked_gib": peaks[1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small shapes (a CPU dry run of every check)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    fast = "auto"
    if args.tiny:
        vit_lengths, llm_lengths = [5, 17, 33, 1], [1, 7, 30, 12, 3]
        width = dict(
            vocab_size=211,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            tie_word_embeddings=True,
        )
        loss_shape = (300, 32, 5003)
    else:
        vit_lengths, llm_lengths = [128, 512, 2048, 1024, 37], [1, 37, 512, 1023, 2048, 3]
        width = dict(QWEN3_1_7B_WIDTH, num_hidden_layers=2)
        loss_shape = (8192, 2048, 151936)
    results: dict[str, dict[str, float]] = {}
    for label, (heads, kv, dim, causal, lengths) in {
        "vit varlen": (16, 16, 64, False, vit_lengths),
        "llm varlen (GQA, causal)": (16, 8, 128, True, llm_lengths),
    }.items():
        results[f"{label} [{fast}]"] = attention_errors(lengths, heads, kv, dim, causal, device, fast)
        results[f"{label} [sdpa bf16]"] = attention_errors(
            lengths, heads, kv, dim, causal, device, "sdpa_loop"
        )
    for name, errs in llm_errors(width, llm_lengths, device).items():
        results[f"qwen3 2-layer, {name}"] = errs
    results["chunked loss vs full logits"] = loss_errors(*loss_shape, device)
    print(f"parity against fp32 ({device}, bf16 fast paths; relative L2 error; worst gradient)")
    print(f"{'check':<44}{'output':>10}{'grad':>10}")
    for name, r in results.items():
        print(f"{name:<44}{r['output']:>10.4f}{r['grad']:>10.4f}")
    mem = results["chunked loss vs full logits"]
    print(
        f"loss peak memory at {loss_shape[0]} targets, V={loss_shape[2]}: "
        f"full logits {mem['full_gib']:.2f} GiB, chunked {mem['chunked_gib']:.2f} GiB"
    )
    verdicts = {}
    for fast_key, ref_key in (
        (f"vit varlen [{fast}]", "vit varlen [sdpa bf16]"),
        (f"llm varlen (GQA, causal) [{fast}]", "llm varlen (GQA, causal) [sdpa bf16]"),
        ("qwen3 2-layer, packed auto", "qwen3 2-layer, padded sdpa"),
    ):
        worst, yard = max(results[fast_key].values()), max(results[ref_key].values())
        verdicts[fast_key] = worst <= max(2 * yard, 1e-2)
    verdicts["chunked loss vs full logits"] = max(mem["output"], mem["grad"]) <= 2e-2
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "results": results, "pass": verdicts}, f, indent=2)
    raise SystemExit(0 if all(verdicts.values()) else 1)


if __name__ == "__main__":
    main()
