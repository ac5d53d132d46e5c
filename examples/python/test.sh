#!/usr/bin/env bash
# The Python example against a live latchkey: installs the pinned packages of
# requirements.txt into .venv here, then runs the unittest suite, which
# starts `latchkey serve` itself.
#   LATCHKEY_BIN   latchkey binary (default: target/debug/latchkey of this workspace)
set -euo pipefail
if [ -n "${LATCHKEY_BIN:-}" ]; then LATCHKEY_BIN="$(realpath -m "$LATCHKEY_BIN")"; export LATCHKEY_BIN; fi
cd "$(dirname "$0")"

PYTHON="$(command -v python3 || command -v python || true)"
if [ -z "$PYTHON" ]; then
  echo "python example: Python 3.10+ is needed (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || {
    echo "python example: cannot create a virtualenv; install Python's venv module (Debian: python3-venv)" >&2
    exit 1
  }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt || {
  echo "python example: pip could not install requirements.txt (PyJWT, cryptography) from PyPI" >&2
  exit 1
}
exec .venv/bin/python -m unittest discover -v -s tests -t .
