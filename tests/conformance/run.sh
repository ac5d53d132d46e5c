#!/usr/bin/env bash
# API conformance: schemathesis against /openapi.json of a live latchkey
# (docs/security.md, "API conformance"). Starts `latchkey serve` on a free
# loopback port with a throwaway data directory, authenticates with the
# bootstrap admin token, and fails on any 5xx or any response that
# contradicts the schema (status code, content type, headers, body).
#
#   LATCHKEY_BIN                 the server binary (default target/debug/latchkey)
#   CONFORMANCE_MAX_EXAMPLES     examples per operation and phase (default 25)
#   CONFORMANCE_SEED             hypothesis seed (default fixed, for reproducible runs)
# Extra arguments go to `schemathesis run` (e.g. --report har --report-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN="${LATCHKEY_BIN:-target/debug/latchkey}"
MAX_EXAMPLES="${CONFORMANCE_MAX_EXAMPLES:-25}"
SEED="${CONFORMANCE_SEED:-20260601}"
SCHEMATHESIS_SPEC='schemathesis>=4.3,<5'

if [ ! -x "$BIN" ]; then
  echo "conformance: $BIN is not an executable; build it first (cargo build --bin latchkey)" >&2
  exit 2
fi
PYTHON="$(command -v python3 || command -v python)"
if ! "$PYTHON" -c 'import schemathesis' >/dev/null 2>&1; then
  echo "conformance: installing $SCHEMATHESIS_SPEC"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "$SCHEMATHESIS_SPEC"
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT"

env -u LATCHKEY_CONFIG LATCHKEY_LOG=warn "$BIN" serve \
  --listen "127.0.0.1:$PORT" \
  --issuer "$BASE" \
  --data-dir "$WORK/data" \
  --keys-dir "$WORK/keys" \
  --bootstrap-token-file "$WORK/bootstrap.token" \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# Wait (at most 30 s) for /healthz and the bootstrap token.
ready=""
for _ in $(seq 1 150); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "conformance: the server exited early:" >&2
    cat "$WORK/server.log" >&2
    exit 1
  fi
  if [ -s "$WORK/bootstrap.token" ] && "$PYTHON" - "$BASE/healthz" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
  then
    ready=1
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "conformance: the server did not become ready in 30 s" >&2
  cat "$WORK/server.log" >&2
  exit 1
fi
TOKEN="$(tr -d '[:space:]' <"$WORK/bootstrap.token")"

# Schemathesis finds the bootstrap admin's id in GET /v1/keys and its signing
# key in GET /v1/signing-keys, and will happily suspend, revoke or retire
# them, after which every request is a 401 and nothing else gets tested. The
# hook keeps the harness's own credential alive (those calls target an
# unknown id instead, and are still checked). Random ids only ever reach the
# 404 path, so every other call of an operation on /v1/keys/{id} gets the id
# of a real key made for that operation, and its success responses are
# checked too. It also renames the one `/v1/status/{list}` value that is
# really the excluded, never-ending `/v1/status/stream` operation.
"$PYTHON" - "$BASE" "$TOKEN" "$WORK/hooks.py" <<'PY'
import base64, json, sys, urllib.request

base, token, out = sys.argv[1:4]

def claims(i):
    s = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

def post(path, body=None):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)

def create(name, roles, accounts=None):
    body = {"name": name, "roles": roles}
    if accounts:
        body["accounts"] = accounts
    return post("/v1/keys", body)["key"]["id"]

real = {
    ("GET", "/v1/keys/{id}"): create("conformance-get", ["cloud_account_viewer"], ["acct-1"]),
    ("PATCH", "/v1/keys/{id}"): create("conformance-patch", ["global_viewer"]),
    ("DELETE", "/v1/keys/{id}"): create("conformance-delete", ["global_viewer"]),
    ("POST", "/v1/keys/{id}/renew"): create("conformance-renew", ["global_viewer"]),
    ("POST", "/v1/keys/{id}/suspend"): create("conformance-suspend", ["global_viewer"]),
    ("POST", "/v1/keys/{id}/resume"): create("conformance-resume", ["global_viewer"]),
}
# Resume needs a suspended key.
post("/v1/keys/" + real[("POST", "/v1/keys/{id}/resume")] + "/suspend")
settings = {
    "protected": {"id": claims(1)["sub"], "kid": claims(0)["kid"]},
    "real": {f"{m} {p}": v for (m, p), v in real.items()},
}
hooks = r"""
import itertools
import json

import schemathesis

SETTINGS = json.loads(%r)
PROTECTED = SETTINGS["protected"]
REAL = SETTINGS["real"]
UNKNOWN = {"id": "00000000-0000-7000-8000-000000000000", "kid": "conformance-unknown-kid"}
CREDENTIAL_KILLERS = {
    "DELETE /v1/keys/{id}",
    "POST /v1/keys/{id}/suspend",
    "POST /v1/keys/{id}/renew",
    "POST /v1/signing-keys/{kid}/retire",
}
CALLS = {name: itertools.count() for name in REAL}


@schemathesis.hook
def before_call(context, case, kwargs):
    params = case.path_parameters
    if not params:
        return
    operation = f"{case.method.upper()} {case.path}"
    if operation in CREDENTIAL_KILLERS:
        for name, value in PROTECTED.items():
            if str(params.get(name)) == value:
                params[name] = UNKNOWN[name]
    if operation in REAL and next(CALLS[operation]) %% 2 == 0:
        params["id"] = REAL[operation]
    if case.path == "/v1/status/{list}" and str(params.get("list")) == "stream":
        params["list"] = "stream-is-excluded"
""" % json.dumps(settings)
with open(out, "w") as f:
    f.write(hooks)
PY

echo "conformance: schemathesis against $BASE/openapi.json ($MAX_EXAMPLES examples per operation, seed $SEED)"
status=0
SCHEMATHESIS_HOOKS="$WORK/hooks.py" "$PYTHON" -m schemathesis.cli run "$BASE/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --exclude-path /v1/status/stream \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 10 \
  --generation-database none \
  --no-color \
  "$@" \
  || status=$?

if [ "$status" -ne 0 ]; then
  echo "conformance: FAILED (schemathesis exit $status); server log:" >&2
  tail -n 50 "$WORK/server.log" >&2
fi
exit "$status"
