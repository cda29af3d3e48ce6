#!/usr/bin/env bash
# Idempotent environment setup used by both README commands and by CI.
# Creates .venv, installs torch (the CPU 2.13.0 wheel when no CUDA is present, so a CPU box never
# downloads CUDA wheels), deepspeed (needs torch at build time), then this package editable with the dev
# extras plus $LLAVA_OV_EXTRAS (comma-separated: eval, kmeans, gpu; eval also installs lmms-eval 0.7.3
# with --no-deps). Re-running installs again only when pyproject.toml changed or an extra is new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "[setup] CUDA found: installing torch (CUDA build)"
    "${PIP[@]}" torch
  else
    echo "[setup] no CUDA: installing CPU torch 2.13.0"
    "${PIP[@]}" "torch==2.13.0"
  fi
fi
if ! "$VENV/bin/python" -c "import deepspeed" >/dev/null 2>&1; then
  echo "[setup] installing deepspeed (no build isolation)"
  DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation deepspeed
fi
stamp="$VENV/.llava_ov_installed"  # holds the extras installed so far
have=$(cat "$stamp" 2>/dev/null || true)
extras="dev"
extra_list=${LLAVA_OV_EXTRAS:-}
for e in ${have//,/ } ${extra_list//,/ }; do
  case ",$extras," in *,"$e",*) ;; *) extras="$extras,$e" ;; esac
done
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$have" != "$extras" ]; then
  echo "[setup] installing llava-ov (editable, extras: $extras)"
  "${PIP[@]}" -e ".[$extras]"
  case ",$extras," in
    *,eval,*)  # lmms-eval without its dependency list (see pyproject's eval extra)
      echo "[setup] installing lmms-eval 0.7.3 (--no-deps)"
      "${PIP[@]}" --no-deps "lmms-eval==0.7.3" ;;
  esac
  echo "$extras" > "$stamp"
fi
echo "[setup] ready: $("$VENV/bin/python" -c 'import torch, av, transformers, deepspeed; print(f"torch {torch.__version__}, av {av.__version__}, transformers {transformers.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null)"
