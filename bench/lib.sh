# Shell functions shared by bench/run.sh and bench/callgrind.sh (sourced, not run).

# fill_notes BACKEND WHERE TARGET: make `notes` hold exactly TARGET rows, in one statement:
# add benchmark notes, or delete the newest (the write scenarios add rows). WHERE is the
# database file for BACKEND sqlite, the database URL for postgres.
fill_notes() {
  local backend=$1 where=$2 target=$3 have
  if [ "$backend" = sqlite ]; then
    have=$(sqlite3 "$where" "PRAGMA busy_timeout=10000; SELECT count(*) FROM notes" | tail -n 1)
    if [ "$have" -gt "$target" ]; then
      sqlite3 "$where" "PRAGMA busy_timeout=10000; $(keep_oldest "$target")" >/dev/null
      return 0
    fi
    [ "$have" -lt "$target" ] || return 0
    sqlite3 "$where" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
WITH RECURSIVE s(i) AS (SELECT $have + 1 UNION ALL SELECT i + 1 FROM s WHERE i < $target)
INSERT INTO notes (text, completed, created_at, updated_at)
SELECT 'Benchmark note number ' || i || ': buy milk, call mum, water the plants.', i % 2 = 0,
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
    psql -q "$where" >/dev/null <<SQL
INSERT INTO notes (text, completed, created_at, updated_at)
SELECT 'Benchmark note number ' || i || ': buy milk, call mum, water the plants.', i % 2 = 0,
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
