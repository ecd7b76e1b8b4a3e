#!/usr/bin/env bash
# A PostgreSQL streaming replica of the local server (Debian cluster "main", 127.0.0.1:5432) as a
# second Debian cluster "replica" on 127.0.0.1:5433, for tests, CI and benchmarks of read replicas.
# CI and the reliability/bench scripts run `up [DELAY]` before the replica scenarios (they connect to
# postgres://postgres@127.0.0.1:5433/...), `delay`/`stop`/`start` to simulate lag and outages, and
# `down` afterwards, which leaves the machine as it was. Needs root (Debian cluster tools).
#
# Usage: scripts/pg-replica.sh up [DELAY]   create (or keep) the replica; DELAY = recovery_min_apply_delay
#        scripts/pg-replica.sh delay DELAY  change the apply delay of the running replica (0, 500ms, 2s, 1min)
#        scripts/pg-replica.sh stop|start   stop or start the replica process only (an outage)
#        scripts/pg-replica.sh down         drop the replica and the pg_hba.conf line `up` added
#        scripts/pg-replica.sh status       up or not, replay LSN, primary LSN, delay
set -euo pipefail

ver=$(ls /etc/postgresql)
data=/var/lib/postgresql/$ver/replica
auto=$data/postgresql.auto.conf
main_hba=/etc/postgresql/$ver/main/pg_hba.conf
hba_line='host replication all 127.0.0.1/32 trust'
marker='# added by scripts/pg-replica.sh'
log=${TMPDIR:-/tmp}/pg-replica.log # output of the tools run; kept only on failure

die() { echo "pg-replica: $*" >&2; exit 1; }
# Run a command with its output in $log; on failure, one line naming the step and its last message.
run() { local what=$1; shift; "$@" >>"$log" 2>&1 || die "$what failed: $(tail -n 1 "$log") (full log: $log)"; }
primary() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -XAtqc "$1"; }
replica() { psql -h 127.0.0.1 -p 5433 -U postgres -d postgres -XAtqc "$1" 2>/dev/null; }
exists() { [ -d "/etc/postgresql/$ver/replica" ]; }
running() { exists && pg_ctlcluster "$ver" replica status >/dev/null 2>&1; }
ctl() { run "pg_ctlcluster $1" pg_ctlcluster --skip-systemctl-redirect "$ver" replica "$1"; }
streaming() {
  [ "$(replica 'select pg_is_in_recovery()')" = t ] &&
    [ "$(primary "select count(*) from pg_stat_replication
                  where application_name = '$ver/replica' and state = 'streaming'")" = 1 ]
}
wait_streaming() {
  for _ in $(seq 1 120); do streaming && return 0; sleep 0.5; done
  die "replica on 127.0.0.1:5433 is not streaming from the primary after 60 s (see /var/log/postgresql/postgresql-$ver-replica.log)"
}
# set_conf NAME VALUE: replace NAME's line in the replica's postgresql.auto.conf (wins over /etc).
set_conf() {
  sed -i "/^$1 *=/d" "$auto"
  echo "$1 = '$2'" >>"$auto"
  chown postgres:postgres "$auto"
}
check_delay() { [[ $1 =~ ^[0-9]+(ms|s|min|h|d)?$ ]] || die "bad delay '$1' (examples: 0, 500ms, 2s, 1min)"; }
# Write the delay, reload, and wait until the replica reports it (compared in ms, as pg_settings has it).
apply_delay() {
  local want
  set_conf recovery_min_apply_delay "$1"
  ctl reload
  if [[ $1 =~ ^[0-9]+$ ]]; then want=$1; else want=$(primary "select (extract(epoch from interval '$1') * 1000)::bigint"); fi
  for _ in $(seq 1 50); do
    [ "$(replica "select setting from pg_settings where name = 'recovery_min_apply_delay'")" = "$want" ] && return 0
    sleep 0.2
  done
  die "replica did not take recovery_min_apply_delay = $1 (it shows '$(replica 'show recovery_min_apply_delay')')"
}

[ "$(id -u)" = 0 ] || die "must run as root (pg_createcluster, pg_ctlcluster, su postgres)"
pg_isready -q -h 127.0.0.1 -p 5432 || die "the main PostgreSQL (127.0.0.1:5432) is not running"
: >"$log"

case "${1:-}" in
up)
  delay=${2:-0}
  check_delay "$delay"
  if running && streaming; then
    apply_delay "$delay"
  else
    if ! grep -Eq '^host\s+replication\s+all\s+127\.0\.0\.1/32\s+trust' "$main_hba"; then
      echo "$hba_line $marker" >>"$main_hba"
      run "reloading the main cluster" primary 'select pg_reload_conf()'
    fi
    # No fsync in initdb and pg_basebackup: the first is thrown away, and the replica's first start
    # syncs its whole data directory anyway (with one syncfs() call, below: 0.2 s instead of 6 s).
    exists || run pg_createcluster pg_createcluster --start-conf=manual "$ver" replica -p 5433 -- --no-sync
    if running; then ctl stop; fi
    cp "$main_hba" "/etc/postgresql/$ver/replica/pg_hba.conf"
    find "$data" -mindepth 1 -delete # emptied, not removed: its parent directory belongs to root
    run pg_basebackup su postgres -c "cd / && pg_basebackup -h 127.0.0.1 -p 5432 -U postgres -D '$data' -R -X stream -c fast --no-sync"
    set_conf listen_addresses 127.0.0.1
    set_conf port 5433
    set_conf hot_standby on
    set_conf recovery_init_sync_method syncfs
    # Long replica reads vs replay: hot_standby_feedback stops the primary from vacuuming rows the
    # replica's queries still see (the usual cause of cancelled reads), and for the remaining
    # conflicts (locks, e.g. DROP TABLE on the primary) replay waits up to 5 min for the read rather
    # than the default 30 s. Not -1: a forgotten read would then freeze replay, and lag, for ever.
    set_conf hot_standby_feedback on
    set_conf max_standby_streaming_delay 5min
    set_conf recovery_min_apply_delay "$delay"
    ctl start
  fi
  wait_streaming
  echo "replica of 127.0.0.1:5432 streaming on 127.0.0.1:5433 (cluster $ver/replica, apply delay $(replica 'show recovery_min_apply_delay'))"
  ;;
delay)
  [ $# = 2 ] || die "usage: pg-replica.sh delay DELAY"
  check_delay "$2"
  running || die "the replica is not running (run: scripts/pg-replica.sh up)"
  apply_delay "$2"
  echo "replica apply delay is now $(replica 'show recovery_min_apply_delay')"
  ;;
stop)
  exists || die "no replica cluster (run: scripts/pg-replica.sh up)"
  if running; then ctl stop; fi
  echo "replica stopped (127.0.0.1:5433 is down)"
  ;;
start)
  exists || die "no replica cluster (run: scripts/pg-replica.sh up)"
  running || ctl start
  wait_streaming
  echo "replica streaming again on 127.0.0.1:5433"
  ;;
down)
  if exists; then run pg_dropcluster pg_dropcluster --stop "$ver" replica; fi
  if grep -qF "$marker" "$main_hba"; then
    sed -i "\\|$marker|d" "$main_hba"
    run "reloading the main cluster" primary 'select pg_reload_conf()'
  fi
  echo "no replica (cluster $ver/replica dropped, main pg_hba.conf restored)"
  ;;
status)
  if ! exists; then
    echo "replica: absent"
  elif [ "$(replica 'select pg_is_in_recovery()')" = t ]; then
    echo "replica: up on 127.0.0.1:5433, $(streaming && echo streaming || echo NOT streaming)"
    echo "replay LSN: $(replica 'select pg_last_wal_replay_lsn()')"
  else
    echo "replica: down (cluster $ver/replica exists)"
  fi
  echo "primary LSN: $(primary 'select pg_current_wal_lsn()')"
  if exists; then echo "delay: $(sed -n "s/^recovery_min_apply_delay = '\(.*\)'/\1/p" "$auto" 2>/dev/null)"; fi
  ;;
*) die "usage: pg-replica.sh up [DELAY] | delay DELAY | stop | start | down | status" ;;
esac
rm -f "$log"
