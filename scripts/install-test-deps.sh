#!/usr/bin/env bash
# System packages the test suite needs beyond the Python ones: Debian's chromium and
# chromium-driver, for tests/test_browser.py (without them that test is skipped).
#
# Idempotent and quick when they are installed already: no apt-get then.
# Needs root, or sudo. Usage: bash scripts/install-test-deps.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install-test-deps: chromium and chromedriver already installed"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: run as root (or install sudo)" >&2; exit 1; }
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
echo "install-test-deps: installed $(chromium --version 2>/dev/null || echo chromium)"
