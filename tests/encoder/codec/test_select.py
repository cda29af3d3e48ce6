"""Patch selection under a budget: context, global/bucket/bit-cost modes, fallback, errors."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.codec.select import (
    SelectConfig,
    Selection,
    allocate,
    bitcost_groups,
    fallback_patches,
    frame_bit_costs,
    resolve_budget,
    select_patches,
)

T, GH, GW = 16, 4, 4
N = GH * GW  # patches per frame


def _scores(seed: int = 0, t: int = T) -> np.ndarray:
    return np.random.default_rng(seed).random((t, GH, GW), dtype=np.float32) + 0.01


def _per_frame(sel: Selection, t: int = T) -> np.ndarray:
    return np.bincount(sel.frame_index, minlength=t)


def _assert_well_formed(sel: Selection, scores: np.ndarray) -> None:
    assert sel.frame_index.dtype == np.int64 and sel.row.dtype == np.int64 and sel.col.dtype == np.int64
    assert sel.score.dtype == np.float32 and sel.is_context.dtype == bool
    order = np.lexsort((sel.col, sel.row, sel.frame_index))
    np.testing.assert_array_equal(order, np.arange(len(sel)))
    flat = np.ravel_multi_index((sel.frame_index, sel.row, sel.col), scores.shape)
    assert len(np.unique(flat)) == len(sel)
    np.testing.assert_array_equal(sel.score, scores[sel.frame_index, sel.row, sel.col])


# ---- budget -----------------------------------------------------------------------------------------
def test_budget_count_and_fraction():
    s = _scores()
    assert len(select_patches(s, SelectConfig(budget=40))) == 40
    assert len(select_patches(s, SelectConfig(budget=0.25))) == round(0.25 * T * N)
    assert len(select_patches(s, SelectConfig(budget=1.0))) == T * N
    assert len(select_patches(s, SelectConfig(budget=T * N))) == T * N
    capped = select_patches(s, SelectConfig(budget=T * N + 1))  # a budget above the clip's patches is a cap
    assert len(capped) == T * N and capped.capped and not select_patches(s, SelectConfig(budget=T * N)).capped
    assert resolve_budget(np.int64(7), 100) == 7 and resolve_budget(1024, 256) == 256


@pytest.mark.parametrize(
    "budget, match",
    [
        (0, "positive"),
        (-3, "positive"),
        (0.0, r"\(0, 1\]"),
        (1.5, r"\(0, 1\]"),
        (-0.2, r"\(0, 1\]"),
        (1e-6, "rounds to 0"),
        (True, "int count"),
        ("100", "int count"),
    ],
)
def test_bad_budget(budget, match):
    with pytest.raises(ValueError, match=match):
        select_patches(_scores(), SelectConfig(budget=budget))


# ---- context ----------------------------------------------------------------------------------------
def test_context_first_is_dense_and_flagged():
    sel = select_patches(_scores(), SelectConfig(budget=3 * N))
    assert _per_frame(sel)[0] == N
    np.testing.assert_array_equal(sel.is_context, sel.frame_index == 0)
    assert sel.is_context.sum() == N and not sel.fallback and sel.groups is None


def test_context_iframes_and_none():
    types = ["I", "P", "P", "P", "P", "I"] + ["P"] * (T - 6)
    sel = select_patches(_scores(), SelectConfig(budget=4 * N, context="iframes"), pict_types=types)
    counts = _per_frame(sel)
    assert counts[0] == N and counts[5] == N and sel.is_context.sum() == 2 * N
    assert set(sel.frame_index[sel.is_context]) == {0, 5}
    no_i = select_patches(_scores(), SelectConfig(budget=2 * N, context="iframes"), pict_types=["P"] * T)
    assert set(no_i.frame_index[no_i.is_context]) == {0}  # no sampled I-frame: frame 0 is the context
    none = select_patches(_scores(), SelectConfig(budget=N, context="none"))
    assert not none.is_context.any() and len(none) == N


def test_context_errors():
    with pytest.raises(ValueError, match="context frames alone need 32 patches"):
        select_patches(
            _scores(), SelectConfig(budget=N + 3, context="iframes"), pict_types=["I", "I"] + ["P"] * 14
        )
    with pytest.raises(ValueError, match="context frames alone"):
        select_patches(_scores(), SelectConfig(budget=N - 1))
    with pytest.raises(ValueError, match="needs pict_types"):
        select_patches(_scores(), SelectConfig(context="iframes", budget=40))
    with pytest.raises(ValueError, match="entries for 16 frames"):
        select_patches(_scores(), SelectConfig(context="iframes", budget=40), pict_types=["I"])


# ---- global -----------------------------------------------------------------------------------------
def test_global_picks_true_top_k():
    s = _scores(3)
    k = 2 * N + 11
    sel = select_patches(s, SelectConfig(budget=k))
    _assert_well_formed(sel, s)
    rest = s[1:].ravel()
    threshold = np.sort(rest)[::-1][k - N - 1]
    picked = sel.score[~sel.is_context]
    assert len(picked) == k - N and picked.min() == threshold
    assert (rest > threshold).sum() == k - N - 1


def test_constant_scores_tie_break_and_determinism():
    s = np.ones((T, GH, GW), np.float32)
    sel = select_patches(s, SelectConfig(budget=N + 5))
    assert (sel.frame_index[N:] == 1).all()
    np.testing.assert_array_equal(sel.row[N:], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(sel.col[N:], [0, 1, 2, 3, 0])
    again = select_patches(s.copy(), SelectConfig(budget=N + 5))
    np.testing.assert_array_equal(again.frame_index, sel.frame_index)
    np.testing.assert_array_equal(again.col, sel.col)


def test_bad_mode_strings_list_choices():
    with pytest.raises(ValueError, match="global.*buckets.*bitcost"):
        select_patches(_scores(), SelectConfig(mode="topk"))
    with pytest.raises(ValueError, match="first.*iframes.*none"):
        select_patches(_scores(), SelectConfig(context="all"))
    with pytest.raises(ValueError, match=r"\[T, gh, gw\]"):
        select_patches(np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="finite"):
        select_patches(np.full((T, GH, GW), np.nan, np.float32))
    with pytest.raises(ValueError, match="num_buckets"):
        select_patches(_scores(), SelectConfig(mode="buckets", num_buckets=0))


# ---- buckets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("context", ["first", "none"])
def test_buckets_share_budget_even_when_saliency_is_in_one_bucket(context):
    s = np.full((T, GH, GW), 0.01, np.float32)
    s[6:8] = 5.0  # all the saliency in bucket 3 of 8
    cfg = SelectConfig(budget=3 * N + 7, mode="buckets", num_buckets=8, context=context)
    sel = select_patches(s, cfg)
    _assert_well_formed(sel, s)
    bucket = sel.frame_index[~sel.is_context] * 8 // T
    got = np.bincount(bucket, minlength=8)
    cand = np.bincount(np.arange(1 if context == "first" else 0, T) * 8 // T, minlength=8)
    remaining = len(sel) - sel.is_context.sum()
    assert np.abs(got - remaining * cand / cand.sum()).max() <= 1
    assert (sel.score[~sel.is_context][bucket == 3] == 5.0).all()
    global_sel = select_patches(s, SelectConfig(budget=3 * N + 7, context=context))
    assert (global_sel.score == 5.0).sum() == 2 * N  # global takes all of bucket 3 first


def test_allocate_caps_and_redistributes():
    np.testing.assert_array_equal(allocate(10, np.array([1.0, 1.0, 1.0]), np.array([2, 10, 10])), [2, 4, 4])
    np.testing.assert_array_equal(allocate(7, np.array([1.0, 1.0, 1.0]), np.array([9, 9, 9])), [3, 2, 2])
    np.testing.assert_array_equal(allocate(5, np.array([0.0, 1.0]), np.array([4, 2])), [3, 2])
    np.testing.assert_array_equal(allocate(6, np.zeros(3), np.array([2, 2, 2])), [2, 2, 2])
    with pytest.raises(ValueError, match="capacity"):
        allocate(7, np.ones(2), np.array([3, 3]))


# ---- static fallback --------------------------------------------------------------------------------
def test_static_clip_falls_back_to_uniform_dense_frames():
    s = np.zeros((T, GH, GW), np.float32)
    sel = select_patches(s, SelectConfig(budget=4 * N + 5))
    _assert_well_formed(sel, s)
    assert sel.fallback and len(sel) == 4 * N + 5
    counts = _per_frame(sel)
    # candidates 1..15, F = 4 frames at slice centres: 15 * (i + .5) / 4 -> 1, 5, 9, 14 (last partial)
    assert counts[0] == N and counts[[2, 6, 10]].tolist() == [N, N, N] and counts[14] == 5
    assert counts.sum() == 4 * N + 5
    static_bits = select_patches(
        s, SelectConfig(budget=2 * N, mode="bitcost"), packet_sizes=np.ones(T), frame_ids=np.arange(T)
    )
    assert static_bits.fallback and static_bits.groups is None


def test_fallback_patches_spreads_a_partial_frame_and_threshold_applies():
    # one frame: the centre candidate (index 2 of 4 -> frame 3), 2 of its 4 patches spread: 1 and 3
    np.testing.assert_array_equal(fallback_patches(np.arange(1, 5), 4, 2), [3 * 4 + 1, 3 * 4 + 3])
    s = np.full((T, GH, GW), 0.05, np.float32)
    assert select_patches(s, SelectConfig(budget=2 * N, static_threshold=0.1)).fallback
    assert not select_patches(s, SelectConfig(budget=2 * N)).fallback


# ---- bit cost ---------------------------------------------------------------------------------------
def test_frame_bit_costs_windows():
    sizes = np.array([100, 1, 2, 3, 4, 5, 6, 7], np.int64)
    bits, span = frame_bit_costs(sizes, np.array([0, 2, 2, 5]))
    np.testing.assert_array_equal(bits, [100, 3, 0, 12])  # frames between samples go to the next sample
    np.testing.assert_array_equal(span, [1, 2, 0, 3])
    with pytest.raises(ValueError, match="non-decreasing"):
        frame_bit_costs(sizes, np.array([0, 3, 2]))
    with pytest.raises(ValueError, match="index into packet_sizes"):
        frame_bit_costs(sizes, np.array([0, 8]))


def test_bitcost_groups_follow_jumps():
    rate = np.array([1.0] * 5 + [9.0] * 3 + [2.0] * 8)
    groups = bitcost_groups(rate, np.ones(16), 3)
    np.testing.assert_array_equal(groups, [0] * 5 + [1] * 3 + [2] * 8)
    flat = bitcost_groups(np.ones(16), np.ones(16), 4)
    np.testing.assert_array_equal(np.bincount(flat), [4, 4, 4, 4])  # flat rate: near-equal groups
    assert bitcost_groups(np.ones(3), np.ones(3), 8).tolist() == [0, 1, 2]


def test_bitcost_spends_more_where_more_bits():
    t, stride = 32, 3
    frame_ids = np.arange(t) * stride
    sizes = np.full(t * stride, 100, np.int64)
    sizes[0] = 5000  # the I-frame (context)
    sizes[16 * stride + 1 : 24 * stride + 1] = 400  # sampled frames 17..24 spend 4x the bits
    s = _scores(5, t)
    sel = select_patches(
        s, SelectConfig(budget=N + 100, mode="bitcost", max_groups=4), packet_sizes=sizes, frame_ids=frame_ids
    )
    _assert_well_formed(sel, s)
    assert sel.groups is not None and sel.groups.shape == (t,) and sel.groups.max() < 4
    assert (np.diff(sel.groups) >= 0).all() and len(np.unique(sel.groups)) == 4
    jump = np.flatnonzero(np.diff(sel.groups)) + 1
    assert 17 in jump and 25 in jump
    per_frame = _per_frame(sel, t)[1:]
    heavy = per_frame[16:24].sum()
    assert heavy > per_frame.sum() / 2  # 8 of 31 frames, 4x the bits -> 32/55 of the budget
    assert abs(heavy - 100 * 32 / 55) <= 1


def test_bitcost_needs_packets():
    with pytest.raises(ValueError, match="packet_sizes and frame_ids"):
        select_patches(_scores(), SelectConfig(mode="bitcost", budget=40))
    with pytest.raises(ValueError, match="entries for 16 frames"):
        select_patches(
            _scores(),
            SelectConfig(mode="bitcost", budget=40),
            packet_sizes=np.ones(20),
            frame_ids=np.arange(3),
        )


# ---- min_score: the budget as a cap -----------------------------------------------------------------
def _sparse_scores() -> np.ndarray:
    """Frame 0 anything; 10 informative patches (scores 2..11) over frames 3 and 9, the rest noise <= 0.5."""
    s = np.random.default_rng(3).random((T, GH, GW), dtype=np.float32) * 0.5
    hot = [
        (3, 0, 0),
        (3, 0, 1),
        (3, 1, 1),
        (3, 2, 2),
        (9, 0, 3),
        (9, 1, 3),
        (9, 2, 3),
        (9, 3, 3),
        (9, 3, 0),
        (3, 3, 1),
    ]
    for i, (t, h, w) in enumerate(hot):
        s[t, h, w] = 2.0 + i
    return s


@pytest.mark.parametrize("mode", ["global", "buckets"])
def test_min_score_keeps_only_informative_patches(mode):
    s = _sparse_scores()
    full = select_patches(s, SelectConfig(budget=N + 30, mode=mode))
    assert len(full) == N + 30  # default: the budget is filled, noise included
    sel = select_patches(s, SelectConfig(budget=N + 30, mode=mode, min_score=1.0))
    _assert_well_formed(sel, s)
    assert len(sel) == N + 10 and sel.is_context.sum() == N
    assert (sel.score[~sel.is_context] > 1.0).all()
    assert set(np.unique(sel.frame_index[~sel.is_context])) == {3, 9}


def test_min_score_is_a_cap_not_a_quota():
    s = _sparse_scores()
    sel = select_patches(s, SelectConfig(budget=N + 4, min_score=1.0))
    assert len(sel) == N + 4  # more informative patches than room: the best 4 (scores 8..11)
    np.testing.assert_array_equal(np.sort(sel.score[~sel.is_context]), [8.0, 9.0, 10.0, 11.0])
    below = select_patches(s, SelectConfig(budget=N + 30, min_score=100.0))
    assert len(below) == N and below.is_context.all() and not below.fallback


def test_min_score_leaves_the_static_fallback_alone_and_is_validated():
    zero = np.zeros((T, GH, GW), np.float32)
    sel = select_patches(zero, SelectConfig(budget=3 * N, min_score=1.0))
    assert sel.fallback and len(sel) == 3 * N
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="min_score"):
            select_patches(zero, SelectConfig(budget=3 * N, min_score=bad))
