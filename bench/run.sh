#!/usr/bin/env bash
# Benchmark: the `api` server against a hand-written actix-web + sqlx baseline (bench/src/main.rs),
# side by side, on SQLite and PostgreSQL.
#
#   bench/run.sh            full run; writes bench/RESULTS.md and bench/results.json
#   bench/run.sh --smoke    ~2 s of GET /notes/{id} per server on SQLite only (for CI); writes
#                           nothing, exits non-zero if a server fails or answers an error
#
# What it does:
#   1. builds `api` and `baseline` in release (into $CARGO_TARGET_DIR, default
#      ~/.cache/notes-api/target) and installs wrk (Debian package) if it is missing;
#   2. per backend, makes a fresh database — a SQLite file in a temporary directory, a PostgreSQL
#      database named bench_notes_<pid> — migrated by the api itself (AUTO_MIGRATE=true), signs
#      the bench user up and in through the api (POST /users, POST /sessions: one bearer token)
#      and bulk-loads BENCH_ROWS notes owned by that user in one INSERT … SELECT;
#   3. runs both servers at once on the same database and pool size — so the api's session is
#      the baseline's too — checks that both refuse a request without the token and answer the
#      same JSON with it, and drives one at a time
#      with wrk (BENCH_CONNECTIONS connections, BENCH_THREADS threads), alternating api and
#      baseline, with an unrecorded warm-up before each measured run; each scenario runs
#      BENCH_ROUNDS rounds (api and baseline once each, who goes first alternating) and the
#      report gives the median of the rounds, as one run swings with the machine. Every
#      request carries the token (`Authorization: Bearer`), which each server looks up in
#      `sessions` per request. Scenarios:
#        get   GET /notes/{id}, random ids in 1..BENCH_ROWS
#        list  GET /notes?limit=100
#        post  POST /notes
#        mix   90 % GET /notes/{id}, 10 % POST /notes
#        postkey  POST /notes with a new Idempotency-Key each (the baseline ignores the header:
#              the report compares the api with a key to the api without one)
#      For each: requests/s, p50 and p99 latency, errors (non-2xx + socket errors) and the
#      server's peak RSS during the run (VmHWM, reset through /proc/PID/clear_refs);
#   3b. scenario `replica` (PostgreSQL only; run when a streaming replica of BENCH_PG_URL
#      answers on BENCH_REPLICA_URL, e.g. `scripts/pg-replica.sh up`, else skipped, with the
#      reason in the log and the report): waits until the replica has replayed the bench
#      database, starts a second api on BENCH_PORT+2 with DATABASE_READ_URL set to it, and
#      drives the api alone on the primary and the api with the replica on the same data with
#      the same read scenarios (BENCH_REPLICA_SCENARIOS), rounds alternating like above:
#      requests/s, p50, p99, and the share of read-only requests the replica served
#      (`db_reads_total{target=...}` of the api's /metrics, over the measured run). On one
#      machine this shows the overhead of a replica, not a gain (see bench/RESULTS.md);
#   4. brings the table to exactly BENCH_EXPORT_ROWS rows (the write scenarios add some) and
#      downloads GET /notes/export from each server: rows/s and peak RSS growth over the RSS
#      before the request;
#   5. writes the tables; on exit (also on error or Ctrl-C) stops the servers, drops the
#      PostgreSQL database and removes the temporary directory.
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10]        seconds per measured run      BENCH_WARMUP [2]  seconds of warm-up
#   BENCH_ROUNDS [3]           measured rounds per scenario and backend
#   BENCH_SCENARIOS ["get list post mix postkey replica"]
#   BENCH_REPLICA_URL [postgres://postgres@127.0.0.1:5433]   the replica, no database name
#   BENCH_REPLICA_SCENARIOS ["get list"]                       read scenarios of `replica`
#   BENCH_REPLICA_WAIT [120]   seconds to wait for the replica to replay the bench database
#   READ_MAX_LAG_MS            passed to the api with the replica when set (else its default)
#   BENCH_CONNECTIONS [64]     BENCH_THREADS [2]             BENCH_ROWS [100000]
#   BENCH_EXPORT_ROWS [1000000]                              BENCH_BACKENDS ["sqlite postgres"]
#   BENCH_PG_URL [postgres://postgres@127.0.0.1:5432]        server, no database name
#   BENCH_PORT [18700]         the api listens there, the baseline on BENCH_PORT+1
#   BENCH_QUIET_PCT [15]       before each measured run, wait while other processes keep the
#   BENCH_QUIET_WAIT [120]     CPUs busier than this (%), at most this long (s; 0 in --smoke)
#   DB_POOL_MAX / DB_POOL_MIN  passed to both servers when set (else each backend's default)
#
# Servers and load generator share the machine: the ratios of one run are what count, the
# absolute figures are context. Benchmarks never run as timed assertions in the tests.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

SMOKE=false
case "${1:-}" in
  "") ;;
  --smoke) SMOKE=true ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: bench/run.sh [--smoke]" >&2
    exit 2
    ;;
esac

DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROWS=${BENCH_ROWS:-100000}
EXPORT_ROWS=${BENCH_EXPORT_ROWS:-1000000}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT_API=${BENCH_PORT:-18700}
PORT_BASE=$((PORT_API + 1))
PORT_READ=$((PORT_API + 2))
REPLICA_URL=${BENCH_REPLICA_URL:-postgres://postgres@127.0.0.1:5433}
REPLICA_SCENARIOS=${BENCH_REPLICA_SCENARIOS:-get list}
REPLICA_WAIT=${BENCH_REPLICA_WAIT:-120}
QUIET_PCT=${BENCH_QUIET_PCT:-15}
QUIET_WAIT=${BENCH_QUIET_WAIT:-120}
DEFAULT_SCENARIOS="get list post mix postkey replica"
SCENARIOS=${BENCH_SCENARIOS:-$DEFAULT_SCENARIOS}
if $SMOKE; then
  DURATION=${BENCH_DURATION:-2}
  WARMUP=0
  ROUNDS=1
  QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
  ROWS=${BENCH_ROWS:-1000}
  BACKENDS=sqlite
  SCENARIOS=get
fi
# `replica` is not an api-against-baseline scenario: it runs on its own, after the others.
COMPARED=""
RUN_REPLICA=false
for scenario in $SCENARIOS; do
  if [ "$scenario" = replica ]; then RUN_REPLICA=true; else COMPARED="$COMPARED $scenario"; fi
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/notes-api/target}
API_BIN=$CARGO_TARGET_DIR/release/api
BASELINE_BIN=$CARGO_TARGET_DIR/release/baseline

WORK=$(mktemp -d "${TMPDIR:-/tmp}/notes-bench.XXXXXX")
RAW=$WORK/raw.jsonl
: >"$RAW"
PG_DB=bench_notes_$$
PG_CREATED=false
declare -A PID=()

cleanup() {
  local status=$?
  for name in "${!PID[@]}"; do stop_server "$name"; done
  if $PG_CREATED; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
      echo "bench: could not drop database $PG_DB" >&2
  fi
  if [ $status -ne 0 ] && [ -d "$WORK" ]; then
    for f in "$WORK"/*.log; do
      [ -s "$f" ] && { echo "--- last lines of $(basename "$f")" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$WORK"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. build and tools --------------------------------------------------------------------
log "building api and baseline (release, $CARGO_TARGET_DIR)"
# The whole workspace with all targets: the same feature set as the README's test command, so
# after the tests (or in CI) this builds nothing new, and the cache holds one build.
cargo build --release --quiet --workspace --all-targets
ensure_tools

# --- helpers (more in bench/lib.sh) ---------------------------------------------------------
# start_server NAME URL: start api, baseline or api_read (the api with DATABASE_READ_URL set to
# the replica's copy of the database) on DATABASE_URL=URL and wait until it answers.
start_server() {
  local name=$1 url=$2 bin=$API_BIN port read_url=""
  port=$(port_of "$name")
  case $name in
    baseline) bin=$BASELINE_BIN ;;
    api_read) read_url=$REPLICA_URL/${url##*/} ;;
  esac
  launch_server "$name" "$bin" "$port" DATABASE_URL="$url" DATABASE_READ_URL="$read_url" AUTO_MIGRATE=true
}

# check_servers [SERVER...]: the servers (api and baseline unless named) refuse GET /notes/1
# without the token (401) and answer it with the token (200), with the same body: the same
# check, the same note, the same JSON.
check_servers() {
  local server port status body first="" servers=("$@")
  [ $# -gt 0 ] || servers=(api baseline)
  for server in "${servers[@]}"; do
    port=$(port_of "$server")
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/notes/1")
    [ "$status" = 401 ] || { echo "bench: $server answered $status without a token (not 401)" >&2; exit 1; }
    body=$(curl -sS -w '\n%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/notes/1")
    status=${body##*$'\n'}
    body=${body%$'\n'*}
    [ "$status" = 200 ] || { echo "bench: $server answered $status with the token: $body" >&2; exit 1; }
    if [ -z "$first" ]; then
      first=$body
    elif [ "$body" != "$first" ]; then
      printf 'bench: the servers answer GET /notes/1 differently:\n  api      %s\n  %-8s %s\n' "$first" "$server" "$body" >&2
      exit 1
    fi
  done
}

port_of() {
  case $1 in
    api) echo "$PORT_API" ;;
    baseline) echo "$PORT_BASE" ;;
    api_read) echo "$PORT_READ" ;;
  esac
}

# db_reads PORT: the api's read-only requests so far by where they read, "REPLICA PRIMARY"
# (db_reads_total{target=...} of its /metrics; 0 0 without a replica, which it never counts).
db_reads() {
  curl -sS --max-time 10 "http://127.0.0.1:$1/metrics" | awk '
    /^db_reads_total\{.*target="replica"/ { r += $NF }
    /^db_reads_total\{.*target="primary"/ { p += $NF }
    END { printf "%d %d\n", r, p }'
}

# load_rows BACKEND TARGET: insert notes of the bench user (OWNER) until the table holds
# TARGET rows (one statement).
load_rows() {
  if [ "$1" = sqlite ]; then
    fill_notes sqlite "$WORK/bench.db" "$2" "$OWNER"
  else
    fill_notes postgres "$PG_URL/$PG_DB" "$2" "$OWNER"
  fi
}

# drive BACKEND SCENARIO SERVER ROUND: one warm-up and one measured wrk run; appends a JSON line
# of kind DRIVE_KIND: `load`, or `replica` (which also records where the api read).
DRIVE_KIND=load
drive() {
  local backend=$1 scenario=$2 server=$3 round=$4 port out line pid reads_before reads=""
  port=$(port_of "$server")
  pid=${PID[$server]}
  export WRK_SCENARIO=$scenario WRK_MAX_ID=$ROWS WRK_WRITE_PCT=10 WRK_TOKEN=$TOKEN
  if [ "$WARMUP" -gt 0 ]; then
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 5s -s "$BENCH_DIR/wrk.lua" \
      "http://127.0.0.1:$port" >/dev/null
  fi
  wait_quiet
  [ "$DRIVE_KIND" = load ] || reads_before=$(db_reads "$port")
  reset_peak "$pid"
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$BENCH_DIR/wrk.lua" \
    "http://127.0.0.1:$port")
  kill -0 "$pid" 2>/dev/null || { echo "bench: $server died during $scenario on $backend ($(exit_of "$pid"))" >&2; exit 1; }
  line=$(grep '^BENCH_JSON ' <<<"$out" | sed 's/^BENCH_JSON //')
  [ -n "$line" ] || { echo "bench: no report from wrk:" >&2; echo "$out" >&2; exit 1; }
  if [ "$DRIVE_KIND" != load ]; then
    reads=$(awk -v a="$reads_before" -v b="$(db_reads "$port")" 'BEGIN { split(a, x, " "); split(b, y, " ");
      printf ",\"reads\":{\"replica\":%d,\"primary\":%d}", y[1] - x[1], y[2] - x[2] }')
  fi
  printf '{"kind":"%s","backend":"%s","scenario":"%s","server":"%s","round":%s,"peak_rss_kib":%s,"background_busy_pct":%s%s,"wrk":%s}\n' \
    "$DRIVE_KIND" "$backend" "$scenario" "$server" "$round" "$(kib "$pid" VmHWM)" "$BUSY" "$reads" "$line" >>"$RAW"
  summary "$backend" "$scenario" "$server" "$line"
  if [ -n "$reads" ]; then
    awk -v r="$reads" 'BEGIN { gsub(/[^0-9,]/, "", r); split(r, n, ",");
      printf "             read-only requests on the replica: %d of %d\n", n[2], n[2] + n[3] }' >&2
  fi
}

# One human line per run, and the smoke test's verdict.
FAILED=0
field() { grep -o "\"$1\":[0-9.]*" <<<"$2" | cut -d: -f2 | paste -sd' '; }
summary() {
  local requests errors
  requests=$(field requests "$4")
  errors=$(field 'errors_[a-z]*' "$4" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; print s }')
  awk -v b="$1" -v s="$2" -v srv="$3" -v n="$requests" -v us="$(field duration_us "$4")" \
    -v p50="$(field p50_us "$4")" -v p99="$(field p99_us "$4")" -v e="$errors" 'BEGIN {
      printf "    %-8s %-5s %-8s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n",
        b, s, srv, n * 1e6 / us, p50 / 1000, p99 / 1000, e }' >&2
  if [ "$errors" -ne 0 ] || [ "$requests" -eq 0 ]; then FAILED=1; fi
}

# export_run BACKEND SERVER: download /notes/export once; appends a JSON line.
export_run() {
  local backend=$1 server=$2 port pid before start end lines peak seconds
  port=$(port_of "$server")
  pid=${PID[$server]}
  wait_quiet
  before=$(kib "$pid" VmRSS)
  reset_peak "$pid"
  start=$(date +%s%N)
  lines=$(curl -sSf --max-time 600 -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$port/notes/export" | wc -l)
  end=$(date +%s%N)
  peak=$(kib "$pid" VmHWM)
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  printf '{"kind":"export","backend":"%s","server":"%s","rows":%s,"seconds":%s,"rss_before_kib":%s,"peak_rss_kib":%s,"background_busy_pct":%s}\n' \
    "$backend" "$server" "$lines" "$seconds" "$before" "$peak" "$BUSY" >>"$RAW"
  printf '    %-8s export %-8s %8d rows in %6.2f s, RSS %d -> peak %d KiB\n' \
    "$backend" "$server" "$lines" "$seconds" "$before" "$peak" >&2
}

# --- the read replica (scenario `replica`) ---------------------------------------------------
# The replica's address without its password, for the log and the report.
REPLICA_SHOWN=$(sed -E 's#//([^:@/]*):[^@/]*@#//\1:***@#' <<<"$REPLICA_URL")
replica_sql() { PGCONNECT_TIMEOUT=5 psql -XAtq "$REPLICA_URL/$1" -c "$2" 2>&1; }

# replica_skipped REASON: say why the replica scenario does not run, here and in the report.
replica_skipped() {
  log "replica scenario skipped: $1"
  local reason=${1//[[:cntrl:]]/ }
  reason=${reason//\\/\\\\}
  printf '{"kind":"replica_skipped","reason":"%s"}\n' "${reason//\"/\\\"}" >>"$RAW"
}

# replica_ready: a replica answers on REPLICA_URL and has replayed the bench database as the
# primary has it now (its data, and what the write scenarios added); else prints why not.
replica_ready() {
  local answer lsn deadline=$((SECONDS + REPLICA_WAIT))
  if ! answer=$(replica_sql postgres "SELECT pg_is_in_recovery()"); then
    echo "no PostgreSQL answers on $REPLICA_SHOWN ($(head -n 1 <<<"$answer" | sed 's/^psql: error: //')); start one with scripts/pg-replica.sh up"
    return 1
  fi
  if [ "$answer" != t ]; then
    echo "$REPLICA_SHOWN is not a replica (pg_is_in_recovery() is '$answer')"
    return 1
  fi
  lsn=$(psql -XAtq "$PG_URL/$PG_DB" -c "SELECT pg_current_wal_lsn()")
  until [ "$(replica_sql postgres "SELECT count(*) FROM pg_database WHERE datname = '$PG_DB'")" = 1 ] &&
    [ "$(replica_sql "$PG_DB" "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ]; do
    if [ $SECONDS -ge "$deadline" ]; then
      echo "the replica on $REPLICA_SHOWN had not replayed database $PG_DB up to the primary's $lsn after ${REPLICA_WAIT} s (a replica of another server, or stuck: scripts/pg-replica.sh status)"
      return 1
    fi
    sleep 0.5
  done
}

# replica_part URL: the api alone on the primary (the running `api`) against the api with the
# replica (`api_read`), same data, same read scenarios, alternating who goes first.
replica_part() {
  local url=$1 reason delay up="" j=0 scenario round order server
  log "postgres: read replica on $REPLICA_SHOWN"
  if ! reason=$(replica_ready); then
    replica_skipped "$reason"
    return 0
  fi
  delay=$(replica_sql postgres "SHOW recovery_min_apply_delay")
  start_server api_read "$url"
  for _ in $(seq 1 100); do
    up=$(curl -s "http://127.0.0.1:$PORT_READ/metrics" | awk '/^db_replica_up / { print $2 }')
    [ "$up" = 1 ] && break
    sleep 0.1
  done
  if [ "$up" != 1 ]; then
    stop_server api_read
    replica_skipped "the api did not report the replica on $REPLICA_SHOWN up (db_replica_up) within 10 s"
    return 0
  fi
  check_servers api api_read
  printf '{"kind":"replica_info","url":"%s","apply_delay":"%s","read_max_lag_ms":"%s","scenarios":"%s"}\n' \
    "$REPLICA_SHOWN" "$delay" "${READ_MAX_LAG_MS:-5000 (default)}" "$REPLICA_SCENARIOS" >>"$RAW"
  DRIVE_KIND=replica
  for scenario in $REPLICA_SCENARIOS; do
    for round in $(seq 1 "$ROUNDS"); do
      if [ $(((j + round) % 2)) -eq 1 ]; then order="api api_read"; else order="api_read api"; fi
      for server in $order; do drive postgres "$scenario" "$server" "$round"; done
    done
    j=$((j + 1))
  done
  DRIVE_KIND=load
  stop_server api_read
}

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 2-4. per backend ------------------------------------------------------------------------
if $RUN_REPLICA && ! grep -qw postgres <<<"$BACKENDS"; then
  replica_skipped "read replicas are supported on PostgreSQL only, and BENCH_BACKENDS ($BACKENDS) has no postgres"
fi
for backend in $BACKENDS; do
  if [ -z "$COMPARED" ] && [ "$backend" != postgres ]; then
    log "$backend: skipped (the only scenario, replica, runs on PostgreSQL)"
    continue
  fi
  log "$backend: preparing $ROWS notes"
  case $backend in
    sqlite)
      command -v sqlite3 >/dev/null || apt-get install -y -qq sqlite3 >/dev/null
      URL="sqlite://$WORK/bench.db?mode=rwc"
      ;;
    postgres)
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $PG_DB" >/dev/null
      PG_CREATED=true
      URL="$PG_URL/$PG_DB"
      ;;
    *) echo "bench: unknown backend $backend (sqlite, postgres)" >&2; exit 2 ;;
  esac
  start_server api "$URL" # migrates the empty database
  SESSION=$(bench_session "http://127.0.0.1:$PORT_API")
  read -r OWNER TOKEN <<<"$SESSION"
  load_rows "$backend" "$ROWS"
  start_server baseline "$URL"
  check_servers

  i=0
  for scenario in $COMPARED; do
    for round in $(seq 1 "$ROUNDS"); do
      # Alternate who goes first, so neither server always meets the warmer database.
      if [ $(((i + round) % 2)) -eq 1 ]; then order="api baseline"; else order="baseline api"; fi
      for server in $order; do drive "$backend" "$scenario" "$server" "$round"; done
    done
    i=$((i + 1))
  done
  if $RUN_REPLICA && [ "$backend" = postgres ]; then replica_part "$URL"; fi

  if ! $SMOKE; then
    log "$backend: export of $EXPORT_ROWS notes"
    load_rows "$backend" "$EXPORT_ROWS"
    if [ "$backend" = sqlite ]; then
      sqlite3 "$WORK/bench.db" "SELECT sum(length(text)) FROM notes" >/dev/null
    else
      psql -qAt "$PG_URL/$PG_DB" -c "SELECT sum(length(text)) FROM notes" >/dev/null
    fi
    export_run "$backend" api
    export_run "$backend" baseline
  fi

  stop_server api
  stop_server baseline
  if [ "$backend" = postgres ]; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE $PG_DB WITH (FORCE)" >/dev/null
    PG_CREATED=false
  fi
done

if $SMOKE; then
  if [ "$FAILED" -ne 0 ]; then
    echo "bench: smoke test failed (errors or no requests)" >&2
    exit 1
  fi
  log "smoke test passed"
  exit 0
fi

# --- 5. report -------------------------------------------------------------------------------
log "writing bench/RESULTS.md and bench/results.json"
command -v python3 >/dev/null || { echo "bench: python3 is required for the report" >&2; exit 1; }
BENCH_STARTED=$STARTED BENCH_LOADAVG=$LOADAVG BENCH_LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg) BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS \
  BENCH_CONNECTIONS=$CONNECTIONS BENCH_THREADS=$THREADS BENCH_ROWS=$ROWS \
  BENCH_EXPORT_ROWS=$EXPORT_ROWS BENCH_COMMAND="BENCH_DURATION=$DURATION BENCH_ROUNDS=$ROUNDS${BENCH_SCENARIOS:+ BENCH_SCENARIOS=\"$SCENARIOS\"} bench/run.sh" \
  python3 "$BENCH_DIR/report.py" "$RAW" "$BENCH_DIR/results.json" "$BENCH_DIR/RESULTS.md"
cat "$BENCH_DIR/RESULTS.md"
