#!/usr/bin/env bash
# Render /docs in headless Chromium with no network but loopback, and check that the page lists
# every route of the API. Usage: scripts/check-docs.sh PATH_TO_API_BINARY
set -euo pipefail
api_bin=${1:?usage: check-docs.sh PATH_TO_API_BINARY}

if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
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
