"""Ask a trained LMM checkpoint about a video or an image (greedy decoding).

    python scripts/chat.py --ckpt out/stage2 --video clip.mp4 "What happens in the video?"
    python scripts/chat.py --ckpt out/stage2 --image cat.jpg "What is this?" --max-new-tokens 64
    python scripts/chat.py --ckpt out/stage2 --video clip.mp4 --mode frames "Describe it."
    python scripts/chat.py --ckpt out/stage2 --video clip.mp4 --set select.budget=256 "What moves?"

Prompts and media go through the checkpoint's own processor (``processor.json``: chat format and
codec settings) and the inference engine the evaluation uses; ``--mode`` / ``--set`` change the codec
settings (``--set`` takes one KEY=VALUE and may be repeated). Images always use the ``image`` mode. Bad
media or a bad checkpoint print one error line and exit 1; a device this machine lacks, exit 2. An
empty answer, or a mode other than the one the checkpoint was trained with, prints a warning.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from encoder.cli import run_cli
from encoder.codec import MODES, VideoDecodeError
from encoder.typed_config import ConfigError, merge_config, parse_overrides
from llava_ov.infer import Engine, GenerationConfig, codec_overrides, resolve_device


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("question", help="the question to ask")
    ap.add_argument(
        "--ckpt", required=True, help="checkpoint folder written by a training stage (its final export)"
    )
    media = ap.add_mutually_exclusive_group()
    media.add_argument("--video", help="video file")
    media.add_argument("--image", help="image file")
    ap.add_argument("--mode", choices=MODES, help="codec input mode (default: the checkpoint's)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CodecConfig override (repeat for several)",
    )
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    ap.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return ap


def fail(message: str, debug: bool) -> int:
    print(f"error: {message.splitlines()[0] if message else 'unknown error'}", file=sys.stderr)
    if debug:
        traceback.print_exc()
    return 1


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    path = args.video or args.image
    resolve_device(args.device)  # a device this machine lacks: one line, exit 2 (run_cli)
    try:
        engine = Engine.from_pretrained(args.ckpt, device=args.device)
    except (ConfigError, ValueError, OSError) as e:
        return fail(str(e) if args.ckpt in str(e) else f"{args.ckpt}: {e}", args.debug)
    try:
        processor = engine.processor
        trained = processor.codec.mode
        if args.video and args.mode and args.mode != trained:
            warn(
                f"the checkpoint was trained with mode {trained!r}; asking with --mode {args.mode!r} "
                "(answers may be empty or off)"
            )
        processor.codec = codec_overrides(processor.codec, mode=args.mode)
        processor.codec = merge_config(processor.codec, parse_overrides(args.set))  # validated
        gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        text = engine.generate([(args.question, [path] if path else [])], gen)[0]
    except VideoDecodeError as e:
        return fail(str(e), args.debug)
    except (ConfigError, ValueError, OSError) as e:
        return fail(f"{path or 'prompt'}: {e}", args.debug)
    if not text.strip():
        warn(f"empty answer (mode {processor.codec.mode!r}; the checkpoint was trained with {trained!r})")
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
    sys.exit(run_cli(main))
