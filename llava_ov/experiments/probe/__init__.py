"""Attentive probe on a frozen vision tower: video classification at an equal LLM-token budget.

A clip is patchified by the budget rule (:mod:`llava_ov.model.budget`: ``budget`` LLM visual tokens per
clip for any tower and input mode), the frozen tower runs once per clip under ``torch.no_grad`` and its
tokens stay in memory, then an attention-pooling probe (one learned query → LayerNorm → Linear) is
trained with AdamW and scored top-1 on a held-out split. The CLI is ``scripts/probe.py``; where it sits
among the packages: ``docs/architecture.md``.
"""

from llava_ov.experiments.probe.config import ProbeConfig, ProbeDataConfig, SyntheticProbeConfig, with_tower
from llava_ov.experiments.probe.data import (
    ClipRef,
    ClipSet,
    folder_clips,
    generate_synthetic,
    load_clips,
    shard_clips,
)
from llava_ov.experiments.probe.model import AttentiveProbe
from llava_ov.experiments.probe.run import (
    Features,
    extract_features,
    format_table,
    plan_and_codec,
    run_probe,
    summary_record,
    train_probe,
    write_result,
)

__all__ = [
    "AttentiveProbe",
    "ClipRef",
    "ClipSet",
    "Features",
    "ProbeConfig",
    "ProbeDataConfig",
    "SyntheticProbeConfig",
    "extract_features",
    "folder_clips",
    "format_table",
    "generate_synthetic",
    "load_clips",
    "plan_and_codec",
    "run_probe",
    "shard_clips",
    "summary_record",
    "train_probe",
    "with_tower",
    "write_result",
]
