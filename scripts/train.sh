#!/usr/bin/env bash
# Launch one training stage with the DeepSpeed launcher:
#   scripts/train.sh STAGE [key=value ...]
# Launcher options (processes, nodes, hostfile, include/exclude) come from DS_ARGS, e.g.
#   DS_ARGS="--num_gpus 4" scripts/train.sh 2 preset=qwen2.5-1.5b
#   DS_ARGS="--hostfile hosts --num_nodes 2" scripts/train.sh 2 preset=vicuna-7b-v0
# No GPU ids are written here: the launcher uses every visible device unless DS_ARGS says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/train.sh STAGE [key=value ...]" >&2
  exit 2
fi
stage=$1
shift
config="config/stage_${stage}.yaml"
if [ ! -f "$config" ]; then
  echo "scripts/train.sh: $config not found (stages: $(ls config/stage_*.yaml | sed 's/.*stage_//; s/.yaml//' | tr '\n' ' '))" >&2
  exit 2
fi
[ -x .venv/bin/python ] && export PATH="$PWD/.venv/bin:$PATH"
# shellcheck disable=SC2086
exec deepspeed --no_local_rank ${DS_ARGS:-} --module skillgpt.cli train "$config" "$@"
