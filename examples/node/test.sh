#!/usr/bin/env bash
# The Node example against a live latchkey: installs the locked packages
# (npm ci), then runs the tests with Node's test runner; they start
# `latchkey serve` themselves.
#   LATCHKEY_BIN   latchkey binary (default: target/debug/latchkey of this workspace)
set -euo pipefail
if [ -n "${LATCHKEY_BIN:-}" ]; then LATCHKEY_BIN="$(realpath -m "$LATCHKEY_BIN")"; export LATCHKEY_BIN; fi
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node example: Node 20+ with npm is needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "node example: Node 20+ is needed, found $(node --version)" >&2
  exit 1
fi
npm ci --no-audit --no-fund || {
  echo "node example: npm ci could not install jose and @sd-jwt/jwt-status-list from the npm registry" >&2
  exit 1
}
exec node --test --test-concurrency=1 test/*.test.mjs
