#!/usr/bin/env bash
# Set up the environment (idempotent) and run lint + the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAVA_OV_EXTRAS="eval${LLAVA_OV_EXTRAS:+,$LLAVA_OV_EXTRAS}" bash scripts/setup.sh  # the eval tests run real lmms-eval
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
