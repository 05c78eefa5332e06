#!/usr/bin/env bash
# Set up the environment and run the whole test suite (CPU only, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TESTS=1 source scripts/setup_env.sh

# The browser test (tests/serve/test_demo_browser.py) drives the system's Chromium through Playwright; it
# never downloads a browser. Install Debian's `chromium` when missing (as root, or with password-less sudo).
# SKILLGPT_CHROMIUM=/path/to/chrome uses another binary; SKILLGPT_NO_APT=1 never calls apt-get.
ensure_chromium() {
  local name sudo="" log
  if [ -n "${SKILLGPT_CHROMIUM:-}" ]; then return 0; fi
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then return 0; fi
  done
  local skip="the browser test will be skipped (install Debian's chromium, or set SKILLGPT_CHROMIUM)"
  if [ "${SKILLGPT_NO_APT:-0}" = "1" ]; then echo "[test] no Chromium and SKILLGPT_NO_APT=1: $skip"; return 0; fi
  if ! command -v apt-get >/dev/null 2>&1; then echo "[test] no Chromium and no apt-get: $skip"; return 0; fi
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "[test] no Chromium, and installing it needs root: $skip"; return 0
    fi
  fi
  log=$(mktemp -t skillgpt-apt.XXXXXX)
  echo "[test] installing Chromium with apt-get (log: $log)"
  if { $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >"$log" 2>&1; then
    echo "[test] Chromium installed: $(command -v chromium)"
  else
    echo "[test] apt-get could not install chromium (see $log): $skip"
  fi
}
ensure_chromium

python bench/logits_check.py
# Two pytest workers (SKILLGPT_TEST_WORKERS=N for another count, 0 for none), each test file on one worker, each
# worker on one torch thread (tests/conftest.py): on 2 cores this halves the wall time of one process with 2
# threads, whose tiny models leave the second core mostly idle (bench/RESULTS.md, "Test suite wall time").
workers=${SKILLGPT_TEST_WORKERS:-2}
if [ "$workers" = "0" ]; then
  python -m pytest tests "$@"
else
  python -m pytest tests -n "$workers" --dist loadfile "$@"
fi
