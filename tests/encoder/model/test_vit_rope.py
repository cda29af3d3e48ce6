"""3D RoPE: the released (compatible) rule on hand-checked values, and the clean rule's relativity."""

from __future__ import annotations

import math

import pytest
import torch

from encoder.model import OVEncoder, get_config, pack_images
from encoder.model.rope import apply_rope, rope_angles, rope_cos_sin, rotate_pairs

SIZES = (4, 6, 6)  # head_dim 32 -> 16 frequencies split 4:6:6


def _rope(x: torch.Tensor, pos: tuple[int, int, int], mode: str) -> torch.Tensor:
    cos, sin = rope_cos_sin(torch.tensor([pos]), SIZES, 10000.0, mode)
    return apply_rope(x.view(1, 1, -1), cos, sin).view(-1)


def _onehot(i: int, n: int = 32) -> torch.Tensor:
    x = torch.zeros(n)
    x[i] = 1.0
    return x


def test_axis_sizes_large_is_8_12_12():
    assert get_config("large").rope_axis_sizes == (8, 12, 12)
    assert get_config("debug").rope_axis_sizes == SIZES


def test_rotate_pairs_interleaved():
    assert rotate_pairs(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-2.0, 1.0, -4.0, 3.0]


def test_angles_concat_t_h_w_with_per_axis_frequencies():
    ang = rope_angles(torch.tensor([[2, 3, 5]]), SIZES, 10000.0)[0]
    expect = [2 * 10000 ** (-i / 4) for i in range(4)]
    expect += [3 * 10000 ** (-i / 6) for i in range(6)]
    expect += [5 * 10000 ** (-i / 6) for i in range(6)]
    torch.testing.assert_close(ang, torch.tensor(expect), rtol=1e-6, atol=1e-6)


def test_compatible_rule_hand_checked():
    # t = 1: the 16 base angles are f = [1, 0.1, 0.01, 0.001, 0 x 12]; full = cat([f, f]).
    out = _rope(_onehot(0), (1, 0, 0), "compatible")
    # pair (0, 1): out[0] = x0 cos(f0) - x1 sin(f0) = cos(1); out[1] = x1 cos(f1) + x0 sin(f1) = sin(0.1)
    expect = torch.zeros(32)
    expect[0], expect[1] = math.cos(1.0), math.sin(0.1)
    torch.testing.assert_close(out, expect, atol=1e-7, rtol=0)
    out = _rope(_onehot(17), (1, 0, 0), "compatible")  # second copy: index 16 + k carries f[k]
    expect = torch.zeros(32)
    expect[16], expect[17] = -math.sin(1.0), math.cos(0.1)
    torch.testing.assert_close(out, expect, atol=1e-7, rtol=0)
    # h axis: index 8 carries f[8] = h * theta^(-4/6), index 9 carries f[9] = h * theta^(-5/6)
    out = _rope(_onehot(8), (0, 2, 0), "compatible")
    expect = torch.zeros(32)
    expect[8], expect[9] = math.cos(2 * 10000 ** (-4 / 6)), math.sin(2 * 10000 ** (-5 / 6))
    torch.testing.assert_close(out, expect, atol=1e-7, rtol=0)


def test_clean_rule_is_a_rotation_per_pair():
    out = _rope(_onehot(0), (1, 0, 0), "clean")
    expect = torch.zeros(32)
    expect[0], expect[1] = math.cos(1.0), math.sin(1.0)  # the pair shares angle f0 = 1
    torch.testing.assert_close(out, expect, atol=1e-7, rtol=0)
    x = torch.randn(32)
    assert torch.allclose(_rope(x, (7, 3, 9), "clean").norm(), x.norm(), atol=1e-5)


def _scores(q, k, pos, mode):
    cos, sin = rope_cos_sin(pos, SIZES, 10000.0, mode)
    return torch.einsum("ihd,jhd->hij", apply_rope(q, cos, sin), apply_rope(k, cos, sin))


def test_clean_scores_depend_only_on_position_differences():
    torch.manual_seed(0)
    q, k = torch.randn(10, 2, 32), torch.randn(10, 2, 32)
    pos = torch.stack(
        [torch.randint(0, 20, (10,)), torch.randint(0, 16, (10,)), torch.randint(0, 16, (10,))], 1
    )
    shifted = pos + torch.tensor([30, 11, 5])
    torch.testing.assert_close(
        _scores(q, k, pos, "clean"), _scores(q, k, shifted, "clean"), atol=1e-4, rtol=1e-5
    )
    # the released rule is not relative (sanity check that the property is meaningful)
    assert not torch.allclose(
        _scores(q, k, pos, "compatible"), _scores(q, k, shifted, "compatible"), atol=1e-2
    )


@pytest.mark.parametrize(
    "mode,abs_pos,invariant",
    [("clean", "none", True), ("compatible", "none", False), ("clean", "sincos3d", False)],
)
def test_model_shift_invariance(mode, abs_pos, invariant):
    """Clean RoPE alone sees only position differences; an absolute sin-cos embedding breaks that."""
    torch.manual_seed(0)
    model = OVEncoder(get_config("debug", rope_mode=mode, abs_pos_embed=abs_pos))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    packed = pack_images(torch.randn(2, 3, 28, 42), 14)
    shift = torch.tensor([9, 4, 6], dtype=torch.int32)
    with torch.no_grad():
        a = model(packed.pixels, packed.positions, packed.cu_seqlens)
        b = model(packed.pixels, packed.positions + shift, packed.cu_seqlens)
    same = torch.allclose(a.last_hidden_state, b.last_hidden_state, atol=1e-4)
    assert same is invariant
    if invariant:
        torch.testing.assert_close(a.pooled, b.pooled, atol=1e-4, rtol=1e-4)
