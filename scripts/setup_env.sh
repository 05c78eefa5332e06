#!/usr/bin/env bash
# Sourced by the other scripts: create .venv (once), install the pinned requirements and skillgpt itself.
# Installs only when needed: a stamp in the venv records the hash of the requirement files and
# pyproject.toml it was installed from; pip runs again only when they change (or SKILLGPT_REINSTALL=1).
# Set SKILLGPT_VENV to use another location; WITH_TESTS=1 also installs the test requirements.
set -euo pipefail
VENV=${SKILLGPT_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
wanted=(requirements.txt pyproject.toml)
if [ "${WITH_TESTS:-0}" = "1" ]; then
  wanted+=(requirements-test.txt)
fi
stamp="$VENV/.skillgpt-install-$(cat "${wanted[@]}" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "${SKILLGPT_REINSTALL:-0}" != "1" ]; then
  echo "[setup] $VENV is up to date (requirements unchanged; SKILLGPT_REINSTALL=1 to reinstall)"
else
  echo "[setup] installing pinned requirements into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
  if [ "${WITH_TESTS:-0}" = "1" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-test.txt
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"
