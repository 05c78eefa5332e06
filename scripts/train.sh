#!/usr/bin/env bash
# Launch one training stage with the DeepSpeed launcher:
#   scripts/train.sh STAGE [key=value ...]
# The stage config (config/stage_STAGE.yaml) and its DeepSpeed config come from this repository; every
# other path (data, output_dir, model.llm.path, init_from) is relative to the folder you run it from, so
# a run started elsewhere writes and resumes there, never the repository's own ckpt/.
# Launcher options (processes, nodes, hostfile, include/exclude) come from DS_ARGS, e.g.
#   DS_ARGS="--num_gpus 4" scripts/train.sh 2 preset=qwen2.5-1.5b
#   DS_ARGS="--hostfile hosts --num_nodes 2" scripts/train.sh 2 preset=vicuna-7b-v0
# No GPU ids are written here: the launcher uses every visible device unless DS_ARGS says otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: scripts/train.sh STAGE [key=value ...]" >&2
  exit 2
fi
stage=$1
shift
config="$repo/config/stage_${stage}.yaml"
if [ ! -f "$config" ]; then
  echo "scripts/train.sh: $config not found (stages: $(ls "$repo"/config/stage_*.yaml | sed 's/.*stage_//; s/.yaml//' | tr '\n' ' '))" >&2
  exit 2
fi
if [ "$PWD" != "$repo" ]; then
  echo "[train.sh] paths are relative to $PWD (data, train.output_dir, train.init_from, model.llm.path)" >&2
fi
# the repository's DeepSpeed config unless the caller names one (later key=value overrides win)
ds_config="train.deepspeed_config=$repo/dsconfig/stage_${stage}.json"
command -v deepspeed >/dev/null 2>&1 || { [ -x "$repo/.venv/bin/python" ] && export PATH="$repo/.venv/bin:$PATH"; }
# shellcheck disable=SC2086
exec deepspeed --no_local_rank ${DS_ARGS:-} --module skillgpt.cli train "$config" "$ds_config" "$@"
