-- Notes for bench/search.sh, made inside PostgreSQL (psql -v ... -f bench/search-data.sql).
--
-- Variables (psql -v NAME=VALUE):
--   typical      id of the typical user (signed up through the api): one of the `users` owners
--   heavy        id of the heavy user (signed up through the api)
--   users        owners of `per_user` notes each, the typical user included: users - 1 more
--                accounts are inserted here (no password: hash '!' verifies nothing)
--   per_user     notes of each of them
--   heavy_notes  notes of the heavy user, all newer (higher ids) than everyone else's
--   vocab        vocabulary size
--
-- Text: 6 to 18 words a note (12 on average), separated by spaces, drawn from a vocabulary of
-- `vocab` made-up five-letter words (consonant-vowel-consonant-vowel-consonant, all distinct,
-- so no word is a substring of another and LIKE '%word%' finds exactly the notes holding it).
-- Word ranks follow a Zipf-like law: rank r = floor((vocab + 1) ^ u), u uniform in [0, 1),
-- so P(r) = ln((r + 1) / r) / ln(vocab + 1), about 1 / (r ln vocab): with 50 000 words the
-- first is in about half the notes, the 10 000th in about one note in 9 000. The ranks are
-- spread over the alphabet (word of rank r is made from (r * 7919 + 12345) mod 200000), and
-- `bench_vocab` (rank, word) is left in the database for the script to pick its queries.
--
-- The other users' notes are interleaved (note i belongs to owner i mod users), one every 30 s
-- going back from now; the heavy user's come after them. Ends with VACUUM ANALYZE.
\set ON_ERROR_STOP on
BEGIN;

DROP TABLE IF EXISTS bench_vocab;
CREATE TABLE bench_vocab AS
SELECT r AS rank,
       substr(l.c, code % 20 + 1, 1) || substr(l.v, code / 20 % 5 + 1, 1) ||
       substr(l.c, code / 100 % 20 + 1, 1) || substr(l.v, code / 2000 % 5 + 1, 1) ||
       substr(l.c, code / 10000 % 20 + 1, 1) AS word
FROM (SELECT r, (r * 7919 + 12345) % 200000 AS code FROM generate_series(1, :vocab) AS r) AS s,
     (VALUES ('bcdfghjklmnpqrstvwxz', 'aeiou')) AS l (c, v);

-- The other owners besides the typical user.
INSERT INTO users (email, name, hashed_password, is_active, is_admin, created_at, updated_at)
SELECT 'search-bench-' || i || '@bench.invalid', 'Search bench ' || i, '!', true, false, now(), now()
FROM generate_series(1, :users - 1) AS i;

INSERT INTO notes (user_id, text, completed, created_at, updated_at)
SELECT o.ids[(1 + i % o.n)::int],
       (SELECT string_agg(v.a[floor(power(:vocab + 1.0, random()))::int], ' ' ORDER BY k)
        FROM generate_series(1, 6 + i % 13) AS k),
       random() < 0.3, t.at, t.at
FROM (SELECT array_agg(word ORDER BY rank) AS a FROM bench_vocab) AS v,
     (SELECT array_agg(id ORDER BY id) AS ids, count(*) AS n FROM users
      WHERE id = :typical OR email LIKE 'search-bench-%@bench.invalid') AS o,
     generate_series(1, :users * :per_user) AS i,
     LATERAL (SELECT now() - (:users * :per_user + :heavy_notes - i) * interval '30 seconds') AS t (at);

INSERT INTO notes (user_id, text, completed, created_at, updated_at)
SELECT :heavy,
       (SELECT string_agg(v.a[floor(power(:vocab + 1.0, random()))::int], ' ' ORDER BY k)
        FROM generate_series(1, 6 + i % 13) AS k),
       random() < 0.3, t.at, t.at
FROM (SELECT array_agg(word ORDER BY rank) AS a FROM bench_vocab) AS v,
     generate_series(:users * :per_user + 1, :users * :per_user + :heavy_notes) AS i,
     LATERAL (SELECT now() - (:users * :per_user + :heavy_notes - i) * interval '30 seconds') AS t (at);

COMMIT;

VACUUM ANALYZE users;
VACUUM ANALYZE notes;
