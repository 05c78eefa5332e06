#!/usr/bin/env bash
# Launch one training stage with the DeepSpeed launcher:
#   scripts/train.sh [--recipe RECIPE] [--dry-run] STAGE [key=value ...]
# RECIPE picks the stage files: `skill` (the default: config/stage_STAGE.yaml, dsconfig/stage_STAGE.json, the
# two-stage skill recipe) or a folder of config/ holding its own stage files, e.g. `nextgpt` (NExT-GPT's three
# stages: config/nextgpt/stage_STAGE.yaml, dsconfig/nextgpt/stage_STAGE.json; docs/generation.md).
# --dry-run prints the launcher command instead of running it.
# The stage config and its DeepSpeed config come from this repository; every
# other path (data, output_dir, model.llm.path, init_from) is relative to the folder you run it from, so
# a run started elsewhere writes and resumes there, never the repository's own ckpt/.
# Launcher options (processes, nodes, hostfile, include/exclude) come from DS_ARGS, e.g.
#   DS_ARGS="--num_gpus 4" scripts/train.sh 2 preset=qwen2.5-1.5b
#   DS_ARGS="--hostfile hosts --num_nodes 2" scripts/train.sh 2 preset=vicuna-7b-v0
#   scripts/train.sh --recipe nextgpt 3 preset=nextgpt-vicuna-7b
# No GPU ids are written here: the launcher uses every visible device unless DS_ARGS says otherwise.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/train.sh [--recipe RECIPE] [--dry-run] STAGE [key=value ...]"
recipe=skill
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --recipe) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; recipe=$2; shift 2 ;;
    --recipe=*) recipe=${1#--recipe=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then
  echo "$usage" >&2
  exit 2
fi
recipes="skill $(cd "$repo/config" && for d in */; do [ -n "$(ls "$d"stage_*.yaml 2>/dev/null)" ] && printf '%s ' "${d%/}"; done)"
if [ "$recipe" = skill ]; then
  sub=""
elif [[ "$recipe" =~ ^[A-Za-z0-9_-]+$ ]] && [ "$recipe" != model ] && [ -d "$repo/config/$recipe" ]; then
  sub="$recipe/"
else
  echo "scripts/train.sh: unknown recipe '$recipe' (recipes: ${recipes% })" >&2
  exit 2
fi
stage=$1
shift
config="$repo/config/${sub}stage_${stage}.yaml"
if [ ! -f "$config" ]; then
  echo "scripts/train.sh: $config not found (stages: $(ls "$repo"/config/${sub}stage_*.yaml | sed 's/.*stage_//; s/.yaml//' | tr '\n' ' '))" >&2
  exit 2
fi
if [ "$PWD" != "$repo" ]; then
  echo "[train.sh] paths are relative to $PWD (data, train.output_dir, train.init_from, model.llm.path)" >&2
fi
# the repository's DeepSpeed config unless the caller names one (later key=value overrides win)
ds_config="train.deepspeed_config=$repo/dsconfig/${sub}stage_${stage}.json"
if [ "$dry_run" = 1 ]; then
  echo deepspeed --no_local_rank ${DS_ARGS:-} --module skillgpt.cli train "$config" "$ds_config" "$@"
  exit 0
fi
command -v deepspeed >/dev/null 2>&1 || { [ -x "$repo/.venv/bin/python" ] && export PATH="$repo/.venv/bin:$PATH"; }
# shellcheck disable=SC2086
exec deepspeed --no_local_rank ${DS_ARGS:-} --module skillgpt.cli train "$config" "$ds_config" "$@"
