-- pgbench script of bench/search.sh: the api's search statement for a two-word query on
-- PostgreSQL (api/src/search/sql.rs: first page, no `completed` filter), run with -M prepared
-- -D user=ID -D w1=WORD -D n1=LEN -D w2=WORD -D n2=LEN -D "tsq='w1' & 'w2'" -D limit=20.
SELECT id, user_id, text, completed, created_at, updated_at, rank
FROM (SELECT id, user_id, text, completed, created_at, updated_at,
             ((CHAR_LENGTH(LOWER(text)) - CHAR_LENGTH(REPLACE(LOWER(text), :w1, ''))) / :n1
              + (CHAR_LENGTH(LOWER(text)) - CHAR_LENGTH(REPLACE(LOWER(text), :w2, ''))) / :n2) AS rank
      FROM notes
      WHERE user_id = :user AND search @@ to_tsquery('simple', :tsq)) AS found
ORDER BY rank DESC, id DESC
LIMIT :limit;
