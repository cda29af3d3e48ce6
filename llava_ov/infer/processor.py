"""The processor: what turns (text, media) into model inputs, saved with every stage export.

A :class:`LlavaOVProcessor` holds the tokenizer, the chat format (:class:`ChatFormat`: system prompt,
think block) and the codec settings (:class:`CodecConfig`) the model was trained with, plus the rule
that counts LLM tokens per media item (the projector's merge). Training, ``scripts/chat.py``, the
trainer's held-out evaluation and the lmms-eval plugin all build prompts through it, so a checkpoint is
always asked questions the way it was taught.

Media items (:data:`Media`): a video file path (patchified with ``codec``, through an optional
:class:`PatchCache`), a still-image path or a ``PIL.Image`` (``image`` mode: native resolution,
``codec.image_max_side``), a clip given as frames — a folder of image files (sorted by name) or a list
of ``PIL.Image`` frames or image paths — or a ready :class:`PatchSelection`. A clip of frames is
uniformly sampled to the checkpoint's frame count (:func:`clip_frame_count`: ``decode.num_frames`` in
the codec modes, ``num_frames`` in the dense ones; only the sampled files are opened), encoded to a
temporary H.264 file and patchified like a video with ``codec`` (``frame_ids`` index the given frames;
in the codec modes the motion is then between consecutive *sampled* frames). Folders and frame lists
do not go through the patch cache. Bad media raise :class:`VideoDecodeError` naming the file; a
folder without image files is "not frames".

Export layout: ``processor.json`` (``{"format", "version", "codec", "chat"}``) next to ``llava_ov.json``;
the tokenizer is the one saved in ``llm/``. Exports older than the processor (no ``processor.json``)
load with the codec recorded in their ``llava_ov.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import PreTrainedTokenizerBase

from encoder.codec import (
    CodecConfig,
    PatchCache,
    PatchSelection,
    VideoDecodeError,
    patchify,
    patchify_frames,
    patchify_image,
)
from encoder.codec.pipeline import IMAGE_SUFFIXES
from encoder.codec.sampling import sample_positions
from encoder.typed_config import merge_config
from llava_ov.data.dataset import LMMItem, TokensFor, patch_tokens
from llava_ov.model.checkpoint import read_checkpoint_meta, resolve_paths
from llava_ov.model.config import ModelConfig
from llava_ov.text.conversation import PLACEHOLDERS, ChatFormat, TokenizedSample, build_prompt
from llava_ov.text.tokenizer import load_tokenizer

PROCESSOR_FILE = "processor.json"
PROCESSOR_FORMAT = "llava_ov_processor"
PROCESSOR_VERSION = 1
Media = Union[str, Path, "PIL.Image.Image", Sequence[Union[str, Path, "PIL.Image.Image"]], PatchSelection]  # noqa: F821
NOT_FRAMES = "not frames (a folder without image files)"
# Codec settings a user overrides by name (lmms-eval model_args, chat.py): name -> CodecConfig key,
# with num_frames resolved against the mode (codec: decode.num_frames; frames/collage: num_frames).
CODEC_SHORTCUTS = {
    "mode": "mode",
    "budget": "select.budget",
    "input_size": "decode.input_size",
    "image_max_side": "image_max_side",
}


def _nested(key: str, value: Any) -> dict[str, Any]:
    head, _, rest = key.partition(".")
    return {head: _nested(rest, value) if rest else value}


def codec_overrides(cfg: CodecConfig, **values: Any) -> CodecConfig:
    """``cfg`` with the named settings of :data:`CODEC_SHORTCUTS` (and ``num_frames``) replaced; ``None``
    values are ignored. Strict: an unknown name is a ``ValueError``."""
    values = {k: v for k, v in values.items() if v is not None}
    if bad := sorted(set(values) - set(CODEC_SHORTCUTS) - {"num_frames"}):
        raise ValueError(
            f"unknown codec setting(s) {bad}; expected some of {sorted([*CODEC_SHORTCUTS, 'num_frames'])}"
        )
    num_frames = values.pop("num_frames", None)
    for name, value in values.items():
        cfg = merge_config(cfg, _nested(CODEC_SHORTCUTS[name], value))
    if num_frames is not None:
        cfg = merge_config(
            cfg,
            _nested(
                "decode.num_frames" if cfg.mode in ("codec", "random") else "num_frames", int(num_frames)
            ),
        )
    cfg.validate()
    return cfg


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_frame(item: Any) -> bool:
    """A PIL image or a path with an image suffix: one frame of a clip given as frames."""
    return isinstance(item, Image.Image) or (isinstance(item, (str, Path)) and is_image_path(item))


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frame folder, sorted by name (raises :class:`VideoDecodeError` when it
    has none)."""
    files = sorted(
        (f for f in Path(folder).iterdir() if f.is_file() and is_image_path(f)), key=lambda f: f.name
    )
    if not files:
        raise VideoDecodeError(folder, NOT_FRAMES)
    return files


def clip_frame_count(cfg: CodecConfig) -> int:
    """How many frames a clip is sampled to with ``cfg``: ``decode.num_frames`` (codec, random) or
    ``num_frames`` (frames, collage, image)."""
    return cfg.decode.num_frames if cfg.mode in ("codec", "random") else cfg.num_frames


def sample_frames(n: int, cfg: CodecConfig) -> np.ndarray:
    """Indices of the frames of an ``n``-frame clip that ``cfg`` samples: the decoder's uniform rule on a
    constant frame rate (all of them when ``n`` is at most the frame count)."""
    return sample_positions(np.arange(n, dtype=np.float64), clip_frame_count(cfg))


def _open_frame(item: Any) -> Any:
    if isinstance(item, Image.Image):
        return item
    path = Path(item)
    if not path.is_file():
        raise VideoDecodeError(path, "file not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise VideoDecodeError(path, f"not a readable image ({e})") from None


@dataclass
class LlavaOVProcessor:
    tokenizer: PreTrainedTokenizerBase
    codec: CodecConfig = field(default_factory=CodecConfig)
    chat: ChatFormat = field(default_factory=ChatFormat)
    tokens_for: TokensFor = patch_tokens  # the model's rule (ModelConfig.token_counter()); not saved
    cache: PatchCache | None = None  # on-disk selections of media files; not saved

    # ----------------------------------------------------------------- media

    def load_media(self, media: Media) -> tuple[PatchSelection, str]:
        """One media item → (selection, kind "image" | "video"); see the module docstring."""
        if isinstance(media, PatchSelection):
            kind = "image" if media.meta.get("mode") == "image" or media.num_frames == 1 else "video"
            return media, kind
        if isinstance(media, Image.Image):
            return patchify_image(media, self.image_codec())[0], "image"
        if isinstance(media, (str, Path)):
            if Path(media).is_dir():
                return self.load_frames(frame_files(media), str(media)), "video"
            if is_image_path(media):
                return self._file(media, self.image_codec()), "image"
            return self._file(media, self.codec), "video"
        if isinstance(media, Sequence) and all(is_frame(f) for f in media):
            return self.load_frames(list(media)), "video"
        raise TypeError(
            f"unsupported media item {type(media).__name__}: expected a path, a PIL image, "
            "a list of frames (PIL images or image paths) or a PatchSelection"
        )

    def load_frames(self, frames: Sequence[Any], name: str = "<frames>") -> PatchSelection:
        """A clip given as frames (PIL images or image paths) → its selection: sampled to
        :func:`clip_frame_count`, only the sampled frames opened, encoded to H.264, patchified."""
        if len(frames) == 0:
            raise VideoDecodeError(name, "empty frame list")
        picked = sample_frames(len(frames), self.codec)
        try:
            sel = patchify_frames([_open_frame(frames[i]) for i in picked], self.codec)
        except VideoDecodeError as e:
            raise e if e.path != "<frames>" else VideoDecodeError(name, e.reason) from None
        sel.frame_ids = picked[sel.frame_ids].astype(np.int64)  # indices into the given frames
        sel.meta |= {"path": name, "source": "frames", "num_frames_total": len(frames)}
        return sel

    def image_codec(self) -> CodecConfig:
        return dataclasses.replace(self.codec, mode="image")

    def _file(self, path: str | Path, cfg: CodecConfig) -> PatchSelection:
        return self.cache.patchify(path, cfg) if self.cache is not None else patchify(path, cfg)

    # ----------------------------------------------------------------- prompts

    @staticmethod
    def conversation(text: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """A user message (str) or a list of turns (LLaVA or OpenAI style) → a list of turns. Without
        placeholders, :func:`build_prompt` puts the media in front of the first user turn
        (``<video>\\n`` / ``<image>\\n`` per item), as the training records have them."""
        if isinstance(text, str):
            return [{"from": "human", "value": text}]
        return [dict(t) for t in text]

    def prompt(self, text: str | Sequence[Mapping[str, Any]], media: Sequence[Media] = ()) -> LMMItem:
        """A generation prompt (ends with ``<|im_start|>assistant\\n``) as an :class:`LMMItem`."""
        sels, kinds = self._media(media)
        turns = self.conversation(text)
        tokens = build_prompt(turns, self.tokenizer, [self.tokens_for(s) for s in sels], kinds, self.chat)
        return LMMItem("prompt", tokens, sels, kinds)

    def scored(
        self, context: str | Sequence[Mapping[str, Any]], continuation: str, media: Sequence[Media] = ()
    ) -> LMMItem:
        """The prompt of ``context`` followed by the tokens of ``continuation`` (the start of the
        assistant's answer), labelled for the loss: the item :meth:`Engine.loglikelihood` scores."""
        item = self.prompt(context, media)
        cont = self.tokenizer.encode(continuation, add_special_tokens=False)
        if not cont:
            raise ValueError(f"continuation {continuation!r} has no tokens")
        ids = torch.cat([item.tokens.input_ids, torch.tensor(cont, dtype=torch.long)])
        labels = torch.cat([item.tokens.labels, torch.tensor(cont, dtype=torch.long)])
        item.tokens = TokenizedSample(ids, labels, item.tokens.media_spans)
        return item

    def _media(self, media: Sequence[Media]) -> tuple[list[PatchSelection], list[str]]:
        pairs = [self.load_media(m) for m in media]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    @staticmethod
    def placeholders(kinds: Sequence[str]) -> str:
        return "".join(PLACEHOLDERS[k] + "\n" for k in kinds)

    # ----------------------------------------------------------------- save / load

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROCESSOR_FORMAT,
            "version": PROCESSOR_VERSION,
            "codec": dataclasses.asdict(self.codec),
            "chat": dataclasses.asdict(self.chat),
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``processor.json`` (the tokenizer is saved with the LLM)."""
        path = Path(folder) / PROCESSOR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase | None = None,
        cache: PatchCache | None = None,
    ) -> LlavaOVProcessor:
        """The processor of a stage export (``tokenizer`` defaults to the export's ``llm/`` one)."""

        folder, meta = read_checkpoint_meta(path)
        file = folder / PROCESSOR_FILE
        if file.is_file():
            saved = json.loads(file.read_text())
            if saved.get("format") != PROCESSOR_FORMAT or saved.get("version", 0) > PROCESSOR_VERSION:
                raise ValueError(
                    f"{file}: unsupported processor format {saved.get('format')!r} "
                    f"version {saved.get('version')}"
                )
            codec, chat = saved.get("codec") or {}, saved.get("chat") or {}
        else:  # an export written before the processor existed
            codec, chat = meta.get("codec") or {}, {}
        cfg = resolve_paths(ModelConfig.from_dict(meta["model"]), folder)
        if tokenizer is None:
            tokenizer = load_tokenizer(cfg.llm.tokenizer_path)
        codec_cfg = merge_config(CodecConfig(), codec)  # strict and validated
        return cls(tokenizer, codec_cfg, merge_config(ChatFormat(), chat), cfg.token_counter(), cache)


__all__ = [
    "CODEC_SHORTCUTS",
    "NOT_FRAMES",
    "PROCESSOR_FILE",
    "LlavaOVProcessor",
    "Media",
    "clip_frame_count",
    "codec_overrides",
    "frame_files",
    "is_frame",
    "is_image_path",
    "sample_frames",
]
