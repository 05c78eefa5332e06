#!/usr/bin/env bash
# Sourced by the other scripts: create .venv (once), install the pinned requirements and skillgpt itself.
# Set SKILLGPT_VENV to use another location; WITH_TESTS=1 also installs the test requirements.
set -euo pipefail
VENV=${SKILLGPT_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
echo "[setup] installing pinned requirements into $VENV (fast when already there)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
if [ "${WITH_TESTS:-0}" = "1" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-test.txt
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>/dev/null \
  || "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
export PATH="$PWD/$VENV/bin:$PATH"
