#!/usr/bin/env bash
# Browser tests of the web console: installs the pinned playwright-core and
# runs the tests with Node's test runner against a real latchkey binary.
#   LATCHKEY_BIN   latchkey binary (default: $CARGO_TARGET_DIR/debug/latchkey, else target/debug/latchkey
#                  of this workspace; build it first with `cargo build`)
#   CHROMIUM_PATH  Chromium binary (default: /usr/bin/chromium, Debian's `chromium` package)
set -euo pipefail
if [ -n "${LATCHKEY_BIN:-}" ]; then LATCHKEY_BIN="$(realpath -m "$LATCHKEY_BIN")"; export LATCHKEY_BIN; fi
if [ -n "${CARGO_TARGET_DIR:-}" ]; then CARGO_TARGET_DIR="$(realpath -m "$CARGO_TARGET_DIR")"; export CARGO_TARGET_DIR; fi
cd "$(dirname "$0")"

chromium_path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium_path" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium package..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium not found at $chromium_path: install Debian's chromium package or set CHROMIUM_PATH" >&2
    exit 1
  fi
fi

npm ci --no-audit --no-fund
exec node --test --test-concurrency=1 console.test.mjs
