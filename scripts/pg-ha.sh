#!/usr/bin/env bash
# A local high-availability PostgreSQL formation made with pg_auto_failover (Debian's packages
# postgresql-$VER-auto-failover and pg-auto-failover-cli): a monitor on 127.0.0.1:6000 and two
# nodes, a primary and a synchronous secondary, on 127.0.0.1:6001 and :6002, for failover tests of
# the API. Clients use the multi-host URL that `up` prints, which libpq and sqlx follow to whichever
# node is the writable primary:
#   postgres://postgres@127.0.0.1:6001,127.0.0.1:6002/notes?target_session_attrs=read-write
# `up` installs the packages if missing (and `down` removes them only if `up` installed them),
# creates or restarts the three pg_autoctl services as the OS user postgres (pg_autoctl refuses
# root), each in its own process group, waits for a primary with a secondary in sync, creates the
# database notes and prints ONLY the URL on stdout (progress goes to stderr). `down` stops and
# removes everything and leaves the machine as it was. Needs root (apt-get, setpriv, signals).
#
# Usage: scripts/pg-ha.sh up               create or restart the formation; prints the URL
#        scripts/pg-ha.sh uri              print the URL (exit 1 if no writable primary)
#        scripts/pg-ha.sh status           pg_autoctl show state, then the URL (exit 1 if not up)
#        scripts/pg-ha.sh kill-primary     SIGKILL the primary node's pg_autoctl and postgres (a crash)
#        scripts/pg-ha.sh restart-killed   run the killed node again: it rejoins as the secondary
#        scripts/pg-ha.sh failover         a clean, manual failover (pg_autoctl perform failover)
#        scripts/pg-ha.sh down             stop and remove everything this script created
# Environment: PG_HA_DIR state directory (data dirs, pg_autoctl config, logs, pids), default
#              /var/tmp/notes-pg-ha, owned by postgres; PG_HA_PORT monitor port, default 6000
#              (the nodes use the next two ports).
#
# Failover speed. The monitor decides: a node is failed when its keeper (pg_autoctl) has not
# reported for node_considered_unhealthy_timeout AND the monitor's own health check (a connection
# to its postgres, every health_check_period, retried health_check_max_retries times
# health_check_retry_delay apart, each try bounded by health_check_timeout) failed. Then the
# secondary goes prepare_promotion -> stop_replication (promoted: pg_is_in_recovery() is false,
# but still default_transaction_read_only, so target_session_attrs=read-write skips it) and only
# after primary_demote_timeout becomes wait_primary and takes writes: that wait leaves a
# primary that is alive but cut off from the monitor time to demote itself (its keeper does so
# after its own timeout.network_partition_timeout), so there are never two writable primaries.
# (IsUnhealthy() in src/monitor/node_metadata.c, "when primary fails" in group_state_machine.c.)
# Defaults: 5 s / 5 s / 2 / 2 s / 20 s / 30 s / 20 s, about 35-50 s until writes. Chosen here
# (settings: docs/ref/configuration.rst of github.com/hapostgres/pg_auto_failover at tag v2.0,
# Debian's version, section "pg_auto_failover Monitor"; the same text is the man page pg_autoctl(5)):
#   pgautofailover.health_check_period 1000 ms: a dead node is seen within ~1 s; costs the monitor
#     a connection to each node every second.
#   pgautofailover.health_check_timeout 1000 ms: on loopback a dead port refuses at once; only a
#     hung (stopped, swapping) postgres waits this long; lower would misjudge a node under load.
#   pgautofailover.health_check_max_retries 1, health_check_retry_delay 500 ms: one retry half a
#     second later rides out a single lost connection without delaying a real failure by seconds.
#   pgautofailover.node_considered_unhealthy_timeout 3000 ms: keepers report every second, so 3
#     missed reports; the main lever. Lower risks failing over a primary whose keeper is merely
#     starved of CPU (2 cores, a cargo build) for a few seconds.
#   pgautofailover.primary_demote_timeout 4000 ms, with the keepers' timeout.network_partition_timeout
#     2 s (docs/ref/configuration.rst, "pg_auto_failover Keeper Service"; set with pg_autoctl config
#     set): the promoted node waits 4 s read-only; the demote wait must stay above the partition
#     timeout, or an isolated old primary could still take writes when the new one starts to. A
#     2 s partition timeout means a primary that loses both the monitor and its standby for 2 s
#     stops itself (harmless here: every node is on loopback).
#   pgautofailover.startup_grace_period stays 10 s: no failover in the monitor's first 10 s after
#     it (re)starts, so it does not fail over nodes it has not heard from yet.
# Measured on the 2-core dev machine (a cargo build running; 10 kills, 6 manual failovers): after a
# SIGKILL of the primary's pg_autoctl and postgres, the monitor starts the failover 2.1-3.5 s
# later, the secondary is promoted at 2.2-4.0 s and the URL takes writes again at 6.5-8.8 s;
# `failover` blocks writes for 1.2-1.5 s (the command returns when the old primary is a secondary
# in sync again, 3-14 s). A row committed just before the kill was always there after (synchronous
# replication: synchronous_standby_names = 'ANY 1 (pgautofailover_standby_N)' on the primary).
# `up` takes 15-32 s (5 s of it apt-get install), `down` 16-20 s (of which 10 s is deleting
# the 190 MB state directory: the disk is mounted with `discard`, and 5 s apt-get purge).
set -euo pipefail

die() { echo "pg-ha: $*" >&2; exit 1; }
say() { echo "pg-ha: $*" >&2; } # progress: stdout carries only the URL (or port) a command prints
ver=$(ls /etc/postgresql | sort -V | tail -n 1)
bindir=/usr/lib/postgresql/$ver/bin
packages=("postgresql-$ver-auto-failover" pg-auto-failover-cli)
dir=${PG_HA_DIR:-/var/tmp/notes-pg-ha}
base=${PG_HA_PORT:-6000}
names=(monitor node1 node2)
[[ $base =~ ^[0-9]{4,5}$ ]] && [ "$base" -ge 1024 ] && [ "$base" -le 65533 ] ||
  die "PG_HA_PORT must be a port number from 1024 to 65533 (got '$base')"
ports=("$base" $((base + 1)) $((base + 2)))
monitor_uri="postgres://autoctl_node@127.0.0.1:$base/pg_auto_failover?sslmode=disable"
hosts="127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
url="postgres://postgres@$hosts/notes?target_session_attrs=read-write"
marker=$dir/installed-packages # the packages `up` installed, one a line; `down` purges exactly these
log=$dir/pg-ha.log             # output of the tools run by this script
monitor_settings=(
  "health_check_period 1000" "health_check_timeout 1000" "health_check_max_retries 1"
  "health_check_retry_delay 500" "node_considered_unhealthy_timeout 3000"
  "primary_demote_timeout 4000"
)
network_partition_timeout=2

# Run a command with its output in $log; on failure, one line naming the step and its last message.
run() { local what=$1; shift; "$@" >>"$log" 2>&1 || die "$what failed: $(tail -n 1 "$log") (full log: $log)"; }
# As the OS user postgres, with pg_autoctl's config, state and pid files under $dir (XDG_*).
# setpriv execs (runuser and su fork a PAM parent that turns a SIGINT into SIGTERM then SIGKILL).
as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$dir" XDG_CONFIG_HOME="$dir/config"
  XDG_DATA_HOME="$dir/share" XDG_RUNTIME_DIR="$dir/run" PATH="$bindir:$PATH")
as_pg() { (cd / && exec "${as_postgres[@]}" "$@"); }
pgdata() { echo "$dir/$1"; }
port_of() { local i; for i in 0 1 2; do if [ "${names[$i]}" = "$1" ]; then echo "${ports[$i]}"; fi; done; }
# psql as postgres on 127.0.0.1:PORT (database DB), tuples only; quiet, short connect timeout.
sql() { PGCONNECT_TIMEOUT=2 psql "host=127.0.0.1 port=$1 user=postgres dbname=$2" -XAtq -v ON_ERROR_STOP=1 -c "$3" 2>/dev/null; }
mon() { sql "$base" pg_auto_failover "$1"; }
writable() { [ "$(PGCONNECT_TIMEOUT=2 psql "$url" -XAtqc 'select 1' 2>/dev/null)" = 1 ]; }
# alive PID COMM: PID is a live (not zombie) process named COMM. Zombies count as gone: here pid 1
# may take a second to reap the orphans of a killed process group.
alive() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
# The process group leader of a service (pg_autoctl), from its pid file, if it is alive.
pid_of() { local pid; pid=$(cat "$dir/$1.pid" 2>/dev/null) && alive "$pid" pg_autoctl && echo "$pid"; }
running() { pid_of "$1" >/dev/null; }
installed_packages() { dpkg-query -W -f='${db:Status-Status} ${Package}\n' | sed -n 's/^installed //p' | sort; }
installed() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }
# "PORT STATE" of each node whose reported state is also its goal state, from the monitor.
node_states() { mon "select nodeport || ' ' || reportedstate from pgautofailover.node where formationid = 'default' and reportedstate = goalstate order by nodeport"; }
in_sync() {
  local states primary
  states=$(node_states) || return 1
  primary=$(sed -n 's/ primary$//p' <<<"$states")
  [ -n "$primary" ] && grep -q ' secondary$' <<<"$states" &&
    [ -n "$(sql "$primary" postgres 'show synchronous_standby_names')" ]
}
wait_for() { # wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null && return 0; sleep 0.2; done
  die "timed out after $secs s waiting for $what (logs: $dir/*.log)"
}
primary_port() { mon "select nodeport from pgautofailover.node where formationid = 'default' and reportedstate in ('primary', 'wait_primary', 'single') and goalstate = reportedstate order by nodeport limit 1"; }

# start NAME: run (or create and run) the pg_autoctl service NAME in the background, in a new
# session and so process group of its own (setsid), its output in $dir/NAME.log.
start() {
  local name=$1 port d cmd
  port=$(port_of "$name")
  d=$(pgdata "$name")
  if [ -f "$dir/config/pg_autoctl$d/pg_autoctl.cfg" ]; then
    cmd=(pg_autoctl run --pgdata "$d")
  elif [ "$name" = monitor ]; then
    cmd=(pg_autoctl create monitor --pgdata "$d" --pgport "$port" --pgctl "$bindir/pg_ctl" --listen 127.0.0.1
      --auth trust --no-ssl --hostname 127.0.0.1 --run)
  else
    cmd=(pg_autoctl create postgres --pgdata "$d" --pgport "$port" --pgctl "$bindir/pg_ctl" --listen 127.0.0.1 --name "$name"
      --auth trust --no-ssl --hostname 127.0.0.1 --monitor "$monitor_uri" --run)
  fi
  say "starting $name on 127.0.0.1:$port"
  # In a session of its own (setsid execs: a background job of a script leads no group), so $! is
  # the pid of pg_autoctl and the id of the process group of it, its children and its postgres.
  # Its descriptors past 2 are closed: a pipe of the caller's ($(...), a CI step's) held open by a
  # service would keep the caller waiting for ever.
  (
    cd /
    for fd in $(ls /proc/$BASHPID/fd); do if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done
    exec setsid "${as_postgres[@]}" "${cmd[@]}"
  ) >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
  sleep 0.3
  running "$name" || die "$name did not start: $(tail -n 1 "$dir/$name.log")"
}
# kill_service NAME SIGNAL: signal the whole process group of NAME, then its postmaster.
kill_service() {
  local name=$1 sig=$2 pgid pm
  pgid=$(cat "$dir/$name.pid" 2>/dev/null) || true
  if [ -n "$pgid" ]; then kill "-$sig" -- "-$pgid" 2>/dev/null || true; fi
  pm=$(head -n 1 "$(pgdata "$name")/postmaster.pid" 2>/dev/null) || true
  if alive "$pm" postgres; then kill "-$sig" "$pm" 2>/dev/null || true; fi
}
# gone NAME: no live process of NAME's group and no live postmaster of its data directory is left.
gone() {
  local pgid pm
  pgid=$(cat "$dir/$1.pid" 2>/dev/null) || true
  if [ -n "$pgid" ] && ps -o stat= -g "$pgid" | grep -qv '^Z'; then return 1; fi
  pm=$(head -n 1 "$(pgdata "$1")/postmaster.pid" 2>/dev/null) || true
  ! alive "$pm" postgres
}
# cleanup_crash NAME: a SIGKILLed postmaster of NAME (not running: see gone) leaves its SysV shared
# memory segment (id on line 7 of postmaster.pid) and its Unix socket and lock file (in
# /var/run/postgresql, Debian's default); remove them if nothing is attached and the lock file
# names NAME's data directory (line 2), never another server's.
cleanup_crash() {
  local d lock shm
  d=$(pgdata "$1")
  if [ -f "$d/postmaster.pid" ]; then
    shm=$(sed -n 7p "$d/postmaster.pid" | awk '{print $2}')
    if [ -n "$shm" ] && [ "$(ipcs -m -i "$shm" 2>/dev/null | sed -n 's/.*nattch=\([0-9]*\).*/\1/p')" = 0 ]; then
      ipcrm -m "$shm" 2>/dev/null || true
    fi
  fi
  lock=/var/run/postgresql/.s.PGSQL.$(port_of "$1").lock
  if [ -f "$lock" ] && [ "$(sed -n 2p "$lock")" = "$d" ]; then rm -f "${lock%.lock}" "$lock"; fi
}
# stop NAME: a fast shutdown (SIGINT to pg_autoctl: postgres -m fast), then SIGKILL after 15 s.
# The signal goes to pg_autoctl alone, which stops its children: sent to the whole group, it makes
# the supervisor restart the children that exit first, and the stop takes 10 s more.
stop() {
  local name=$1 pid
  gone "$name" && { cleanup_crash "$name"; return 0; }
  say "stopping $name"
  if pid=$(pid_of "$name"); then kill -INT "$pid"; else kill_service "$name" INT; fi
  for _ in $(seq 1 75); do gone "$name" && break; sleep 0.2; done
  if ! gone "$name"; then
    say "$name did not stop within 15 s: SIGKILL"
    kill_service "$name" KILL
    for _ in $(seq 1 25); do gone "$name" && break; sleep 0.2; done
  fi
  gone "$name" || die "$name still has processes after SIGKILL"
  cleanup_crash "$name"
}
tune_monitor() {
  local s args=()
  for s in "${monitor_settings[@]}"; do args+=(-c "alter system set pgautofailover.${s% *} = ${s#* }"); done
  run "tuning the monitor" psql "host=127.0.0.1 port=$base user=postgres dbname=pg_auto_failover" -Xq \
    -v ON_ERROR_STOP=1 "${args[@]}" -c 'select pg_reload_conf()'
}
tune_node() {
  run "setting $1's timeout.network_partition_timeout" as_pg pg_autoctl config set --pgdata "$(pgdata "$1")" \
    timeout.network_partition_timeout "$network_partition_timeout"
}
registered() { [ "$(mon "select count(*) from pgautofailover.node where nodename = '$1'")" = 1 ]; }
node_up() { [ "$(sql "$(port_of "$1")" postgres 'select 1')" = 1 ]; }
is_primary_or_single() { node_states | grep -Eq "^$(port_of "$1") (single|primary|wait_primary)$"; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, setpriv to the user postgres, signals to its processes)"
[ -d "$bindir" ] || die "no PostgreSQL $ver server binaries in $bindir"

case "${1:-}" in
up)
  [ $# = 1 ] || die "usage: pg-ha.sh up"
  if running monitor && running node1 && running node2 && in_sync && writable; then echo "$url"; exit 0; fi
  install -d -o postgres -g postgres -m 0750 "$dir"
  touch "$log"
  missing=()
  for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    before=$(installed_packages)
    run "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    comm -13 <(echo "$before") <(installed_packages) >>"$marker" # with any dependencies it pulled in
  fi
  command -v pg_autoctl >/dev/null || die "pg_autoctl not found after installing ${packages[*]}"
  for i in 0 1 2; do
    if ! running "${names[$i]}" && pg_isready -q -h 127.0.0.1 -p "${ports[$i]}"; then
      die "127.0.0.1:${ports[$i]} is taken by another server (set PG_HA_PORT)"
    fi
  done
  install -d -o postgres -g postgres -m 0700 "$dir/config" "$dir/share" "$dir/run"
  chown postgres:postgres "$log"

  running monitor || { stop monitor; start monitor; }
  wait_for 120 "the monitor on 127.0.0.1:$base" mon 'select 1 from pgautofailover.formation limit 1'
  tune_monitor
  # node1 first, and registered and running before node2: node1 becomes the primary.
  for n in node1 node2; do
    if ! running $n; then
      stop $n
      start $n
      wait_for 120 "$n to register with the monitor" registered $n
      wait_for 120 "postgres of $n on 127.0.0.1:$(port_of $n)" node_up $n
      if [ $n = node1 ] && [ ! -f "$dir/config/pg_autoctl$(pgdata node2)/pg_autoctl.cfg" ]; then
        wait_for 120 "node1 to become the primary" is_primary_or_single node1
      fi
    fi
    tune_node $n
  done
  wait_for 180 "a primary and a secondary in sync (pg_autoctl show state --monitor '$monitor_uri')" in_sync
  p=$(primary_port)
  if [ "$(sql "$p" postgres "select count(*) from pg_database where datname = 'notes'")" != 1 ]; then
    run "creating the database notes" psql "host=127.0.0.1 port=$p user=postgres dbname=postgres" -Xq -c 'create database notes'
  fi
  wait_for 30 "a writable primary through $url" writable
  for n in node1 node2; do
    node_up $n || die "postgres cannot connect to $n on 127.0.0.1:$(port_of $n) without a password (see its pg_hba.conf)"
  done
  say "up: primary on 127.0.0.1:$p, synchronous_standby_names = $(sql "$p" postgres 'show synchronous_standby_names')"
  echo "$url"
  ;;
uri)
  writable || die "no writable primary at $url (run: scripts/pg-ha.sh up)"
  echo "$url"
  ;;
status)
  [ -d "$dir" ] || die "not up (no $dir)"
  as_pg pg_autoctl show state --monitor "$monitor_uri" 2>/dev/null || die "the monitor on 127.0.0.1:$base does not answer"
  for n in "${names[@]}"; do running "$n" || say "$n: pg_autoctl is not running"; done
  writable || die "no writable primary at $url"
  echo "$url"
  ;;
kill-primary)
  p=$(primary_port) || true
  [ -n "$p" ] || die "no primary known to the monitor on 127.0.0.1:$base"
  if [ "$p" = "${ports[1]}" ]; then victim=node1; else victim=node2; fi
  kill_service "$victim" KILL
  for _ in $(seq 1 25); do gone "$victim" && break; sleep 0.1; done
  gone "$victim" || die "$victim (127.0.0.1:$p) survived SIGKILL"
  echo "$victim" >"$dir/killed"
  say "killed $victim: pg_autoctl process group and postmaster (SIGKILL)"
  echo "$p"
  ;;
restart-killed)
  victim=$(cat "$dir/killed" 2>/dev/null) || die "no node killed by kill-primary"
  running "$victim" && die "$victim is already running"
  cleanup_crash "$victim"
  start "$victim"
  wait_for 180 "$victim to rejoin as a secondary in sync" in_sync
  rm -f "$dir/killed"
  say "$victim (127.0.0.1:$(port_of "$victim")) is back, as the secondary"
  echo "$(port_of "$victim")"
  ;;
failover)
  in_sync || die "no primary with a secondary in sync: a failover would have nowhere to go"
  old=$(primary_port)
  run "pg_autoctl perform failover" as_pg pg_autoctl perform failover --monitor "$monitor_uri" --wait 60
  wait_for 60 "the failover to finish" in_sync
  new=$(primary_port)
  [ "$new" != "$old" ] || die "the primary is still 127.0.0.1:$old after the failover"
  wait_for 30 "a writable primary through $url" writable
  say "failover done: the primary is now 127.0.0.1:$new (was $old)"
  echo "$new"
  ;;
down)
  [ $# = 1 ] || die "usage: pg-ha.sh down"
  if [ -d "$dir" ]; then
    log=$(mktemp) # $dir goes away
    for n in node2 node1 monitor; do stop $n; done
    purge=()
    if [ -f "$marker" ]; then mapfile -t purge < <(grep -v '^$' "$marker"); fi
    rm -rf "$dir"
    if [ ${#purge[@]} -gt 0 ]; then
      say "removing ${purge[*]} (installed by pg-ha.sh up)"
      run "apt-get purge ${purge[*]}" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "${purge[@]}"
    fi
    rm -f "$log"
  fi
  echo "no HA formation (processes stopped, $dir removed, packages this script installed purged)"
  ;;
*) die "usage: pg-ha.sh up | uri | status | kill-primary | restart-killed | failover | down" ;;
esac
