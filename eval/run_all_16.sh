#!/usr/bin/env bash
# Run the 16 standard benchmarks (or --tasks ...) on one checkpoint with lmms-eval, then summarize.
#   bash eval/run_all_16.sh CKPT [--tasks a,b] [--limit N] [--out DIR] [--num-processes N] [--dry-run] ...
# Works from any directory; uses the repository's .venv python when present. See eval/run_all.py -h.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$here/../.venv/bin/python"
[ -x "$py" ] || py=python3
exec "$py" "$here/run_all.py" "$@"
