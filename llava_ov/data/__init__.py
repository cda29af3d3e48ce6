"""Data layer of the LMM: webdataset shards → decoded media → tokenized items → packed batches.

How the data layer sits among the packages: ``docs/architecture.md``.
"""

from llava_ov.data.convert import ConvertResult, convert_llava_json
from llava_ov.data.dataset import (
    LMMBatch,
    LMMCollator,
    LMMItem,
    MediaBatch,
    collate_items,
    make_item,
    make_prompt_item,
    pack_items,
    pack_media,
    patch_tokens,
)
from llava_ov.data.mixture import (
    DataConfig,
    LMMLoader,
    MixtureDataset,
    SourceConfig,
    build_loader,
    codec_config,
    dist_slot,
    eval_items,
    load_data_config,
    prepare_data,
)
from llava_ov.data.samples import MediaSample, decode_sample
from llava_ov.data.shards import ReadConfig, ShardWriter, expand_shards, iter_raw_samples
from llava_ov.data.stats import DataStats, Skipped
from llava_ov.data.synthetic_qa import SyntheticQAConfig, generate_synthetic_qa, tokenizer_texts

__all__ = [
    "ConvertResult",
    "DataConfig",
    "DataStats",
    "LMMBatch",
    "LMMCollator",
    "LMMItem",
    "LMMLoader",
    "MediaBatch",
    "MediaSample",
    "MixtureDataset",
    "ReadConfig",
    "ShardWriter",
    "Skipped",
    "SourceConfig",
    "SyntheticQAConfig",
    "build_loader",
    "codec_config",
    "collate_items",
    "convert_llava_json",
    "decode_sample",
    "dist_slot",
    "eval_items",
    "expand_shards",
    "generate_synthetic_qa",
    "iter_raw_samples",
    "load_data_config",
    "make_item",
    "make_prompt_item",
    "pack_items",
    "pack_media",
    "patch_tokens",
    "prepare_data",
    "tokenizer_texts",
]
