#!/usr/bin/env bash
# The embedded tiny default end to end on a CPU: data -> stage 1 -> stage 2 -> eval -> one answer.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
source scripts/setup_env.sh
rm -rf ckpt/tiny
skillgpt make-sample-data --out data/synthetic
skillgpt make-tiny-llm --data data/synthetic --out ckpt/pretrained/tiny-llm
skillgpt train config/stage_1.yaml preset=tiny
skillgpt train config/stage_2.yaml preset=tiny
skillgpt eval --ckpt ckpt/tiny/stage_2 --split test
clip=$(ls data/synthetic/videos/test/*.mp4 | head -n 1)
echo "Q: What is the proficiency level of this athlete? ($clip)"
echo -n "A: "
skillgpt infer --ckpt ckpt/tiny/stage_2 --video "$clip" "What is the proficiency level of this athlete?"
echo "quickstart finished in $(( $(date +%s) - start )) s"
