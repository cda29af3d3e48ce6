"""The LMM: vision tower → projector → causal LM, on packed or padded :class:`LMMBatch` es.

Forward: the tower encodes all patches of the batch in one packed call; the projector maps them to
the LLM width (2×2 merge when configured); the visual tokens replace, in order, the embeddings of
the ``<|image_pad|>`` / ``<|video_pad|>`` tokens of ``input_ids``; the LLM runs on ``inputs_embeds``
with :func:`llava_ov.text.model_inputs` (packed: restarted ``position_ids`` and ``cu_seqlens``, no mask;
padded: ``attention_mask``). The loss is the mean cross-entropy over target tokens (labels shifted by
one), computed from the LM's last hidden states in chunks of target rows (no ``[L, V]`` logits; the
logits only when asked for, as the engine's scoring does).

Text-only batches and distributed training: under DeepSpeed ZeRO-3 every module forward all-gathers
its parameters, a collective that every rank must join, and under ZeRO-1/2 gradients are reduced for
every trainable parameter. A rank whose micro-batch has no media would otherwise skip the tower and
projector and deadlock / desynchronise the others. With :attr:`LlavaOVModel.text_only_dummy_pass`
(default on) such a batch runs the tower and projector on a 4-patch blank image and adds
``0 * sum(output)`` to the embeddings: identical loss and logits, zero gradients, same collectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llava_ov.data.dataset import LMMBatch, MediaBatch
from llava_ov.model.checkpoint import load_checkpoint, save_checkpoint
from llava_ov.model.config import ModelConfig
from llava_ov.model.generation import generate_from_embeds, prompt_rows
from llava_ov.model.llm import SpecialTokenIds, base_model, build_llm, fit_embeddings, set_llm_checkpointing
from llava_ov.model.loss import causal_lm_loss, lm_head_loss
from llava_ov.model.merge import TokenCounter, apply_merge, merge_plan
from llava_ov.model.projector import build_projector, merged_positions
from llava_ov.model.towers import VisionTower, build_tower
from llava_ov.text.packing import model_inputs


@dataclass
class ModelOutput:
    loss: Tensor  # scalar, mean over target tokens (0 with a graph when there are none)
    logits: Tensor | None  # [B, L, V] ([1, L, V] packed); None unless asked for (forward(return_logits=True))
    num_targets: int  # tokens the loss averages over


def blank_media(patch_size: int, counter: TokenCounter) -> MediaBatch:
    """A 2×2-patch black image (the text-only dummy pass input); ``counter`` gives its token count."""
    positions = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]], dtype=torch.int32)
    return MediaBatch(
        pixels=torch.zeros(4, 3, patch_size, patch_size, dtype=torch.uint8),
        positions=positions,
        cu_seqlens=torch.tensor([0, 4], dtype=torch.int32),
        num_tokens=torch.tensor([counter(SimpleNamespace(positions=positions))], dtype=torch.int32),
        grid_hw=torch.tensor([[2, 2]], dtype=torch.int32),
        kinds=["image"],
        patch_size=patch_size,
    )


class LlavaOVModel(nn.Module):
    """See the module docstring. Build with :func:`build_model` or :meth:`from_pretrained`."""

    def __init__(
        self,
        config: ModelConfig,
        vision_tower: VisionTower,
        projector: nn.Module,
        llm: PreTrainedModel,
        token_ids: SpecialTokenIds,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.projector = projector
        self.llm = llm
        self.token_ids = token_ids
        self.tokenizer = tokenizer
        self.text_only_dummy_pass = True  # see module docstring
        self.loss_chunk: int | None = None  # target rows per LM-head chunk (None: 1 GiB of fp32 logits)

    # ----------------------------------------------------------------- setup helpers

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    def token_counter(self) -> TokenCounter:
        """:meth:`ModelConfig.token_counter` of the built tower (the same rule)."""
        return self.vision_tower.spec.token_counter(self.config.projector.merge)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Non-reentrant recomputation of the tower blocks and the LLM layers."""
        self.vision_tower.set_activation_checkpointing(enabled)
        set_llm_checkpointing(self.llm, enabled)
        self.config.activation_checkpointing = enabled

    def compile_blocks(self, backend: str = "inductor") -> None:
        """``torch.compile`` each LLM decoder layer and tower block in place (``nn.Module.compile``: the
        parameter names stay, so checkpoints and resume do not change). Lengths vary from pack to pack:
        dynamo marks them dynamic after the first recompilation."""
        layers = list(base_model(self.llm).get_decoder().layers)
        for block in [*layers, *self.vision_tower.blocks()]:
            block.compile(backend=backend)
        self.config.compile, self.config.compile_backend = True, backend

    def requires_grad_(self, requires_grad: bool = True) -> LlavaOVModel:
        """As :meth:`nn.Module.requires_grad_`, keeping the tower's never-used parameters frozen."""
        super().requires_grad_(requires_grad)
        self.vision_tower.freeze_unused()
        return self

    # ----------------------------------------------------------------- media → embeddings

    def encode_media(self, media: MediaBatch) -> Tensor:
        """Visual tokens of every media item, ``[sum(media.num_tokens), d_llm]``, in media order."""
        d_llm = self.llm.get_input_embeddings().embedding_dim
        if media.num_patches == 0:
            return self.llm.get_input_embeddings().weight.new_zeros(0, d_llm)
        out = self.vision_tower(media)
        features, merge = out.features, self.config.projector.merge
        positions = out.positions  # (t, h, w) of every tower token, for projector.pos_embed
        if merge == 2:
            plan = merge_plan(out.positions, out.cu_seqlens)
            features, counts = apply_merge(features, plan), plan.counts
            if self.config.projector.pos_embed != "none":
                positions = merged_positions(out.positions, plan)
        else:
            counts = out.counts
        reserved = [int(n) for n in media.num_tokens.tolist()]
        if counts != reserved:
            raise ValueError(
                f"visual tokens per media item {counts} differ from the placeholder tokens the batch "
                f"reserved {reserved} (projector.merge={merge}): build the items with "
                "tokens_for=model.token_counter()"
            )
        weight = next(self.projector.parameters())
        if self.config.projector.pos_embed == "none":
            return self.projector(features.to(weight.dtype))
        return self.projector(features.to(weight.dtype), positions)

    def embed(self, input_ids: Tensor, media: MediaBatch) -> Tensor:
        """Token embeddings with the visual tokens placed at the media pad tokens, in order."""
        embedding = self.llm.get_input_embeddings()
        input_ids = input_ids.to(embedding.weight.device)
        embeds = embedding(input_ids)
        pads = torch.tensor(self.token_ids.media_pads, device=input_ids.device)
        is_media = torch.isin(input_ids, pads)
        num_slots = int(is_media.sum())
        if media.num_media == 0:
            if num_slots:
                raise ValueError(f"input_ids hold {num_slots} media pad tokens but the batch has no media")
            if self.text_only_dummy_pass:
                dummy = self.encode_media(blank_media(self.vision_tower.patch_size, self.token_counter()))
                embeds = embeds + 0.0 * dummy.sum().to(embeds.dtype)
            return embeds
        visual = self.encode_media(media)
        if num_slots != visual.shape[0]:
            raise ValueError(
                f"placeholder / visual token mismatch: input_ids hold {num_slots} media pad tokens but the "
                f"media give {visual.shape[0]} visual tokens"
            )
        self._check_kinds(input_ids[is_media], media)
        return embeds.masked_scatter(is_media.unsqueeze(-1), visual.to(embeds.dtype))

    def _check_kinds(self, pad_ids: Tensor, media: MediaBatch) -> None:
        ids = self.token_ids
        kind_ids = [ids.video_pad if k == "video" else ids.image_pad for k in media.kinds]
        expected = torch.tensor(kind_ids, device=pad_ids.device).repeat_interleave(
            media.num_tokens.to(device=pad_ids.device, dtype=torch.long)
        )
        if not torch.equal(expected, pad_ids):
            raise ValueError(
                f"the image/video pad tokens of input_ids do not follow the media kinds {media.kinds}"
            )

    # ----------------------------------------------------------------- forward / generate

    def forward(self, batch: LMMBatch, return_logits: bool = False) -> ModelOutput:
        """Loss (token mean over targets). Without ``return_logits`` the LM head runs only on target
        positions, in chunks (:func:`llava_ov.model.loss.lm_head_loss`: no ``[L, V]`` logits)."""
        text = batch.text
        if text is None:
            raise ValueError("the batch holds no samples (only skip markers)")
        embeds = self.embed(text.input_ids, batch.media)
        kwargs = model_inputs(text, self.config.llm.attn_implementation)
        del kwargs["input_ids"]
        labels = kwargs.pop("labels")
        kwargs = {k: v.to(embeds.device) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        if return_logits:
            logits = self.llm(inputs_embeds=embeds, **kwargs).logits
            loss, num_targets = causal_lm_loss(logits, labels)
            return ModelOutput(loss=loss, logits=logits, num_targets=num_targets)
        lm = base_model(self.llm)
        hidden = lm.get_decoder()(inputs_embeds=embeds, **kwargs).last_hidden_state
        loss, num_targets = lm_head_loss(hidden, labels, lm.get_output_embeddings(), self.loss_chunk)
        return ModelOutput(loss=loss, logits=None, num_targets=num_targets)

    @torch.no_grad()
    def generate(
        self, batch_or_prompt: LMMBatch, max_new_tokens: int = 32, do_sample: bool = False, **kw: Any
    ) -> list[list[int]]:
        """New token ids per prompt (greedy by default), cut before the first ``<|im_end|>`` /
        ``<|endoftext|>``. Packed or padded batches of prompts (made with ``build_prompt``)."""
        text = batch_or_prompt.text
        if text is None:
            raise ValueError("the batch holds no prompt")
        embeds = self.embed(text.input_ids, batch_or_prompt.media)
        rows = prompt_rows(embeds, text)
        stop = [self.token_ids.im_end, self.token_ids.pad]
        return generate_from_embeds(self.llm, rows, stop, max_new_tokens, do_sample, **kw)

    # ----------------------------------------------------------------- checkpoints

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """HF-style export (see :func:`llava_ov.model.checkpoint.save_checkpoint`); the processor
        (:class:`llava_ov.infer.LlavaOVProcessor`) is saved next to it by its own ``save_pretrained``."""
        return save_checkpoint(self, out_dir)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: torch.dtype | None = None, **overrides: Any
    ) -> LlavaOVModel:
        """Load a :meth:`save_pretrained` folder (or hub id); ``overrides`` are nested ModelConfig
        updates, e.g. ``llm={"attn_implementation": "flash_attention_2"}``."""
        return load_checkpoint(path, build_model, dtype=dtype, **overrides)


def build_model(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype | None = None
) -> LlavaOVModel:
    """Build (and load, where ``cfg`` names weights) the tower, projector and LLM.

    The LLM's embeddings grow if the tokenizer has more tokens than it has rows. ``dtype`` defaults to
    fp32; the trainer / DeepSpeed casts for bf16 training.
    """
    cfg.validate()
    tower = build_tower(cfg.tower)
    llm = build_llm(cfg.llm, len(tokenizer), dtype)
    fit_embeddings(llm, len(tokenizer))
    d_llm = llm.get_input_embeddings().embedding_dim
    projector = build_projector(cfg.projector, tower.hidden_size, d_llm)
    model = LlavaOVModel(cfg, tower, projector, llm, SpecialTokenIds.from_tokenizer(tokenizer), tokenizer)
    if dtype is not None:
        model.to(dtype)
    if cfg.activation_checkpointing:
        model.set_activation_checkpointing(True)
    if cfg.compile:
        model.compile_blocks(cfg.compile_backend)
    return model


__all__ = ["LlavaOVModel", "ModelOutput", "blank_media", "build_model"]
