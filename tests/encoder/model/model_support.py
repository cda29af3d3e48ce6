"""Shared helpers for the encoder model tests."""

from __future__ import annotations

import torch

from encoder.model import OVEncoder, get_config


def random_model(**overrides) -> OVEncoder:
    """A seeded ``debug`` encoder whose weight matrices are redrawn at std 0.2, so attention and RoPE
    have visible effects (the default init is too close to uniform attention to test them)."""
    torch.manual_seed(0)
    model = OVEncoder(get_config("debug", **overrides))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    return model
