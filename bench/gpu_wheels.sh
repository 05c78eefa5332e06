#!/usr/bin/env bash
# Wheels for the GPU image's Python 3.12 that bench/gpu_check.sh needs beyond what the image ships
# (omegaconf for skillgpt.config, bitsandbytes for the 8/4-bit check). Run here (with PyPI), from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >>.git/info/exclude
for pkg in omegaconf==2.4.0 bitsandbytes==0.50.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$pkg"
done
du -sh .whl
