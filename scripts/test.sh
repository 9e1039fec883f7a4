#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root), then runs it all.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    ffmpeg sox espeak-ng chromium pulseaudio pulseaudio-utils openssl haproxy >/dev/null
fi
python3 -m pip install -q --upgrade pip
python3 -m pip install -q -e ".[test]"
python3 -m ruff check src tests bench
python3 -m ruff format --check src tests bench
python3 -m mypy
python3 -m pytest -q -p no:cacheprovider "$@"
