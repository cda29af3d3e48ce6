"""Our packed model vs dense references written from the notes, on the same random weights."""

from __future__ import annotations

import pytest
import torch
from ovenc_reference import ref_encode_frames, ref_encode_pack

from encoder.model import OVEncoder, get_config, pack_images, pack_videos, video_time_grid

CFG = get_config("debug")
H, L, P = CFG.num_attention_heads, CFG.num_hidden_layers, CFG.patch_size


def _model(backend: str = "auto", **kw) -> OVEncoder:
    torch.manual_seed(0)
    model = OVEncoder(get_config("debug", attn_backend=backend, **kw))
    with torch.no_grad():  # non-trivial norms / biases so every parameter matters
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.15 if "probe" not in name else 1.0)
    return model


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5, msg: str = "") -> None:
    """fp32 closeness relative to the tensor's scale (sums over tokens accumulate rounding)."""
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a, b, atol=tol * scale, rtol=tol, msg=msg or None)


def _sd(model: OVEncoder) -> dict:
    return dict(model.named_parameters())


def test_image_matches_released_dense_rules():
    model = _model()
    img = torch.randn(3, 2 * P, 3 * P)
    with torch.no_grad():
        out = model.forward_images([img], output_layer=-2)
        last, states, pooled = ref_encode_frames(_sd(model), img[None], [0], H, L, P)
    torch.testing.assert_close(out.last_hidden_state, last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.hidden_states, states[-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled[0], pooled, atol=1e-5, rtol=1e-5)


def test_video_matches_released_dense_rules():
    model = _model()
    video = torch.randn(3, 4, 2 * P, 2 * P)  # [C, T, H, W]
    t_ids = video_time_grid(4).tolist()
    assert t_ids == [0, 21, 42, 63]
    with torch.no_grad():
        out = model.forward_videos(video[None])
        last, _, pooled = ref_encode_frames(_sd(model), video.transpose(0, 1), t_ids, H, L, P)
    torch.testing.assert_close(out.last_hidden_state, last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled[0], pooled, atol=1e-5, rtol=1e-5)


def _mixed_pack():
    torch.manual_seed(1)
    imgs = pack_images([torch.randn(3, 2 * P, 2 * P), torch.randn(3, P, 3 * P)], P)
    vid = pack_videos(torch.randn(1, 3, 2, P, 2 * P), P)
    pixels = torch.cat([imgs.pixels, vid.pixels])
    positions = torch.cat([imgs.positions, vid.positions])
    cu = torch.tensor([0, 4, 7, 11], dtype=torch.int32)
    return pixels, positions, cu


@pytest.mark.parametrize("backend", ["sdpa_loop", "sdpa_mask"])
def test_backend_matches_dense_masked_reference_fwd_and_grad(backend):
    model = _model(backend)
    pixels, positions, cu = _mixed_pack()
    params = _sd(model)

    def run(fn):
        model.zero_grad(set_to_none=True)
        x = pixels.clone().requires_grad_(True)
        last, hidden, pooled = fn(x)
        loss = (last * torch.linspace(-1, 1, last.numel()).view_as(last)).sum() + (pooled**2).sum()
        loss = loss + (hidden * 0.3).sum()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in params.items()}
        return (last.detach(), hidden.detach(), pooled.detach()), x.grad, grads

    def ours(x):
        o = model(x, positions, cu, output_layer=1)
        return o.last_hidden_state, o.hidden_states, o.pooled

    def ref(x):
        last, states, pooled = ref_encode_pack(params, x, positions, cu.tolist(), H, L)
        return last, states[1], pooled

    out_a, gx_a, gw_a = run(ours)
    out_b, gx_b, gw_b = run(ref)
    for a, b in zip(out_a, out_b):
        _close(a, b)
    _close(gx_a, gx_b)
    assert set(gw_a) == set(gw_b)
    for k in gw_a:
        _close(gw_a[k], gw_b[k], msg=k)


def test_rms_norm_variant_runs():
    model = _model(layer_norm_type="rms_norm")
    out = model.forward_images(torch.randint(0, 256, (2, 3, P, 2 * P), dtype=torch.uint8))
    assert out.pooled.shape == (2, CFG.hidden_size) and torch.isfinite(out.pooled).all()
    assert "layernorm_pre.bias" not in model.state_dict()
