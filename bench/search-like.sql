-- pgbench script of bench/search.sh: the search the api replaces, a substring scan of one
-- user's notes for two words, newest first (run with -M prepared -D user=ID -D p1=%w1% -D p2=%w2%).
SELECT id, user_id, text, completed, created_at, updated_at
FROM notes
WHERE user_id = :user AND text LIKE :p1 AND text LIKE :p2
ORDER BY id DESC
LIMIT 20;
