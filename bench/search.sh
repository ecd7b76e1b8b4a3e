#!/usr/bin/env bash
# Benchmark of full-text search (GET /notes?q=…) on about 1 000 000 notes.
#
#   bench/search.sh            run; writes bench/results-search.json (every run) and
#                              bench/results-search-plans.txt (query plans), prints the report
#   bench/search.sh --append   the same, and appends the report to bench/RESULTS.md as a section
#
# Nothing is built: the binaries are BENCH_API_BIN and BENCH_MIGRATION_BIN (defaults
# $CARGO_TARGET_DIR/release/api and …/migration; build them first with
# `cargo build --release -p api -p migration`).
#
# Per backend (BENCH_BACKENDS, PostgreSQL first):
#   1. a fresh database — PostgreSQL bench_search_<pid>, MariaDB bench_search_<pid>, a SQLite
#      file in a temporary directory — migrated by `migration up -n K` to the migration before
#      search (BENCH_SEARCH_AFTER); every later migration is "the search migration";
#   2. two users signed up and in through the api (POST /users, POST /sessions, the api
#      started with AUTO_MIGRATE=false): a typical user and a heavy user, each with a token;
#   3. the notes: on PostgreSQL made by bench/search-data.sql (INSERT … SELECT generate_series;
#      BENCH_USERS owners of BENCH_PER_USER notes each, the typical user one of them, plus
#      BENCH_HEAVY_NOTES of the heavy user's, newest of all; about a dozen words a note from a
#      Zipf-like vocabulary of BENCH_VOCAB words), then VACUUM ANALYZE. The other backends get a
#      copy of PostgreSQL's notes (COPY out, bulk load in): the typical and heavy users' notes
#      identical, and those of BENCH_OTHER_OWNERS of the other owners (default all);
#   4. `migration up`, timed: the search migration on the notes already there; then the size of
#      what it added (index, generated column), and ANALYZE;
#   5. the api (AUTO_MIGRATE=true: nothing left to do) on that database; each search is checked
#      first (200, a page of min(20, matches) notes, every match found when following the
#      `Link`s of a search with at most 200 matches) and timed alone (median of three requests),
#      then driven with wrk (BENCH_CONNECTIONS
#      connections, BENCH_THREADS threads, BENCH_DURATION s after BENCH_WARMUP s of warm-up,
#      BENCH_ROUNDS rounds; the report gives medians over rounds and the worst RSS):
#        two-word searches by both users: common+common, common+rare, rare+rare — the two most
#        frequent words (vocabulary ranks BENCH_COMMON_RANKS), two of ranks BENCH_RARE_RANKS —
#        GET /notes?q=W1%20W2&limit=20;
#        the heavy user's plain pages: GET /notes?limit=20 and GET /notes?limit=20&order=desc;
#      requests/s, p50, p99, errors, and the api's peak RSS (VmHWM, reset before each run);
#   6. PostgreSQL only: the heavy user's searches as the SQL they replace (bench/search-like.sql:
#      user_id = $1 AND LOWER(text) LIKE '%w1%' AND LOWER(text) LIKE '%w2%', ranked by how often
#      the words occur, the api's answer) and as the api's first statement for a first page
#      (bench/search-fts.sql: the top rank tier), each with pgbench (-M prepared,
#      BENCH_CONNECTIONS clients, BENCH_PGBENCH_SECONDS s after 1 s of warm-up): transactions/s,
#      p50, p99 (from pgbench's per-transaction log); and EXPLAIN (ANALYZE, BUFFERS) of both
#      for the three searches of each user into bench/results-search-plans.txt;
#   7. on exit (also on error or Ctrl-C): stops the api, drops the databases, removes the
#      temporary directory.
#
# Environment (defaults in brackets):
#   BENCH_API_BIN, BENCH_MIGRATION_BIN   see above     CARGO_TARGET_DIR [~/.cache/notes-api/target]
#   BENCH_BACKENDS ["postgres"]        any of postgres sqlite mariadb. PostgreSQL always comes
#                                      first, as the others copy its notes; without postgres in
#                                      the list it only makes them (steps 1-3, nothing measured)
#   BENCH_DURATION [10]  BENCH_WARMUP [2]  BENCH_ROUNDS [3]  BENCH_CONNECTIONS [16]  BENCH_THREADS [2]
#   BENCH_PGBENCH_SECONDS [5]
#   BENCH_SKIP_MS [2000]               a request that takes longer than this alone is not driven
#                                      with wrk (16 at once would only queue behind each other
#                                      and the database would still be busy with them in the
#                                      next runs); the report gives its time alone
#   BENCH_WRK_TIMEOUT [30]             s before wrk gives a request up (counted as an error); the
#                                      api's own REQUEST_TIMEOUT_S is 30 s
#   BENCH_USERS [999]  BENCH_PER_USER [900]  BENCH_HEAVY_NOTES [100000]  BENCH_VOCAB [50000]
#   BENCH_COMMON_RANKS ["1 2"]  BENCH_RARE_RANKS ["1000 1500"]
#   BENCH_OTHER_OWNERS [all]           owners besides the typical user whose notes SQLite and
#                                      MariaDB get (fewer: a smaller table, same two users)
#   BENCH_SEARCH_AFTER [m20261205_000007_answered_idempotency_keys]
#   BENCH_PG_URL [postgres://postgres@127.0.0.1:5432]   BENCH_MARIADB_URL [mysql://root@127.0.0.1:3306]
#                                      servers, no database name (MariaDB: no password)
#   BENCH_PORT [18720]
#   BENCH_QUIET_PCT [15]  BENCH_QUIET_WAIT [120]   before each measured run, wait while other
#                                      processes keep the CPUs busier than this (%), at most
#                                      this long (s); the report notes compiles (rustc) seen
#   BENCH_BUILD_WAIT [900]             before measuring a backend, wait at most this long (s)
#                                      for running compiles (rustc) to end
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

APPEND=false
case "${1:-}" in
  "") ;;
  --append) APPEND=true ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: bench/search.sh [--append]" >&2
    exit 2
    ;;
esac

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
THREADS=${BENCH_THREADS:-2}
PGBENCH_SECONDS=${BENCH_PGBENCH_SECONDS:-5}
WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-30}
SKIP_MS=${BENCH_SKIP_MS:-2000}
USERS=${BENCH_USERS:-999}
PER_USER=${BENCH_PER_USER:-900}
HEAVY_NOTES=${BENCH_HEAVY_NOTES:-100000}
VOCAB=${BENCH_VOCAB:-50000}
COMMON_RANKS=${BENCH_COMMON_RANKS:-1 2}
RARE_RANKS=${BENCH_RARE_RANKS:-1000 1500}
OTHER_OWNERS=${BENCH_OTHER_OWNERS:-$((USERS - 1))}
SEARCH_AFTER=${BENCH_SEARCH_AFTER:-m20261205_000007_answered_idempotency_keys}
BACKENDS=${BENCH_BACKENDS:-postgres}
PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
MARIADB_URL=${BENCH_MARIADB_URL:-mysql://root@127.0.0.1:3306}
PORT=${BENCH_PORT:-18720}
QUIET_PCT=${BENCH_QUIET_PCT:-15}
QUIET_WAIT=${BENCH_QUIET_WAIT:-120}
BUILD_WAIT=${BENCH_BUILD_WAIT:-900}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/notes-api/target}
API_BIN=${BENCH_API_BIN:-$CARGO_TARGET_DIR/release/api}
MIGRATION_BIN=${BENCH_MIGRATION_BIN:-$CARGO_TARGET_DIR/release/migration}
TYPICAL_EMAIL=search-typical@example.com
HEAVY_EMAIL=search-heavy@example.com

for bin in "$API_BIN" "$MIGRATION_BIN"; do
  [ -x "$bin" ] || { echo "bench/search.sh: no binary at $bin (build it, or set BENCH_API_BIN / BENCH_MIGRATION_BIN)" >&2; exit 1; }
done
for backend in $BACKENDS; do
  case $backend in postgres | sqlite | mariadb) ;; *) echo "bench/search.sh: unknown backend $backend (postgres sqlite mariadb)" >&2; exit 2 ;; esac
done
ensure_tools
for tool in psql pgbench python3; do
  command -v "$tool" >/dev/null || { echo "bench/search.sh: $tool is required" >&2; exit 1; }
done
case " $BACKENDS " in *" sqlite "*) command -v sqlite3 >/dev/null || { echo "bench/search.sh: sqlite3 is required" >&2; exit 1; } ;; esac
case " $BACKENDS " in *" mariadb "*) command -v mariadb >/dev/null || { echo "bench/search.sh: the mariadb client is required" >&2; exit 1; } ;; esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/search-bench.XXXXXX")
RAW=$WORK/raw.jsonl
PLANS=$WORK/plans.txt
: >"$RAW"
: >"$PLANS"
DB=bench_search_$$
PG_CREATED=false
MARIADB_CREATED=false
declare -A PID=()

# MariaDB from its URL: mysql://USER@HOST:PORT (no password).
MARIADB_HOSTPORT=${MARIADB_URL#mysql://}
MARIADB_USER=${MARIADB_HOSTPORT%%@*}
MARIADB_HOSTPORT=${MARIADB_HOSTPORT#*@}
maria() { mariadb -h "${MARIADB_HOSTPORT%:*}" -P "${MARIADB_HOSTPORT##*:}" -u "$MARIADB_USER" "$@"; }

cleanup() {
  local status=$?
  for name in "${!PID[@]}"; do stop_server "$name"; done
  if $PG_CREATED; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 ||
      echo "bench: could not drop PostgreSQL database $DB" >&2
  fi
  if $MARIADB_CREATED; then
    maria -e "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || echo "bench: could not drop MariaDB database $DB" >&2
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
set -o errtrace
trap 'echo "bench/search.sh: line $LINENO failed (status $?): $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

pg() { psql -XAtq -v ON_ERROR_STOP=1 "$PG_URL/$DB" "$@"; }
now_ns() { date +%s%N; }
seconds_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
compiles() { { pgrep -x rustc || true; } | wc -l; }
json_str() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

# wait_no_build: wait (at most BENCH_BUILD_WAIT s) until no rustc runs.
wait_no_build() {
  local deadline=$((SECONDS + BUILD_WAIT))
  [ "$(compiles)" -eq 0 ] && return 0
  log "a compile (rustc) is running: waiting up to ${BUILD_WAIT} s for it to end before measuring"
  while [ "$(compiles)" -gt 0 ] && [ $SECONDS -lt $deadline ]; do sleep 10; done
  [ "$(compiles)" -eq 0 ] || log "rustc still running: measuring anyway (recorded as rustc)"
}

# --- migrations ---------------------------------------------------------------------------------
# migrate_before_search URL: apply every migration up to BENCH_SEARCH_AFTER; sets SEARCH_MIGRATIONS
# to the names of the later ones.
SEARCH_MIGRATIONS=""
migrate_before_search() {
  local url=$1 names k
  names=$(DATABASE_URL=$url "$MIGRATION_BIN" status 2>&1 | grep -o "Migration '[^']*'" | cut -d"'" -f2)
  k=$(grep -nx "$SEARCH_AFTER" <<<"$names" | cut -d: -f1)
  [ -n "$k" ] || { echo "bench: migration $SEARCH_AFTER not in \`migration status\`:" >&2; echo "$names" >&2; exit 1; }
  SEARCH_MIGRATIONS=$(tail -n +$((k + 1)) <<<"$names" | paste -sd' ')
  [ -n "$SEARCH_MIGRATIONS" ] || { echo "bench: no migration after $SEARCH_AFTER (is this the api with search?)" >&2; exit 1; }
  DATABASE_URL=$url "$MIGRATION_BIN" up -n "$k" >>"$WORK/migration.log" 2>&1
}

# migrate_search BACKEND URL: `migration up` (the search migrations), timed; appends a JSON line.
migrate_search() {
  local start seconds
  wait_no_build
  wait_quiet
  start=$(now_ns)
  DATABASE_URL=$2 "$MIGRATION_BIN" up >>"$WORK/migration.log" 2>&1
  seconds=$(seconds_since "$start")
  log "$1: search migration ($SEARCH_MIGRATIONS) on the notes: $seconds s"
  printf '{"kind":"migration","backend":"%s","migrations":"%s","seconds":%s,"background_busy_pct":%s,"rustc":%s}\n' \
    "$1" "$SEARCH_MIGRATIONS" "$seconds" "$BUSY" "$(compiles)" >>"$RAW"
}

# sign_up URL: the typical and the heavy user, signed up and in through the api; sets
# TYPICAL_ID TYPICAL_TOKEN HEAVY_ID HEAVY_TOKEN.
sign_up() {
  launch_server signup "$API_BIN" "$PORT" DATABASE_URL="$1" AUTO_MIGRATE=false
  read -r TYPICAL_ID TYPICAL_TOKEN <<<"$(bench_session "http://127.0.0.1:$PORT" "$TYPICAL_EMAIL")"
  read -r HEAVY_ID HEAVY_TOKEN <<<"$(bench_session "http://127.0.0.1:$PORT" "$HEAVY_EMAIL")"
  stop_server signup
  if [ -z "$TYPICAL_TOKEN" ] || [ -z "$HEAVY_TOKEN" ]; then echo "bench: sign-up failed" >&2; exit 1; fi
}

# --- loading -----------------------------------------------------------------------------------
# load_postgres: the notes, made in PostgreSQL; sets the query words W_C1 W_C2 W_R1 W_R2.
load_postgres() {
  local start c1 c2 r1 r2
  start=$(now_ns)
  pg -v typical="$TYPICAL_ID" -v heavy="$HEAVY_ID" -v users="$USERS" -v per_user="$PER_USER" \
    -v heavy_notes="$HEAVY_NOTES" -v vocab="$VOCAB" -f "$BENCH_DIR/search-data.sql" >>"$WORK/load.log" 2>&1
  LOAD_SECONDS=$(seconds_since "$start")
  read -r c1 c2 <<<"$COMMON_RANKS"
  read -r r1 r2 <<<"$RARE_RANKS"
  word() { pg -c "SELECT word FROM bench_vocab WHERE rank = $1"; }
  W_C1=$(word "$c1") W_C2=$(word "$c2") W_R1=$(word "$r1") W_R2=$(word "$r2")
  log "postgres: $(pg -c "SELECT count(*) FROM notes") notes in $LOAD_SECONDS s; words $W_C1 $W_C2 (common), $W_R1 $W_R2 (rare)"
}

# export_notes: the notes SQLite and MariaDB get, as owner e-mail, text, completed (TSV).
export_notes() {
  pg -c "\\copy (SELECT u.email, n.text, n.completed::int FROM notes n JOIN users u ON u.id = n.user_id
    WHERE u.id IN ($TYPICAL_ID, $HEAVY_ID) OR u.email IN (SELECT 'search-bench-' || i || '@bench.invalid'
      FROM generate_series(1, $OTHER_OWNERS) AS i) ORDER BY n.id) TO '$WORK/notes.tsv'"
  log "exported $(wc -l <"$WORK/notes.tsv") notes for the other backends"
}

load_sqlite() {
  local file=$1 start
  start=$(now_ns)
  sqlite3 "$file" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
CREATE TEMP TABLE staging (email TEXT, text TEXT, completed INTEGER);
.mode tabs
.import '$WORK/notes.tsv' staging
BEGIN;
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $OTHER_OWNERS)
INSERT INTO users (email, name, hashed_password, is_active, is_admin, created_at, updated_at)
SELECT 'search-bench-' || i || '@bench.invalid', 'Search bench ' || i, '!', 1, 0,
       strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00', strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00'
FROM s WHERE i <= $OTHER_OWNERS;
INSERT INTO notes (user_id, text, completed, created_at, updated_at)
SELECT u.id, s.text, s.completed, strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00',
       strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00'
FROM staging s JOIN users u ON u.email = s.email ORDER BY s.rowid;
COMMIT;
ANALYZE;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
  LOAD_SECONDS=$(seconds_since "$start")
  log "sqlite: $(sqlite3 "$file" "SELECT count(*) FROM notes") notes in $LOAD_SECONDS s"
}

load_mariadb() {
  local start
  start=$(now_ns)
  maria --local-infile=1 "$DB" >>"$WORK/load.log" <<SQL
CREATE TEMPORARY TABLE staging (n BIGINT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(254), text TEXT, completed TINYINT) ENGINE=InnoDB;
LOAD DATA LOCAL INFILE '$WORK/notes.tsv' INTO TABLE staging FIELDS TERMINATED BY '\t' (email, text, completed);
INSERT INTO users (email, name, hashed_password, is_active, is_admin, created_at, updated_at)
SELECT CONCAT('search-bench-', seq, '@bench.invalid'), CONCAT('Search bench ', seq), '!', 1, 0, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)
FROM seq_1_to_$OTHER_OWNERS WHERE seq BETWEEN 1 AND $OTHER_OWNERS;
INSERT INTO notes (user_id, text, completed, created_at, updated_at)
SELECT u.id, s.text, s.completed, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)
FROM staging s JOIN users u ON u.email = s.email ORDER BY s.n;
ANALYZE TABLE users, notes;
SQL
  LOAD_SECONDS=$(seconds_since "$start")
  log "mariadb: $(maria -N "$DB" -e "SELECT count(*) FROM notes") notes in $LOAD_SECONDS s"
}

# --- sizes ---------------------------------------------------------------------------------------
# pg_sizes WHEN: notes' heap, whole table, and each index and column; appends a JSON line.
pg_sizes() {
  pg -c "SELECT json_build_object('kind', 'size', 'backend', 'postgres', 'when', '$1',
    'heap', pg_relation_size('notes'), 'total', pg_total_relation_size('notes'),
    'indexes', (SELECT json_object_agg(indexrelid::regclass::text, pg_relation_size(indexrelid))
                FROM pg_index WHERE indrelid = 'notes'::regclass),
    'index_defs', (SELECT json_object_agg(indexname, indexdef) FROM pg_indexes WHERE tablename = 'notes'),
    'columns', (SELECT json_object_agg(attname, format_type(atttypid, atttypmod)
                  || CASE attgenerated WHEN 's' THEN ' (generated, stored)' ELSE '' END)
                FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attnum > 0 AND NOT attisdropped),
    'database', pg_database_size(current_database()))" >>"$RAW"
}

# pg_column_bytes: the bytes of each column added by the search migration (sum of pg_column_size).
pg_column_bytes() {
  local col
  for col in $(pg -c "SELECT attname FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attnum > 0
      AND NOT attisdropped AND attname NOT IN ('id', 'text', 'completed', 'created_at', 'updated_at', 'user_id', 'version')"); do
    printf '{"kind":"column","backend":"postgres","column":"%s","bytes":%s,"text_bytes":%s}\n' "$col" \
      "$(pg -c "SELECT sum(pg_column_size(\"$col\")) FROM notes")" "$(pg -c "SELECT sum(pg_column_size(text)) FROM notes")" >>"$RAW"
  done
}

sqlite_sizes() {
  local objects
  objects=$(sqlite3 "$1" "SELECT json_group_object(name, size) FROM (SELECT name, sum(pgsize) AS size FROM dbstat GROUP BY name)")
  printf '{"kind":"size","backend":"sqlite","when":"%s","file":%s,"objects":%s}\n' "$2" "$(stat -c %s "$1")" "$objects" >>"$RAW"
}

mariadb_sizes() {
  maria -N "$DB" -e "ANALYZE TABLE notes" >/dev/null
  maria -N "$DB" -e "SELECT JSON_OBJECT('kind', 'size', 'backend', 'mariadb', 'when', '$1',
    'data', (SELECT data_length FROM information_schema.TABLES WHERE table_schema = '$DB' AND table_name = 'notes'),
    'index', (SELECT index_length FROM information_schema.TABLES WHERE table_schema = '$DB' AND table_name = 'notes'),
    'tablespaces', (SELECT JSON_OBJECTAGG(NAME, ALLOCATED_SIZE) FROM information_schema.INNODB_SYS_TABLESPACES
                    WHERE LEFT(NAME, CHAR_LENGTH('$DB/')) = '$DB/'))" >>"$RAW"
}

# --- checks and load -----------------------------------------------------------------------------
# The measured requests: "NAME USER PATH" (USER typical or heavy).
scenarios() {
  local user
  for user in typical heavy; do
    echo "cc $user /notes?q=$W_C1%20$W_C2&limit=20"
    echo "cr $user /notes?q=$W_C1%20$W_R1&limit=20"
    echo "rr $user /notes?q=$W_R1%20$W_R2&limit=20"
  done
  echo "asc heavy /notes?limit=20"
  echo "desc heavy /notes?limit=20&order=desc"
}

# like_count USER_ID W1 W2: the notes of the user holding both words (substring, as the LIKE).
like_count() { pg -c "SELECT count(*) FROM notes WHERE user_id = $1 AND text LIKE '%$2%' AND text LIKE '%$3%'"; }

# count_ids: the notes in the JSON array on stdin.
count_ids() { { grep -o '"id":' || true; } | wc -l; }
# next_link HEADERS: the target of the `Link: <…>; rel="next"` in the headers file, if any.
next_link() { sed -n 's/^[Ll]ink:.*<\([^>]*\)>; *rel="next".*/\1/p' "$1"; }

# check_searches BACKEND: every measured request answers 200 with the page expected; sets
# ALONE_MS["NAME USER"], the time one request takes alone.
declare -A MATCHES=() ALONE_MS=()
check_searches() {
  local backend=$1 name user path token headers body status items walked next count alone
  while read -r name user path; do
    token=$HEAVY_TOKEN
    [ "$user" = typical ] && token=$TYPICAL_TOKEN
    headers=$WORK/headers
    body=$(curl -sS -D "$headers" -w '\n%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT$path")
    status=${body##*$'\n'}
    body=${body%$'\n'*}
    [ "$status" = 200 ] || { echo "bench: $backend $path as $user answered $status: $body" >&2; exit 1; }
    items=$(count_ids <<<"$body")
    count=${MATCHES[$name $user]:-}
    walked=""
    if [ -n "$count" ]; then
      [ "$items" -eq $((count < 20 ? count : 20)) ] ||
        { echo "bench: $backend $path as $user: $items notes on the first page, $count match" >&2; exit 1; }
      if [ "$count" -le 200 ]; then
        walked=$items
        next=$(next_link "$headers")
        while [ -n "$next" ]; do
          body=$(curl -sS -D "$headers" -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT$next")
          walked=$((walked + $(count_ids <<<"$body")))
          next=$(next_link "$headers")
        done
        [ "$walked" -eq "$count" ] ||
          { echo "bench: $backend $path as $user: $walked notes through the Links, $count match" >&2; exit 1; }
      fi
    fi
    # One request alone (the median of three), once the check has warmed the caches.
    alone=$(for _ in 1 2 3; do
      curl -sS -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT$path"
    done | sort -n | sed -n 2p)
    ALONE_MS[$name $user]=$(awk -v t="$alone" 'BEGIN { printf "%.0f", t * 1000 }')
    printf '{"kind":"check","backend":"%s","scenario":"%s","user":"%s","path":%s,"first_page":%s,"matches":%s,"walked":%s,"alone_us":%s}\n' \
      "$backend" "$name" "$user" "$(json_str "$path")" "$items" "${count:-null}" "${walked:-null}" \
      "$(awk -v t="$alone" 'BEGIN { printf "%.0f", t * 1e6 }')" >>"$RAW"
  done < <(scenarios)
}

# count_matches: MATCHES["NAME USER"], the notes each search must find (PostgreSQL, LIKE).
count_matches() {
  local name user path w1 w2 id
  while read -r name user path; do
    case $name in
      cc) w1=$W_C1 w2=$W_C2 ;;
      cr) w1=$W_C1 w2=$W_R1 ;;
      rr) w1=$W_R1 w2=$W_R2 ;;
      *) continue ;;
    esac
    id=$HEAVY_ID
    [ "$user" = typical ] && id=$TYPICAL_ID
    MATCHES[$name $user]=$(like_count "$id" "$w1" "$w2")
  done < <(scenarios)
  # The words' own frequencies, for the report.
  local words=""
  for w in "$W_C1" "$W_C2" "$W_R1" "$W_R2"; do
    words="$words${words:+,}\"$w\":{\"notes\":$(pg -c "SELECT count(*) FROM notes WHERE text LIKE '%$w%'"),\"heavy\":$(like_count "$HEAVY_ID" "$w" "$w"),\"typical\":$(like_count "$TYPICAL_ID" "$w" "$w")}"
  done
  printf '{"kind":"words","common":["%s","%s"],"rare":["%s","%s"],"frequency":{%s}}\n' "$W_C1" "$W_C2" "$W_R1" "$W_R2" "$words" >>"$RAW"
}

# drive BACKEND NAME USER PATH ROUND: a warm-up and a measured wrk run; appends a JSON line.
drive() {
  local backend=$1 name=$2 user=$3 path=$4 round=$5 pid=${PID[api]} out line token=$HEAVY_TOKEN
  [ "$user" = typical ] && token=$TYPICAL_TOKEN
  export WRK_SCENARIO=path WRK_PATH=$path WRK_TOKEN=$token
  if [ "$WARMUP" -gt 0 ]; then
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout "${WRK_TIMEOUT}s" -s "$BENCH_DIR/wrk.lua" "http://127.0.0.1:$PORT" >/dev/null
  fi
  wait_quiet
  reset_peak "$pid"
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout "${WRK_TIMEOUT}s" -s "$BENCH_DIR/wrk.lua" "http://127.0.0.1:$PORT")
  kill -0 "$pid" 2>/dev/null || { echo "bench: the api died during $name ($user) on $backend ($(exit_of "$pid"))" >&2; exit 1; }
  line=$(grep '^BENCH_JSON ' <<<"$out" | sed 's/^BENCH_JSON //')
  [ -n "$line" ] || { echo "bench: no report from wrk:" >&2; echo "$out" >&2; exit 1; }
  printf '{"kind":"wrk","backend":"%s","scenario":"%s","user":"%s","path":%s,"round":%s,"peak_rss_kib":%s,"background_busy_pct":%s,"rustc":%s,"wrk":%s}\n' \
    "$backend" "$name" "$user" "$(json_str "$path")" "$round" "$(kib "$pid" VmHWM)" "$BUSY" "$(compiles)" "$line" >>"$RAW"
  python3 - "$line" "$backend" "$name" "$user" <<'PY' >&2
import json, sys
w = json.loads(sys.argv[1])
errors = sum(v for k, v in w.items() if k.startswith("errors_"))
print("    %-8s %-4s %-7s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d" % (
    sys.argv[2], sys.argv[3], sys.argv[4], w["requests"] * 1e6 / w["duration_us"],
    w["p50_us"] / 1000, w["p99_us"] / 1000, errors))
PY
}

# capture_statement: the api's search statement as PostgreSQL sees it (pg_stat_activity),
# sampled while a heavy search runs; into $WORK/statement.sql.
capture_statement() {
  for _ in $(seq 1 100); do
    pg -c "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND query LIKE '%to_tsquery%' LIMIT 1" >"$WORK/statement.sql" 2>/dev/null || true
    [ -s "$WORK/statement.sql" ] && return 0
    sleep 0.1
  done
}

measure_api() {
  local backend=$1 round name user path capture=""
  wait_no_build
  for round in $(seq 1 "$ROUNDS"); do
    log "$backend: round $round of $ROUNDS"
    while read -r name user path; do
      if [ "$backend" = postgres ] && [ "$round" = 1 ] && [ "$name $user" = "cc heavy" ]; then
        (sleep "$((WARMUP + 1))"; capture_statement) &
        capture=$!
      fi
      if [ "${ALONE_MS[$name $user]}" -gt "$SKIP_MS" ]; then
        [ "$round" != 1 ] || log "$backend: $name ($user) not driven: one request alone takes ${ALONE_MS[$name $user]} ms (over BENCH_SKIP_MS=$SKIP_MS)"
        continue
      fi
      drive "$backend" "$name" "$user" "$path" "$round"
    done < <(scenarios)
  done
  [ -z "$capture" ] || wait "$capture" || true
}

# --- PostgreSQL: the SQL alone ------------------------------------------------------------------
# pgbench_run SCRIPT NAME VAR=VALUE...: one measured pgbench run of SCRIPT; appends a JSON line.
pgbench_run() {
  local script=$1 name=$2 out tps args=()
  shift 2
  for v in "$@"; do args+=(-D "$v"); done
  pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T 1 -f "$BENCH_DIR/$script" "${args[@]}" "$PG_URL/$DB" >/dev/null 2>&1
  wait_quiet
  rm -f "$WORK"/pgbench_log*
  out=$(cd "$WORK" && pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "$PGBENCH_SECONDS" -l --log-prefix=pgbench_log \
    -f "$BENCH_DIR/$script" "${args[@]}" "$PG_URL/$DB" 2>&1) || { echo "bench: pgbench failed:" >&2; echo "$out" >&2; exit 1; }
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
  cat "$WORK"/pgbench_log* | python3 -c '
import json, sys
lat = sorted(int(line.split()[2]) for line in sys.stdin if line.strip())
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(json.dumps({"kind": "pgbench", "script": sys.argv[1], "scenario": sys.argv[2], "user": "heavy",
  "tps": float(sys.argv[3]), "transactions": len(lat), "p50_us": pick(0.50), "p99_us": pick(0.99),
  "mean_us": sum(lat) / len(lat), "background_busy_pct": int(sys.argv[4]), "rustc": int(sys.argv[5])}))' \
    "$script" "$name" "$tps" "$BUSY" "$(compiles)" >>"$RAW"
  tail -n 1 "$RAW" | python3 -c 'import json, sys; r = json.loads(sys.stdin.read())
print("    pgbench  %-4s %-16s %8.0f tps    p50 %7.2f ms  p99 %7.2f ms" % (r["scenario"], r["script"], r["tps"], r["p50_us"] / 1000, r["p99_us"] / 1000))' >&2
}

# sql_vars NAME [USER]: pgbench/psql variables of search NAME by USER (heavy, the default, or
# typical), one a line.
sql_vars() {
  local w1 w2 id=$HEAVY_ID
  [ "${2:-heavy}" = heavy ] || id=$TYPICAL_ID
  case $1 in
    cc) w1=$W_C1 w2=$W_C2 ;;
    cr) w1=$W_C1 w2=$W_R1 ;;
    rr) w1=$W_R1 w2=$W_R2 ;;
  esac
  printf '%s\n' "user=$id" "p1=%$w1%" "p2=%$w2%" "w1=$w1" "n1=${#w1}" "w2=$w2" "n2=${#w2}" \
    "e1=$id:$w1" "m1=$id:~$w1~" "e2=$id:$w2" "m2=$id:~$w2~" "tsq=$(top_tier "$id" "$w1" "$w2")" \
    "marks=$(top_tier "$id" "$w1" "$w2" marks)" "limit=20"
}

# top_tier ID W1 W2 [marks]: the tsquery of the api's top rank tier for the two-word search W1 W2
# by owner ID (api/src/search/sql.rs, `at_least`: the words occur 2 + TIER_SPAN = 6 times or
# more); with `marks`, only the marks the api asks the index for.
top_tier() {
  local id=$1 w1=$2 w2=$3 marks=${4:-} k shares=() one
  tier_mark() { if [ "$2" -eq 1 ]; then echo "'$id:$1'"; else echo "'$id:~$1~$2'"; fi; }
  for k in 1 2 3 4 5; do
    if [ -n "$marks" ] && [ "$k" -eq 1 ]; then one="($(tier_mark "$w2" 5))"
    elif [ -n "$marks" ] && [ "$k" -eq 5 ]; then one="($(tier_mark "$w1" 5))"
    else one="($(tier_mark "$w1" "$k") & $(tier_mark "$w2" $((6 - k))))"; fi
    shares+=("$one")
  done
  local IFS='|'
  if [ -n "$marks" ]; then
    printf "(%s)" "${shares[*]}" | sed 's/)|(/) | (/g'
  else
    printf "'%s:%s' & '%s:%s' & (%s)" "$id" "$w1" "$id" "$w2" "${shares[*]}" | sed 's/)|(/) | (/g'
  fi
}

# explain SCRIPT NAME USER: EXPLAIN (ANALYZE, BUFFERS) of SCRIPT with the values of search NAME
# by USER.
explain() {
  local script=$1 name=$2 user=$3 args=() v value
  while read -r v; do
    # psql pastes a variable as it is: quote the strings.
    case ${v%%=*} in
      p1 | p2 | w1 | w2 | e1 | m1 | e2 | m2 | tsq | marks)
        value=${v#*=}
        args+=(-v "${v%%=*}='${value//\'/\'\'}'")
        ;;
      # The api binds the owner as int8.
      user) args+=(-v "user=${v#*=}::bigint") ;;
      *) args+=(-v "$v") ;;
    esac
  done < <(sql_vars "$name" "$user")
  {
    printf '=== %s, %s user, %s\n' "$script" "$user" "$name"
    { echo "EXPLAIN (ANALYZE, BUFFERS)"; grep -v '^--' "$BENCH_DIR/$script"; } | pg "${args[@]}" 2>&1
    echo
  } >>"$PLANS"
}

measure_sql() {
  local name vars user
  wait_no_build
  log "postgres: the heavy user's searches as SQL (pgbench)"
  for name in cc cr rr; do
    mapfile -t vars < <(sql_vars "$name")
    pgbench_run search-like.sql "$name" "${vars[@]}"
    pgbench_run search-fts.sql "$name" "${vars[@]}"
  done
  for user in heavy typical; do
    for name in cc cr rr; do
      explain search-fts.sql "$name" "$user"
      explain search-like.sql "$name" "$user"
    done
  done
  if [ -s "$WORK/statement.sql" ]; then
    { echo "=== the api's statement for cc, heavy user (pg_stat_activity)"; cat "$WORK/statement.sql"; echo; } >>"$PLANS"
  fi
}

# --- per backend ---------------------------------------------------------------------------------
run_backend() {
  local backend=$1 url file=""
  log "$backend: preparing"
  case $backend in
    postgres)
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $DB" >/dev/null
      PG_CREATED=true
      url=$PG_URL/$DB
      ;;
    sqlite)
      file=$WORK/search.db
      url="sqlite://$file?mode=rwc"
      ;;
    mariadb)
      maria -e "CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
      MARIADB_CREATED=true
      url=$MARIADB_URL/$DB
      ;;
  esac
  migrate_before_search "$url"
  sign_up "$url"
  case $backend in
    postgres) load_postgres; count_matches ;;
    sqlite) load_sqlite "$file" ;;
    mariadb) load_mariadb ;;
  esac
  if [ "$backend" = postgres ] && ! $MEASURE_PG; then
    # Only the notes for the other backends.
    printf '{"kind":"setup","backend":"postgres","notes":%s,"load_seconds":%s,"typical_id":%s,"heavy_id":%s,"measured":false}\n' \
      "$(pg -c "SELECT count(*) FROM notes")" "$LOAD_SECONDS" "$TYPICAL_ID" "$HEAVY_ID" >>"$RAW"
    export_notes
    psql -q "$PG_URL/postgres" -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null
    PG_CREATED=false
    return 0
  fi
  case $backend in
    postgres) pg_sizes before ;;
    sqlite) sqlite_sizes "$file" before ;;
    mariadb) mariadb_sizes before ;;
  esac
  migrate_search "$backend" "$url"
  case $backend in
    postgres) pg_sizes after; pg_column_bytes; pg -c "ANALYZE notes" ;;
    sqlite) sqlite_sizes "$file" after; sqlite3 "$file" "ANALYZE" ;;
    mariadb) mariadb_sizes after ;;
  esac
  local notes
  case $backend in
    postgres) notes=$(pg -c "SELECT count(*) FROM notes") ;;
    sqlite) notes=$(sqlite3 "$file" "SELECT count(*) FROM notes") ;;
    mariadb) notes=$(maria -N "$DB" -e "SELECT count(*) FROM notes") ;;
  esac
  printf '{"kind":"setup","backend":"%s","notes":%s,"load_seconds":%s,"typical_id":%s,"heavy_id":%s}\n' \
    "$backend" "$notes" "$LOAD_SECONDS" "$TYPICAL_ID" "$HEAVY_ID" >>"$RAW"

  launch_server api "$API_BIN" "$PORT" DATABASE_URL="$url" AUTO_MIGRATE=true
  check_searches "$backend"
  measure_api "$backend"
  stop_server api
  if [ "$backend" = postgres ]; then
    measure_sql
    case " $BACKENDS " in *" sqlite "* | *" mariadb "*) export_notes ;; esac
    psql -q "$PG_URL/postgres" -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null
    PG_CREATED=false
  elif [ "$backend" = mariadb ]; then
    maria -e "DROP DATABASE $DB"
    MARIADB_CREATED=false
  else
    rm -f "$file" "$file-wal" "$file-shm"
  fi
}

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
COMPILES_AT_START=$(compiles)
ORDERED=postgres
MEASURE_PG=false
for backend in $BACKENDS; do
  if [ "$backend" = postgres ]; then MEASURE_PG=true; else ORDERED="$ORDERED $backend"; fi
done
for backend in $ORDERED; do run_backend "$backend"; done

COMMAND="bench/search.sh"
for var in BENCH_BACKENDS BENCH_DURATION BENCH_ROUNDS BENCH_CONNECTIONS BENCH_PGBENCH_SECONDS BENCH_USERS BENCH_PER_USER \
  BENCH_HEAVY_NOTES BENCH_VOCAB BENCH_COMMON_RANKS BENCH_RARE_RANKS BENCH_OTHER_OWNERS BENCH_API_BIN BENCH_MIGRATION_BIN; do
  [ -n "${!var:-}" ] && COMMAND="$var='${!var}' $COMMAND"
done
$APPEND && COMMAND="$COMMAND --append"
cp "$PLANS" "$BENCH_DIR/results-search-plans.txt"
BENCH_STARTED=$STARTED BENCH_LOADAVG=$LOADAVG BENCH_LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg) \
  BENCH_COMPILES_AT_START=$COMPILES_AT_START BENCH_COMMAND=$COMMAND BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP \
  BENCH_ROUNDS=$ROUNDS BENCH_WRK_TIMEOUT=$WRK_TIMEOUT BENCH_SKIP_MS=$SKIP_MS BENCH_CONNECTIONS=$CONNECTIONS BENCH_THREADS=$THREADS BENCH_PGBENCH_SECONDS=$PGBENCH_SECONDS \
  BENCH_USERS=$USERS BENCH_PER_USER=$PER_USER BENCH_HEAVY_NOTES=$HEAVY_NOTES BENCH_VOCAB=$VOCAB \
  python3 "$BENCH_DIR/search_report.py" "$RAW" "$BENCH_DIR/results-search.json" "$PLANS" >"$WORK/section.md"
cat "$WORK/section.md"
if $APPEND; then
  { echo; cat "$WORK/section.md"; } >>"$BENCH_DIR/RESULTS.md"
  log "appended to bench/RESULTS.md"
fi
