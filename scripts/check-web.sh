#!/usr/bin/env bash
# End-to-end test of the notes web page at GET /: start the server on a fresh SQLite
# database and drive Debian's headless Chromium through web-tests/flow.mjs (playwright-core, no
# browser download). Screenshots go to target/web/. Usage: scripts/check-web.sh PATH_TO_API_BINARY
set -euo pipefail
api_bin=$(realpath "${1:?usage: check-web.sh PATH_TO_API_BINARY}")
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/web"

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# playwright-core needs Node.js 20 or later (the machine's node; Debian's own nodejs is 18).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null; then
  echo "check-web.sh needs Node.js >= 20 and npm (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

# npm ci when node_modules is missing or was installed from another lock file (npm ci keeps
# a copy of the lock it installed in node_modules/.package-lock.json, without the root entry).
tests="$root/web-tests"
if ! node -e '
    const [a, b] = process.argv.slice(1).map((f) => require(f).packages);
    delete a[""];
    process.exit(JSON.stringify(a) === JSON.stringify(b) ? 0 : 1);' \
    "$tests/package-lock.json" "$tests/node_modules/.package-lock.json" 2>/dev/null; then
  echo "npm ci (web-tests)"
  (cd "$tests" && npm ci --no-audit --no-fund --loglevel=error)
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

mkdir -p "$out"
status=0
timeout 300 node "$tests/flow.mjs" "http://$address" "$out" "$work/data/mail" || status=$?
if [ "$status" != 0 ]; then
  echo "web flow failed (exit $status); the server's last log lines:"
  tail -n 20 "$log"
  exit "$status"
fi
