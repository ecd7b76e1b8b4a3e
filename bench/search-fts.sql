-- pgbench script of bench/search.sh: the api's first statement for a two-word query's first
-- page on PostgreSQL (api/src/search/sql.rs: the top rank tier, no `completed` filter), run
-- with -M prepared -D user=ID -D e1=ID:w1 -D m1=ID:~w1~ -D e2=ID:w2 -D m2=ID:~w2~
-- -D "tsq='ID:w1' & 'ID:w2' & (rank ≥ 6 as the api spells it)" -D "marks=(its marks alone)"
-- -D limit=20.
SELECT id, user_id, text, completed, created_at, updated_at, rank
FROM (SELECT id, user_id, text, completed, created_at, updated_at,
             (SELECT count(*) FROM unnest(search) AS u
              WHERE u.lexeme = :e1 OR starts_with(u.lexeme, :m1)
                 OR u.lexeme = :e2 OR starts_with(u.lexeme, :m2)) AS rank
      FROM notes
      WHERE user_id + 0 = :user AND search @@ (:marks)::tsquery
        AND ts_match_vq(search, (:tsq)::tsquery)) AS found_notes
ORDER BY rank DESC, id DESC
LIMIT :limit;
