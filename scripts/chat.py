"""Ask a trained LMM checkpoint about a video or an image (greedy decoding).

    python scripts/chat.py --ckpt out/stage2 --video clip.mp4 "What happens in the video?"
    python scripts/chat.py --ckpt out/stage2 --image cat.jpg "What is this?" --max-new-tokens 64
    python scripts/chat.py --ckpt out/stage2 --video clip.mp4 --mode frames "Describe it."

The media are patchified with the codec config saved in the checkpoint (``llava_ov.json`` →
``codec``; the default ``CodecConfig`` if it has none); ``--mode`` / ``--set`` change it. Images
always use the ``image`` mode. Bad media or a bad checkpoint print one error line and exit 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback

import torch

from encoder.codec import MODES, CodecConfig, PatchSelection, VideoDecodeError, patchify
from encoder.config import ConfigError, merge, parse_overrides
from llava_ov.data.dataset import LMMItem, collate_items
from llava_ov.model import LlavaOVModel
from llava_ov.text import build_prompt


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("question", help="the question to ask")
    ap.add_argument("--ckpt", required=True, help="checkpoint folder written by LlavaOVModel.save_pretrained")
    media = ap.add_mutually_exclusive_group()
    media.add_argument("--video", help="video file")
    media.add_argument("--image", help="image file")
    ap.add_argument("--mode", choices=MODES, help="codec input mode (default: the checkpoint's)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="CodecConfig overrides")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    ap.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return ap


def codec_config(saved: dict | None, mode: str | None, overrides: list[str]) -> CodecConfig:
    cfg = merge(CodecConfig(), saved or {})
    if mode is not None:
        cfg = merge(cfg, {"mode": mode})
    cfg = merge(cfg, parse_overrides(overrides))
    cfg.validate()
    return cfg


def load_model(ckpt: str, device: str) -> LlavaOVModel:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return LlavaOVModel.from_pretrained(ckpt, dtype=dtype).to(device).eval()


def answer(model: LlavaOVModel, question: str, media: list[PatchSelection], kinds: list[str],
           max_new_tokens: int) -> str:
    tokenizer = model.tokenizer
    counter = model.tokens_counter()
    turns = [{"from": "human", "value": question}]
    prompt = build_prompt(turns, tokenizer, [counter(s) for s in media], kinds)
    batch = collate_items([LMMItem("chat", prompt, media, kinds)], padded=True,
                          pad_token_id=model.token_ids.pad)
    ids = model.generate(batch, max_new_tokens=max_new_tokens)[0]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def fail(message: str, debug: bool) -> int:
    print(f"error: {message.splitlines()[0] if message else 'unknown error'}", file=sys.stderr)
    if debug:
        traceback.print_exc()
    return 1


def run(args: argparse.Namespace) -> int:
    path, kind = (args.video, "video") if args.video else (args.image, "image") if args.image else (None, None)
    try:
        model = load_model(args.ckpt, args.device)
    except (ConfigError, ValueError, OSError) as e:
        return fail(f"{args.ckpt}: {e}", args.debug)
    try:
        codec = codec_config(model.codec, args.mode, args.set)
        media = [patchify(path, codec)] if path else []
        text = answer(model, args.question, media, [kind] if path else [], args.max_new_tokens)
    except VideoDecodeError as e:
        return fail(str(e), args.debug)
    except (ConfigError, ValueError, OSError) as e:
        return fail(f"{path or 'prompt'}: {e}", args.debug)
    print(text)
    return 0


def quiet_transformers() -> None:
    """No progress bars / info chatter on the console: the answer (or one error line) only."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_transformers()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
