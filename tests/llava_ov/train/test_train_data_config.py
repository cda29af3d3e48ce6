"""A stage's data config: the run's and the stage's ``data`` are typed (``Partial[DataConfig]``, strict at
load), and each stage's DataConfig is resolved once, when the run config loads, then shared by every
reader."""

from __future__ import annotations

import pytest
from train_support import DEFAULT_YAML

from encoder.typed_config import ConfigError, merge_config
from llava_ov.train import config as train_config
from llava_ov.train.build import stage_data_config
from llava_ov.train.config import TrainConfig, load_train_config
from llava_ov.train.trainer import LMMTask


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.max_tokns=64", r"unknown config key 'data\.max_tokns' \(did you mean 'max_tokens'\?\)"),
        ("sft.data.shufle_buffer=8", r"unknown config key 'sft\.data\.shufle_buffer' \(did you mean"),
        ("data.synthetic.num_tran=4", r"unknown config key 'data\.synthetic\.num_tran' \(did you mean"),
        ("data.max_tokens=many", r"'data\.max_tokens' must be an integer"),
    ],
)
def test_a_wrong_data_key_or_value_fails_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(DEFAULT_YAML, [override])


def test_run_and_stage_overrides_are_applied_in_order():
    cfg = load_train_config(DEFAULT_YAML, ["data.max_tokens=2048", "data.seed=5", "sft.data.seed=7"])
    assert cfg.data["max_tokens"] == 2048 and cfg.data["num_workers"] == 1  # typed, YAML keys kept
    assert cfg.data["codec"] == {"select": {"min_score": 4.0}}
    align, sft = cfg.stage_data("align"), cfg.stage_data("sft")
    assert align.max_tokens == sft.max_tokens == 2048 and align.num_workers == 1
    assert (align.seed, sft.seed) == (5, 7)
    assert sft.codec["select"]["min_score"] == 4.0  # run `data` codec kept under the budget rule's keys
    assert sft.synthetic is not None  # from the data_config file


def test_the_data_config_is_resolved_once_at_load_and_shared(monkeypatch, tmp_path):
    calls = []
    load = train_config.load_data_config
    monkeypatch.setattr(train_config, "load_data_config", lambda path: calls.append(path) or load(path))
    cfg = load_train_config(
        DEFAULT_YAML, [f"data.synthetic.out_dir={tmp_path}"], stage="sft"
    )  # resolved here, for the one stage it runs
    assert len(calls) == 1
    data = cfg.stage_data("sft")
    assert stage_data_config(cfg, "sft") is data
    assert LMMTask(cfg, "sft", tokenizer=None).data_cfg is data
    assert len(calls) == 1  # no reader resolved it again
    again = merge_config(cfg, {"data": {"max_tokens": 1024}})  # a new config resolves afresh
    assert again.stage_data("sft").max_tokens == 1024 and data.max_tokens == 600
    assert TrainConfig().stage_data("align") is not None  # a config built in Python: on first use


def test_the_resolved_data_is_no_config_key():
    cfg = load_train_config(DEFAULT_YAML)
    assert (
        cfg == load_train_config(DEFAULT_YAML)
        and "_stage_data" not in train_config.TrainConfig.__dataclass_fields__
    )
    with pytest.raises(ConfigError, match="unknown config key '_stage_data'"):
        load_train_config(DEFAULT_YAML, ["_stage_data={}"])
