"""OV-Encoder pretraining pieces that need no trainer: the partial-FC margin softmax and the concept bank."""

from .partial_fc import PartialFC, PartialFCOutput, dense_margin_softmax, draw_labels, shard_bounds

__all__ = ["PartialFC", "PartialFCOutput", "dense_margin_softmax", "draw_labels", "shard_bounds"]
