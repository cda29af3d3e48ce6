"""Experiments on top of the library: the controlled comparison and the attentive probe.

* :mod:`llava_ov.experiments.compare` — towers and input modes at equal LLM visual-token budgets, same
  data, same steps: one training run per cell (``python -m llava_ov.train.cli``), scored by the trainer's
  held-out evaluator. CLI: ``scripts/compare.py``.
* :mod:`llava_ov.experiments.probe` — an attentive probe on a frozen vision tower (video classification
  at an equal LLM-token budget). CLI: ``scripts/probe.py``.

This package file imports nothing: import what you use from its module.
"""
