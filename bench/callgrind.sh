#!/usr/bin/env bash
# Instructions per request of the api and the baseline, counted by callgrind: a repeatable
# measure where wrk's requests/s swing with the machine.
#
#   bench/callgrind.sh [SCENARIO [REQUESTS]]     SCENARIO: get (default), list or post
#
# Makes a database — PostgreSQL (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432;
# dropped at exit), or a SQLite file with BENCH_BACKEND=sqlite — signs the bench user up and in
# through the api (run once without valgrind) and gives that user 100 000 notes, then runs each
# server, sending the user's bearer token with every request, under
# `valgrind --tool=callgrind` twice — 200 requests, then 200 + REQUESTS (default 2000), one
# at a time on one keep-alive connection — and reports (total₂ − total₁) / REQUESTS, so
# start-up (migrations, pool) cancels out. The one start-up cost that varies from run to run,
# quanta's clock calibration (`quanta::Clock::new`, 8–12 M instructions: ±1.5 k per request
# at 2 000 requests), is left out of the count (`--toggle-collect`).
# BENCH_API_BIN=path profiles that api binary instead of the one just built (to compare two
# commits: build the other one, copy its binary aside, point this at it).
# With CG_DIFF=1 it also lists the functions whose cost per request differs most between the
# two servers. CG_KEEP=1 keeps the callgrind files (the script prints where).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
SCENARIO=${1:-get}
REQUESTS=${2:-2000}
case "$SCENARIO" in get | list | post) ;; *) echo "usage: bench/callgrind.sh [get|list|post [REQUESTS]]" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "bench/callgrind.sh: valgrind is not installed" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/notes-api/target}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
DB=cg_notes_$$
PORT=${BENCH_PORT:-18790}
WORK=$(mktemp -d)
trap 'psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1; [ -n "${CG_KEEP:-}" ] || rm -rf "$WORK"' EXIT

cargo build --release --quiet -p api -p migration -p bench --bins
BIN=$CARGO_TARGET_DIR/release
API_BIN=${BENCH_API_BIN:-$BIN/api}
case ${BENCH_BACKEND:-postgres} in
  postgres)
    URL=$PG_URL/$DB
    psql -q "$PG_URL/postgres" -c "CREATE DATABASE $DB" >/dev/null
    FILL=(postgres "$URL")
    ;;
  sqlite)
    command -v sqlite3 >/dev/null || { echo "bench/callgrind.sh: sqlite3 is not installed" >&2; exit 1; }
    URL="sqlite://$WORK/notes.db?mode=rwc"
    FILL=(sqlite "$WORK/notes.db")
    ;;
  *) echo "bench/callgrind.sh: BENCH_BACKEND is postgres or sqlite" >&2; exit 2 ;;
esac
DATABASE_URL=$URL "$BIN/migration" up >/dev/null

# The bench user and its token, made by the api (natively: argon2 under valgrind is slow).
DATABASE_URL=$URL HOST=127.0.0.1 PORT=$PORT RUST_LOG=warn AUTO_MIGRATE=false \
  "$API_BIN" >"$WORK/session.log" 2>&1 &
SIGNER=$!
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")" = 200 ] && break
  sleep 0.1
done
SESSION=$(bench_session "http://127.0.0.1:$PORT") || { kill "$SIGNER"; cat "$WORK/session.log" >&2; exit 1; }
read -r OWNER TOKEN <<<"$SESSION"
kill -INT "$SIGNER"
wait "$SIGNER" 2>/dev/null || true
fill_notes "${FILL[@]}" 100000 "$OWNER"

# drive N: N requests of the scenario, each answered 2xx before the next is sent.
drive() {
  python3 - "$PORT" "$SCENARIO" "$1" "$TOKEN" <<'PY'
import random, socket, sys
port, scenario, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
auth = b"Authorization: Bearer %s\r\n" % sys.argv[4].encode()
body = b'{"text":"a note written by the benchmark","completed":false}'
def request():
    if scenario == "get":
        return b"GET /notes/%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (random.randint(1, 100000), auth)
    if scenario == "list":
        return b"GET /notes?limit=100 HTTP/1.1\r\nHost: x\r\n%s\r\n" % auth
    return (b"POST /notes HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (auth, len(body), body))
conn = socket.create_connection(("127.0.0.1", port))
replies = conn.makefile("rb")
for _ in range(n):
    conn.sendall(request())
    status = replies.readline()
    if b" 20" not in status:
        sys.exit(f"unexpected answer: {status!r}")
    length = 0
    while (line := replies.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    replies.read(length)
PY
}

server_bin() { if [ "$1" = api ]; then echo "$API_BIN"; else echo "$BIN/$1"; fi; }

# profile SERVER N: callgrind output of SERVER answering N requests.
profile() {
  local out=$WORK/$1.$2.out pid
  DATABASE_URL=$URL HOST=127.0.0.1 PORT=$PORT RUST_LOG=warn \
    valgrind --tool=callgrind --vgdb=no --toggle-collect='quanta::Clock::new' --collect-atstart=yes \
      --callgrind-out-file="$out" "$(server_bin "$1")" >"$WORK/$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/notes?limit=1" && break
    sleep 0.2
  done
  drive "$2"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
}

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen++ { gsub(",", "", $1); print $1 }'; }

for server in api baseline; do
  profile "$server" 200
  profile "$server" $((200 + REQUESTS))
  a=$(total "$WORK/$server.200.out")
  b=$(total "$WORK/$server.$((200 + REQUESTS)).out")
  echo "$server $SCENARIO: $(((b - a) / REQUESTS)) instructions per request"
done

[ -z "${CG_KEEP:-}" ] || echo "callgrind files in $WORK"
[ "${CG_DIFF:-0}" = 1 ] || exit 0
python3 - "$WORK" "$REQUESTS" <<'PY'
import collections, re, subprocess, sys
work, n = sys.argv[1], int(sys.argv[2])
def functions(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path],
                         capture_output=True, text=True).stdout
    cost = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            name = re.sub(r" \[[^\]]*\]$", "", m.group(2)).split(":", 1)[-1]
            cost[name] += int(m.group(1).replace(",", ""))
    return cost
def per_request(server):
    a, b = functions(f"{work}/{server}.200.out"), functions(f"{work}/{server}.{n + 200}.out")
    return {k: (b[k] - a.get(k, 0)) / n for k in b}
api, base = per_request("api"), per_request("baseline")
print(f"{'api':>9} {'baseline':>9} {'diff':>9}  function (instructions per request)")
for k in sorted(set(api) | set(base), key=lambda k: -abs(api.get(k, 0) - base.get(k, 0)))[:40]:
    print(f"{api.get(k, 0):9.0f} {base.get(k, 0):9.0f} {api.get(k, 0) - base.get(k, 0):9.0f}  {k[:140]}")
PY
