#!/usr/bin/env bash
# The Gradio demo for a checkpoint: skill rating, coaching feedback and chat about a clip.
#   bash scripts/app.sh ckpt/tiny/stage_2                      # http://127.0.0.1:7860 (this machine only)
#   bash scripts/app.sh ckpt/tiny/stage_2 --port 7861 --concurrency 4 --max-upload-mb 20
# Extra arguments go to `skillgpt demo` (see `skillgpt demo --help`); paths are relative to where you run it.
# Packages are installed only on the first launch or after the requirements change (scripts/setup_env.sh).
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: bash scripts/app.sh CKPT [skillgpt demo flags: --host --port --share --concurrency --max-upload-mb --max-duration-s --examples DIR]" >&2
  exit 2
fi
ckpt=$1
shift
here=$PWD
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
cd "$here"
exec skillgpt demo --ckpt "$ckpt" "$@"
