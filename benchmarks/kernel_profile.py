"""GPU time of one training step by kernel family, from ``torch.profiler`` (used by bench_lmm.py --profile).

Families (first match of the kernel name, lower-cased): communication (nccl), attention (flash / fmha /
cudnn attention / varlen), optimizer (adam, multi_tensor), GEMM (gemm, cutlass, cublas, nvjet, xmma,
matmul), copy/cast (copy kernels, dtype conversions), elementwise / reduction (everything else). The copy/cast
kernels are also attributed to the aten ops that launched them, with their input shapes and dtypes, so
each can be traced to its place in the model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("communication", ("nccl",)),
    ("attention", ("flash", "fmha", "attention", "attn", "varlen", "sdpa")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("gemm", ("gemm", "cutlass", "cublas", "nvjet", "xmma", "matmul", "sm90_", "sm80_")),
    ("copy/cast", ("copy", "convert", "_cast", "cast_")),
)


def kernel_family(name: str) -> str:
    """The family of a CUDA kernel name. ``gpu_kernel_impl_nocast<...>`` is torch's template for every
    elementwise kernel (not a cast): it is matched by its functor (a copy or not), never by "cast"."""
    low = name.lower().replace("impl_nocast", "impl")
    for family, keys in FAMILIES:
        if any(k in low for k in keys):
            return family
    return "elementwise/other"


def _device_time_us(event) -> float:
    for attr in ("device_time_total", "cuda_time_total", "self_device_time_total"):
        value = getattr(event, attr, None)
        if value:
            return float(value)
    return 0.0


def profile_step(step: Callable[[], object], trace: Path | None, top: int = 12) -> dict[str, float]:
    """Run ``step`` once under the profiler; print GPU ms per family and the copy/cast ops; write the
    Chrome trace to ``trace``. Returns ms per family."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities, record_shapes=True) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    families: dict[str, float] = {}
    kernels: dict[str, float] = {}
    for evt in prof.events():
        if getattr(evt, "device_type", None) != torch.autograd.DeviceType.CUDA or getattr(
            evt, "is_user_annotation", False
        ):
            continue  # user annotations (e.g. "Optimizer.step#AdamW.step") span kernels counted on their own
        us = float(getattr(evt, "device_time", 0.0) or getattr(evt, "cuda_time", 0.0) or 0.0)
        fam = kernel_family(evt.name)
        families[fam] = families.get(fam, 0.0) + us / 1000
        kernels[evt.name] = kernels.get(evt.name, 0.0) + us / 1000
    total = sum(families.values())
    print(f"GPU time of one step by kernel family ({total:.0f} ms of kernels):")
    for fam, ms in sorted(families.items(), key=lambda kv: -kv[1]):
        print(f"  {fam:<20}{ms:>9.1f} ms {ms / max(total, 1e-9):>6.1%}")
    print(f"top {top} kernels:")
    for name, ms in sorted(kernels.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ms:>8.1f} ms  [{kernel_family(name)}] {name[:110]}")
    ops = [
        e
        for e in prof.key_averages(group_by_input_shape=True)
        if e.key == "aten::copy_" and _device_time_us(e) > 0
    ]  # the op under .to / .contiguous / casts
    ops.sort(key=lambda e: -_device_time_us(e))
    print(f"copy/cast ops by GPU time (top {top}; input shapes):")
    for e in ops[:top]:
        print(f"  {_device_time_us(e) / 1000:>8.1f} ms  {e.count:>5}x {str(e.input_shapes)[:110]}")
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
        print(f"trace: {trace}")
    return families


__all__ = ["FAMILIES", "kernel_family", "profile_step"]
