#!/usr/bin/env bash
# Set up the environment (idempotent) and run lint + the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAVA_OV_EXTRAS="eval,kmeans${LLAVA_OV_EXTRAS:+,$LLAVA_OV_EXTRAS}" bash scripts/setup.sh  # real lmms-eval, faiss k-means
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
