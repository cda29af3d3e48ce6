#!/usr/bin/env bash
# The project's GPU check, for whoever has a GPU (one H100/H200: under 8 minutes), ending in one summary:
#   1. parity of every attention path and the chunked loss against fp32 (benchmarks/gpu_parity.py)
#   2. MFU rows at 8k / 16k / 32k LLM tokens per pack through the trainer's DeepSpeed path, with a
#      kernel-family profile of the 16k step and its trace (benchmarks/bench_lmm.py --full --profile)
#   3. the ViT packing ratio, forward and forward+backward (benchmarks/bench_vit.py)
#   4. the main job, `deepspeed scripts/train_lmm.py` on the embedded default, with its held-out score
#      (its synthetic data is generated on the CPUs while steps 1-3 use the GPU)
#   5. the rows again with activation checkpointing, and the 16k row with model.compile (if time is left
#      before the deadline)
# Each step has its own time limit and log under $GPU_CHECK_DIR (default outputs/gpu_check); a failed
# step does not stop the others. `--dry-run` runs every step at tiny shapes on the CPU (a few minutes),
# so that the first GPU run does not fail on a typo.
#   bash benchmarks/gpu_check.sh [--dry-run]      (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
DIR=${GPU_CHECK_DIR:-outputs/gpu_check}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEADLINE=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-470} ))  # steps that would end later are cut or skipped
mkdir -p "$DIR"
: > "$DIR/steps.txt"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# each step sets up its own process group: a parent's (this script started inside a launcher or a test
# process that ran one) would make them join a stale one or collide on its port
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE GROUP_RANK MASTER_ADDR MASTER_PORT TORCHELASTIC_RUN_ID

step() {  # step NAME LIMIT_SECONDS command...
  local name=$1 limit=$2 start rc
  shift 2
  local left=$(( DEADLINE - $(date +%s) ))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then echo "$name skipped (deadline)" | tee -a "$DIR/steps.txt"; return; fi
  start=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$DIR/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$DIR/steps.txt"
  tail -n 25 "$DIR/$name.log"
}

if [ $DRY = 1 ]; then
  MAIN=(data.synthetic.out_dir="$DIR/data" data.synthetic.num_train=48 data.synthetic.num_heldout=20
        data.num_workers=0 align.max_steps=2 sft.max_steps=4 log.progress=false eval.max_new_tokens=2)
  PARITY=(--tiny); LMM=(--tiny --tokens 512,1024 --steps 1 --warmup 1)
  VIT=(--config debug --device cpu --lengths 16 48 96 --repeats 1 --warmup 0); COMPILE_TOKENS=512
else
  MAIN=(log.progress=false); PARITY=(); LMM=(--tokens 8192,16384,32768)
  VIT=(--config large --device cuda); COMPILE_TOKENS=16384
fi
OUTDIR=(output_dir="$DIR/main_job")

# 4a. the main job's data on the CPUs while the GPU-bound steps 1-2 run (low priority, a few cores left for
# their launch threads); the ViT step, which is partly launch-bound, waits for it
WORKERS=$(( $(nproc) > 6 ? $(nproc) - 4 : 1 ))
nice -n 19 "$PYTHON" scripts/train_lmm.py --prepare-data "${MAIN[@]}" data.synthetic.workers=$WORKERS \
  > "$DIR/main_job_data.log" 2>&1 &
DATA_PID=$!

step parity 150 "$PYTHON" benchmarks/gpu_parity.py "${PARITY[@]}" --json "$DIR/parity.json"
step mfu 240 "$PYTHON" benchmarks/bench_lmm.py --full "${LMM[@]}" --profile --trace "$DIR/trace_16k.json"
wait $DATA_PID
echo "main_job_data rc=$?" | tee -a "$DIR/steps.txt"
step vit_packing 90 "$PYTHON" benchmarks/bench_vit.py "${VIT[@]}" --skip clip backends --train
# a free port for the launcher's rendezvous: the default 29500 may be held by another job on this machine
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step main_job 300 "$PYTHON" -m deepspeed.launcher.runner --master_port "$PORT" scripts/train_lmm.py "${MAIN[@]}" \
  "${OUTDIR[@]}"
step mfu_checkpointing 120 "$PYTHON" benchmarks/bench_lmm.py --full "${LMM[@]}" --checkpointing
step mfu_compile 200 "$PYTHON" benchmarks/bench_lmm.py --full "${LMM[@]}" --tokens $COMPILE_TOKENS --compile

"$PYTHON" benchmarks/gpu_check_summary.py "$DIR" | tee "$DIR/summary.md"
