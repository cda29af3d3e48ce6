"""Peak memory of the LM loss with full logits against the chunked LM-head loss (CPU, fresh processes).

One forward + backward of the next-token loss over ``tokens`` target positions with Qwen3's vocabulary
(V = 151,936): :func:`llava_ov.model.causal_lm_loss` on ``head(hidden)`` (the ``[L, V]`` logits, their
fp32 copy and gradient) against :func:`llava_ov.model.lm_head_loss` (chunks of ≤ 1 GiB of fp32 logits).
fp32, hidden width ``--dim`` (the logits' size does not depend on it; 256 keeps the CPU run short).
Each cell runs in a new process; the inputs and the head exist before the measurement starts.

    python benchmarks/bench_loss.py [--tokens 4096,16384 --full-up-to 4096]
"""

from __future__ import annotations

import argparse
import time

from peak_memory import in_fresh_process, peak_added_mb


def _cell(mode: str, tokens: int, dim: int, vocab: int) -> tuple[float | None, float]:
    import torch
    from torch import nn

    from llava_ov.model import causal_lm_loss, lm_head_loss

    torch.manual_seed(0)
    head = nn.Linear(dim, vocab, bias=False)
    hidden = torch.randn(1, tokens + 1, dim, requires_grad=True)
    labels = torch.randint(0, vocab, (1, tokens + 1))

    def step() -> None:
        loss = (
            causal_lm_loss(head(hidden), labels)[0]
            if mode == "full"
            else lm_head_loss(hidden, labels, head)[0]
        )
        loss.backward()

    start = time.perf_counter()
    mb = peak_added_mb(step)
    return mb, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="4096,16384")
    ap.add_argument("--full-up-to", type=int, default=4096, help="largest size run with full logits (RAM)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=151936)
    args = ap.parse_args()
    print(f"loss forward + backward, V={args.vocab}, d={args.dim}, fp32; peak RSS added (fresh process each)")
    print(f"{'targets':>8} {'mode':<8} {'peak MB':>9} {'[L, V] fp32 MB':>15} {'seconds':>8}")
    for tokens in [int(t) for t in args.tokens.split(",")]:
        logits_mb = tokens * args.vocab * 4 / 2**20
        for mode in ("full", "chunked"):
            if mode == "full" and tokens > args.full_up_to:
                print(f"{tokens:>8} {mode:<8} {'skipped':>9} {logits_mb:>15.0f}")
                continue
            mb, seconds = in_fresh_process(_cell, mode, tokens, args.dim, args.vocab)
            print(
                f"{tokens:>8} {mode:<8} {mb if mb is not None else float('nan'):>9.0f} {logits_mb:>15.0f} "
                f"{seconds:>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
