#!/usr/bin/env bash
# Every GPU check of the project as one command, under 8 minutes on one H100/H200 (see bench/README.md).
#   bash bench/gpu_check.sh            # on the GPU machine, from the repository root
# Runs bench/gpu_check.py's checks (env, nccl, train, flash, qlora, compile), then MFU (bench/mfu.py) and
# time to first token (bench/inference.py), each with its own time limit so one failure or hang does not
# stop the others. Logs go to $OUT (or bench/out/gpu_check); RESULT lines are gathered in summary.txt.
# Python packages the GPU image may lack (omegaconf, bitsandbytes): `bash bench/gpu_wheels.sh` here first
# downloads wheels into .whl/, which this script installs into /tmp/site when it finds them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-bench/out/gpu_check}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/code:$PWD/bench:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SHAPE=${SHAPE:-qwen2.5-1.5b}
start=$(date +%s)
run() {  # run NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit} s)"
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  grep -h "^RESULT\|^|" "$OUT_DIR/$name.log" || tail -n 5 "$OUT_DIR/$name.log"
  echo "=== $name: exit $rc after $(( $(date +%s) - start )) s in all"
}
run env 60 "$PY" bench/gpu_check.py env
run nccl 60 "$PY" bench/gpu_check.py nccl
run train 120 "$PY" bench/gpu_check.py train --shape "$SHAPE" --steps 5
run flash 60 "$PY" bench/gpu_check.py flash --shape "$SHAPE"
run qlora 90 "$PY" bench/gpu_check.py qlora --shape "$SHAPE" --steps 5
run compile 120 "$PY" bench/gpu_check.py compile --shape "$SHAPE" --steps 5
run mfu 60 "$PY" bench/mfu.py --shape "$SHAPE" --steps 5 --warmup 2
run ttft 60 "$PY" bench/inference.py --shape "$SHAPE" --runs 3 --max-new-tokens 32 --out "$OUT_DIR/inference"
grep -h "^RESULT" "$OUT_DIR"/*.log >"$OUT_DIR/summary.txt"
echo "gpu_check finished in $(( $(date +%s) - start )) s; summary in $OUT_DIR/summary.txt"
