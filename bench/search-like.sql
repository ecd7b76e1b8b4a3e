-- pgbench script of bench/search.sh: the search the api replaces, a substring scan of one
-- user's notes for two words giving the same answer as the api — every note holding both,
-- best first (how often the words occur), then newest — (run with -M prepared -D user=ID
-- -D p1=%w1% -D p2=%w2% -D w1=WORD -D n1=LEN -D w2=WORD -D n2=LEN -D limit=20).
SELECT id, user_id, text, completed, created_at, updated_at, rank
FROM (SELECT id, user_id, text, completed, created_at, updated_at,
             ((CHAR_LENGTH(LOWER(text)) - CHAR_LENGTH(REPLACE(LOWER(text), :w1, ''))) / :n1
              + (CHAR_LENGTH(LOWER(text)) - CHAR_LENGTH(REPLACE(LOWER(text), :w2, ''))) / :n2) AS rank
      FROM notes
      WHERE user_id = :user AND LOWER(text) LIKE :p1 AND LOWER(text) LIKE :p2) AS found
ORDER BY rank DESC, id DESC
LIMIT :limit;
