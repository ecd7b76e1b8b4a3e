# Shell functions shared by bench/run.sh and bench/callgrind.sh (sourced, not run).

# The benchmark's user: every /notes route needs a signed-in caller, and every note the
# benchmark reads or writes is this user's.
BENCH_EMAIL=bench@example.com
BENCH_PASSWORD=bench-password-0123

# bench_session BASE_URL: sign the bench user up (`POST /users`: the api stores an argon2
# hash) and in (`POST /sessions`: the api stores the token's digest in `sessions`) through the
# api at BASE_URL, on a database that does not hold the user yet. Prints "USER_ID TOKEN". Any
# server reading that database (the baseline) accepts the token.
bench_session() {
  local base=$1 credentials route answer status user token
  credentials=$(printf '{"email":"%s","password":"%s"}' "$BENCH_EMAIL" "$BENCH_PASSWORD")
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
    have=$(psql -qAt "$where" -c "SELECT count(*) FROM notes")
    if [ "$have" -gt "$target" ]; then
      psql -q "$where" -c "$(keep_oldest "$target")" -c "VACUUM ANALYZE notes" >/dev/null
      return 0
    fi
    [ "$have" -lt "$target" ] || return 0
    [ -n "$owner" ] || { echo "fill_notes: no owner for the new notes" >&2; return 1; }
    psql -q "$where" >/dev/null <<SQL
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
