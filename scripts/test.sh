#!/usr/bin/env bash
# Set up the environment and run the whole test suite (CPU only, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TESTS=1 source scripts/setup_env.sh
python -m pytest tests "$@"
