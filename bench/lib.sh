# shellcheck shell=bash
# Shell functions shared by bench/run.sh, bench/callgrind.sh and bench/search.sh (sourced, not run).

# The benchmark's user: every /notes route needs a signed-in caller, and every note the
# benchmark reads or writes is this user's.
BENCH_EMAIL=bench@example.com
BENCH_PASSWORD=bench-password-0123

# bench_session BASE_URL [EMAIL]: sign the bench user (or the user EMAIL) up (`POST /users`:
# the api stores an argon2 hash) and in (`POST /sessions`: the api stores the token's digest in
# `sessions`) through the api at BASE_URL, on a database that does not hold the user yet.
# Prints "USER_ID TOKEN". Any server reading that database (the baseline) accepts the token.
bench_session() {
  local base=$1 email=${2:-$BENCH_EMAIL} credentials route answer status user token
  credentials=$(printf '{"email":"%s","password":"%s"}' "$email" "$BENCH_PASSWORD")
  for route in users sessions; do
    answer=$(curl -sS --max-time 30 -w '\n%{http_code}' -H 'Content-Type: application/json' \
      -d "$credentials" "$base/$route")
    status=${answer##*$'\n'}
    answer=${answer%$'\n'*}
    if [ "$status" != 201 ]; then
      echo "bench: POST /$route answered $status: $answer" >&2
      return 1
    fi
    if [ "$route" = users ]; then
      user=$(grep -o '"id":[0-9]*' <<<"$answer" | head -n 1 | cut -d: -f2)
    else
      token=$(grep -o '"token":"[^"]*"' <<<"$answer" | cut -d'"' -f4)
    fi
  done
  if [ -z "$user" ] || [ -z "$token" ]; then
    echo "bench: no user id or token in the api's answers" >&2
    return 1
  fi
  echo "$user $token"
}

# fill_notes BACKEND WHERE TARGET [OWNER]: make `notes` hold exactly TARGET rows, in one
# statement: add benchmark notes owned by user OWNER (required when rows are added), or
# delete the newest (the write scenarios add rows). WHERE is the database file for BACKEND
# sqlite, the database URL for postgres.
fill_notes() {
  local backend=$1 where=$2 target=$3 owner=${4:-} have
  if [ "$backend" = sqlite ]; then
    have=$(sqlite3 "$where" "PRAGMA busy_timeout=10000; SELECT count(*) FROM notes" | tail -n 1)
    if [ "$have" -gt "$target" ]; then
      sqlite3 "$where" "PRAGMA busy_timeout=10000; $(keep_oldest "$target")" >/dev/null
      return 0
    fi
    [ "$have" -lt "$target" ] || return 0
    [ -n "$owner" ] || { echo "fill_notes: no owner for the new notes" >&2; return 1; }
    sqlite3 "$where" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
WITH RECURSIVE s(i) AS (SELECT $have + 1 UNION ALL SELECT i + 1 FROM s WHERE i < $target)
INSERT INTO notes (user_id, text, completed, created_at, updated_at)
SELECT $owner, 'Benchmark note number ' || i || ': buy milk, call mum, water the plants.', i % 2 = 0,
       strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00',
       strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00'
FROM s;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
  else
    # The change log's triggers are skipped (session_replication_role = replica): this seeds
    # data, it is not a write of the API; and one statement writing a million notes of one
    # user would update that user's counter row a million times in one transaction, which
    # PostgreSQL makes quadratic (each update walks the row's chain of versions): the load
    # of 1 000 000 notes had not finished after 7 minutes. SQLite updates in place: linear.
    have=$(psql -qAt "$where" -c "SELECT count(*) FROM notes")
    if [ "$have" -gt "$target" ]; then
      psql -q "$where" -c "SET session_replication_role = replica; $(keep_oldest "$target")" \
        -c "VACUUM ANALYZE notes" >/dev/null
      return 0
    fi
    [ "$have" -lt "$target" ] || return 0
    [ -n "$owner" ] || { echo "fill_notes: no owner for the new notes" >&2; return 1; }
    psql -q "$where" >/dev/null <<SQL
SET session_replication_role = replica;
INSERT INTO notes (user_id, text, completed, created_at, updated_at)
SELECT $owner, 'Benchmark note number ' || i || ': buy milk, call mum, water the plants.', i % 2 = 0,
       now(), now()
FROM generate_series($have + 1, $target) AS i;
VACUUM ANALYZE notes;
SQL
  fi
}

# keep_oldest TARGET: the SQL (SQLite and PostgreSQL) that deletes every note after the
# TARGET-th by id.
keep_oldest() {
  echo "DELETE FROM notes WHERE id > (SELECT id FROM notes ORDER BY id LIMIT 1 OFFSET $(($1 - 1)));"
}

# --- running and watching servers (bench/run.sh, bench/search.sh) ------------------------------

log() { printf '==> %s\n' "$*" >&2; }

# ensure_tools: install wrk (Debian package) if it is missing; wrk and curl are required.
ensure_tools() {
  if ! command -v wrk >/dev/null; then
    log "installing wrk"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo apt-get install -y -qq wrk >/dev/null; fi
  fi
  for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
  done
}

# kib PID FIELD: a /proc/PID/status figure in KiB (VmRSS, VmHWM); reset_peak PID: restart
# VmHWM from the current RSS.
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

# launch_server NAME BIN PORT [VAR=VALUE...]: start BIN listening on 127.0.0.1:PORT with the
# variables given (after HOST, PORT, RUST_LOG=warn and LOG_FORMAT=json, which they may
# override), its output appended to $WORK/NAME.log and its pid in PID[NAME] (the caller
# declares `declare -A PID=()` and WORK); wait until it answers HTTP (any status: the api
# listens only once migrated).
launch_server() {
  local name=$1 bin=$2 port=$3
  shift 3
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "bench: port $port is already in use (set BENCH_PORT)" >&2
    exit 1
  fi
  env HOST=127.0.0.1 PORT="$port" RUST_LOG=warn LOG_FORMAT=json "$@" "$bin" >>"$WORK/$name.log" 2>&1 &
  # shellcheck disable=SC2004 # PID is the caller's associative array, not an indexed one
  PID[$name]=$!
  for _ in $(seq 1 200); do
    # Any HTTP answer will do (without a token it is 401): the api listens only once migrated.
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/notes?limit=1")" != 000 ]; then
      return 0
    fi
    kill -0 "${PID[$name]}" 2>/dev/null || { echo "bench: $name exited at start ($(exit_of "${PID[$name]}"))" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench: $name did not answer within 20 s" >&2
  exit 1
}

stop_server() {
  local name=$1 pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  unset "PID[$name]"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# exit_of PID: how a server that is gone ended (its exit status, or the signal that ended it).
exit_of() {
  local status=0
  wait "$1" 2>/dev/null || status=$?
  if [ "$status" -gt 128 ]; then echo "killed by SIG$(kill -l $((status - 128)))"; else echo "exit status $status"; fi
}

# busy_pct: share of CPU time (all cores) not idle over 1 s, in percent.
busy_pct() {
  local a b
  a=$(awk '/^cpu / { print $2 + $3 + $4 + $6 + $7 + $8, $5 }' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / { print $2 + $3 + $4 + $6 + $7 + $8, $5 }' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%d", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}

# wait_quiet: before a measured run, wait (up to BENCH_QUIET_WAIT s) until other processes
# (a build, a test run) leave the CPUs under BENCH_QUIET_PCT % busy; sets BUSY to what was seen.
BUSY=0
wait_quiet() {
  local deadline=$((SECONDS + QUIET_WAIT)) warned=false
  while BUSY=$(busy_pct); [ "$BUSY" -gt "$QUIET_PCT" ] && [ $SECONDS -lt $deadline ]; do
    $warned || log "the machine is busy ($BUSY % CPU): waiting up to ${QUIET_WAIT} s for it to calm down"
    warned=true
    sleep 4
  done
  [ "$BUSY" -le "$QUIET_PCT" ] || log "still $BUSY % busy: measuring anyway (recorded as background_busy_pct)"
}
