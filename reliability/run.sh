#!/usr/bin/env bash
# Reliability scenarios for the `api` server: load, faults, hostile input, several instances.
#
#   reliability/run.sh all          every scenario below, in order (about 5 minutes)
#   reliability/run.sh NAME ...     only these scenarios
#   reliability/run.sh --help
#
# Scenarios (each prints one "SUMMARY name: PASS|FAIL figures" line and fails when its
# guarantee breaks; see the docstring at the top of each reliability/scenario_*.py):
#   soak          64 connections of mixed load for SOAK_SECONDS [30], SQLite then PostgreSQL:
#                 zero 5xx/connection errors, every acknowledged write stored, pool back to 0
#   outage        PostgreSQL stopped for OUTAGE_SECONDS [10] under load: fast 503 problem+json,
#                 /healthz 200, /readyz 503, recovery within 5 s, no acknowledged write lost
#   shutdown      SIGTERM under load (PostgreSQL, then SQLite): accepted requests complete,
#                 exit 0 within SHUTDOWN_TIMEOUT_S, nothing acknowledged lost
#   exhaustion    [exports] 16 never-reading + 2 trickling exports (8 users, 40 000 notes each)
#                 beside 48 clients, DB_POOL_MAX=8, EXPORT_IDLE_TIMEOUT_S=2: no 503 for the
#                 others, idle exports cut on time, slots and pool released;
#                 [pool] DB_POOL_MAX=2, notes locked 3 s under load: 503 + Retry-After in time
#   schemathesis  schemathesis --checks all against /openapi.json (fresh SQLite), <= ~2 min
#   instances     two servers, one empty PostgreSQL database, started at once, behind nginx:
#                 migrations once, both serve, 16 racing sign-ups -> one 201, fifteen 409
#   replica       two servers with DATABASE_READ_URL on a real streaming replica (2 s apply
#                 delay, scripts/pg-replica.sh) behind nginx: REPLICA_ROUNDS [200] write-then-read
#                 rounds by one client keeping its cookie (every write seen), reads on the replica
#                 when nothing fresh is needed, replica stopped 3 s under reads (zero failures,
#                 serves again within 5 s), READ_MAX_LAG_MS=500 bypass, REPLICA_SOAK_SECONDS [30]
#                 of soak with one cookie jar per user (nothing acknowledged lost or unseen)
#   mariadb       the soak (MARIADB_SOAK_SECONDS [15]) and the instances scenario on MariaDB
#   hashing       HASHING_SIGNUPS [300] concurrent sign-ups (SQLite, then PostgreSQL): peak RSS
#                 < 160 MiB, 201 or 503 + Retry-After, /healthz < 1 s, sign-in works after
#   mail          two servers on PostgreSQL delivering to one SMTP receiver (aiosmtpd): resets for
#                 known and unknown addresses answer alike (KS test on latency); the receiver
#                 down MAIL_OUTAGE_SECONDS [20] during MAIL_USERS [200] resets: all delivered, none
#                 twice; an instance holding claimed mails SIGKILLed: the other delivers them
#   sync          two servers on PostgreSQL behind nginx, SYNC_USERS x SYNC_STREAMS_PER_USER
#                 [50 x 4] event streams during SYNC_SECONDS [30] of writes: one instance
#                 SIGTERMed halfway (exits within 10 s), then PostgreSQL restarted; every client
#                 reconnects with Last-Event-ID: each stream has every change of the log, once
#                 after de-duplication by seq, in order
#   failover      two servers on a pg_auto_failover formation (scripts/pg-ha.sh up; taken down
#                 afterwards only if this made it) behind nginx, FAILOVER_SECONDS [60] of load,
#                 the primary SIGKILLed at 20 s: only 2xx/4xx/503, nothing acknowledged lost,
#                 each instance writable again within FAILOVER_WRITABLE_S [15], both on the
#                 new primary, read-your-writes rounds all read back
#
# The load signs up and signs in its users first and sends their bearer tokens; see README.
#
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and MariaDB on 127.0.0.1:3306
# (root, no password) — override with REL_PG_URL / REL_MYSQL_URL (server URL, no database).
# Databases are named rel_<scenario>_<pid> and dropped afterwards; leftovers of killed runs
# (pid gone) are dropped at the start. The outage scenario stops and starts the local
# PostgreSQL cluster with pg_ctlcluster; it is always started again on exit. The replica
# scenario runs `scripts/pg-replica.sh up 2s` (a replica cluster on 127.0.0.1:5433, created when
# absent; REL_PG_REPLICA_URL) and leaves it running with a 2 s apply delay, also on failure.
# Installs what is missing: aiohttp and schemathesis (pip), nginx, sqlite3, psql and mysql
# clients (apt). Builds `api` in release into $CARGO_TARGET_DIR [~/.cache/notes-api/target]
# (REL_SKIP_BUILD=1: use the binary already there, e.g. while another build is running).
# Server logs go to a temporary directory, kept (and named) when a scenario fails.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

ALL=(soak outage shutdown exhaustion schemathesis instances replica mariadb hashing mail sync failover)
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

[ $# -gt 0 ] || { usage >&2; exit 2; }
SELECTED=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    all) SELECTED+=("${ALL[@]}") ;;
    soak | outage | shutdown | exhaustion | schemathesis | instances | replica | mariadb | hashing | mail | sync | failover) SELECTED+=("$arg") ;;
    *) echo "reliability/run.sh: unknown scenario '$arg' (one of: all ${ALL[*]})" >&2; exit 2 ;;
  esac
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/notes-api/target}
export REL_PG_URL=${REL_PG_URL:-postgres://postgres@127.0.0.1:5432}
export REL_MYSQL_URL=${REL_MYSQL_URL:-mysql://root@127.0.0.1:3306}
export REL_PG_REPLICA_URL=${REL_PG_REPLICA_URL:-postgres://postgres@127.0.0.1:5433}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# --- PostgreSQL is always running when we leave -------------------------------------------
pg_running() { pg_isready -q -h 127.0.0.1 -p 5432; }
restore_pg() {
  if [ -d /etc/postgresql ] && ! pg_running; then
    log "starting PostgreSQL again"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start ||
      log "could not start PostgreSQL!"
  fi
}
# The replica scenario stops the replica for a moment; if it ran, the replica runs when we leave.
REPLICA_RAN=false
restore_replica() {
  if $REPLICA_RAN && pg_running && ! pg_isready -q -h 127.0.0.1 -p 5433; then
    log "starting the PostgreSQL replica again"
    "$ROOT/scripts/pg-replica.sh" start >/dev/null || log "could not start the replica!"
  fi
}
REL_LOG_DIR=$(mktemp -d /tmp/rel_logs.XXXXXX)
export REL_LOG_DIR
KEEP_LOGS=false
on_exit() {
  local status=$?
  restore_pg
  restore_replica
  if $KEEP_LOGS || [ $status -ne 0 ]; then log "server logs kept in $REL_LOG_DIR"; else rm -rf "$REL_LOG_DIR"; fi
  exit $status
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools ----------------------------------------------------------------------------------
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
APT_UPDATED=false
apt_install() {
  log "installing $*"
  $APT_UPDATED || { as_root apt-get update -qq >/dev/null || true; APT_UPDATED=true; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
command -v sqlite3 >/dev/null || apt_install sqlite3
command -v psql >/dev/null || apt_install postgresql-client
command -v mysql >/dev/null || apt_install mariadb-client
export PATH=$PATH:/usr/sbin:/sbin
if ! python3 -c 'import aiohttp, aiosmtpd' 2>/dev/null || ! command -v schemathesis >/dev/null; then
  log "installing aiohttp, aiosmtpd and schemathesis (pip)"
  python3 -m pip install --quiet --disable-pip-version-check 'aiohttp>=3.9,<4' 'aiosmtpd>=1.4,<2' 'schemathesis>=4.0,<5'
fi

if [ "${REL_SKIP_BUILD:-}" = 1 ]; then
  [ -x "$CARGO_TARGET_DIR/release/api" ] || { echo "reliability/run.sh: REL_SKIP_BUILD=1 but $CARGO_TARGET_DIR/release/api is missing" >&2; exit 2; }
  log "REL_SKIP_BUILD=1: using $CARGO_TARGET_DIR/release/api as built"
else
  log "building api (release)"
  # All targets of the workspace: the feature set of the README's test command, so after the
  # tests (or in CI) nothing new is built.
  cargo build --release --quiet --workspace --all-targets
fi

# --- leftovers of killed runs (rel_<tag>_<pid> whose process is gone) ------------------------
drop_leftovers() {
  local db pid
  if pg_running; then
    for db in $(psql -X -qAt "$REL_PG_URL/postgres" -c "SELECT datname FROM pg_database WHERE datname LIKE 'rel\_%'" 2>/dev/null); do
      pid=${db##*_}
      if [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
        log "dropping leftover PostgreSQL database $db"
        psql -X -q "$REL_PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
      fi
    done
  fi
  for db in $(mysql -h 127.0.0.1 -u root -N -B -e "SHOW DATABASES LIKE 'rel\\_%'" 2>/dev/null); do
    pid=${db##*_}
    if [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
      log "dropping leftover MariaDB database $db"
      mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS \`$db\`" || true
    fi
  done
}
restore_pg
drop_leftovers

# --- scenarios --------------------------------------------------------------------------------
run_scenario() {
  local name=$1
  case "$name" in
    soak) python3 "$HERE/scenario_soak.py" sqlite && python3 "$HERE/scenario_soak.py" postgres ;;
    outage) python3 "$HERE/scenario_outage.py" ;;
    shutdown) python3 "$HERE/scenario_shutdown.py" postgres && python3 "$HERE/scenario_shutdown.py" sqlite ;;
    exhaustion) python3 "$HERE/scenario_exhaustion.py" ;;
    schemathesis) python3 "$HERE/scenario_schemathesis.py" ;;
    instances) python3 "$HERE/scenario_instances.py" postgres ;;
    replica) python3 "$HERE/scenario_replica.py" ;;
    mariadb) python3 "$HERE/scenario_mariadb.py" ;;
    hashing) # both backends even when the first fails (a few seconds each; both figures matter)
      local rc=0
      python3 "$HERE/scenario_hashing.py" sqlite || rc=1
      python3 "$HERE/scenario_hashing.py" postgres || rc=1
      return $rc ;;
    mail) python3 "$HERE/scenario_mail.py" ;;
    sync) python3 "$HERE/scenario_sync.py" ;;
    failover) python3 "$HERE/scenario_failover.py" ;;
  esac
}

START=$(date +%s)
RESULTS=()
FAILED=0
for name in "${SELECTED[@]}"; do
  log "=== $name"
  t0=$(date +%s)
  out=$(mktemp)
  [ "$name" != replica ] || REPLICA_RAN=true # (run_scenario runs in a pipeline: a subshell)
  if run_scenario "$name" | tee "$out"; then verdict=PASS; else verdict=FAIL; FAILED=$((FAILED + 1)); KEEP_LOGS=true; fi
  restore_pg
  restore_replica
  RESULTS+=("$(printf '%-13s %s %4ss' "$name" "$verdict" $(($(date +%s) - t0)))")
  rm -f "$out"
done

echo
echo "reliability: ${#SELECTED[@]} scenario(s) in $(($(date +%s) - START)) s"
for line in "${RESULTS[@]}"; do echo "  $line"; done
[ "$FAILED" -eq 0 ] || { echo "reliability: $FAILED scenario(s) FAILED" >&2; exit 1; }
