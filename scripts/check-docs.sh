#!/usr/bin/env bash
# Render /docs in headless Chromium with no network but loopback, and check that the page lists
# every route of the API; validate the served /openapi.json with a standard validator
# (openapi-spec-validator, from PyPI) and check every operationId is unique.
# Usage: scripts/check-docs.sh PATH_TO_API_BINARY
set -euo pipefail
api_bin=${1:?usage: check-docs.sh PATH_TO_API_BINARY}

if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  echo "installing openapi-spec-validator (pip)"
  python3 -m pip install --quiet --disable-pip-version-check 'openapi-spec-validator>=0.7,<0.8'
fi

work=$(mktemp -d)
log="$work/api.log"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

(cd "$work" && PORT=0 LOG_FORMAT=json RUST_LOG=info exec "$api_bin" 2>"$log") &
pid=$!
address=""
for _ in $(seq 1 100); do
  address=$(grep -o '"message":"serving","address":"[^"]*"' "$log" 2>/dev/null | sed 's/.*"address":"//; s/"$//') || true
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "$address" ] || { echo "the server did not start:"; cat "$log"; exit 1; }

curl -fsS "http://$address/openapi.json" -o "$work/openapi.json"
python3 - "$work/openapi.json" <<'PY'
import collections, json, sys
from openapi_spec_validator import validate
with open(sys.argv[1]) as f:
    document = json.load(f)
validate(document)
ids = [op.get("operationId") for item in document["paths"].values()
       for method, op in item.items() if isinstance(op, dict) and "responses" in op]
repeated = [i for i, n in collections.Counter(ids).items() if n > 1 or i is None]
if repeated:
    sys.exit(f"operationIds missing or used more than once: {repeated}")
print(f"/openapi.json is valid OpenAPI {document['openapi']}; {len(ids)} operations, unique operationIds")
PY

dom="$work/dom.html"
timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --virtual-time-budget=15000 \
  --dump-dom "http://$address/docs" >"$dom" 2>/dev/null

missing=0
for path in /notes /notes/bulk /notes/export '/notes/{id}' /users '/users/{id}' /healthz /readyz /metrics; do
  if ! grep -q "data-path=\"$path\"" "$dom"; then
    echo "the docs page does not list $path"
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1
echo "docs page renders $(grep -o 'class="opblock-summary-path"' "$dom" | wc -l) operations offline"
