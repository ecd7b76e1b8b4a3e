//! A [`Query`] as `SELECT`s per backend: the caller's notes that the backend's full-text
//! index finds for the query's words, each with its rank, best first, a batch at a time.
//!
//! | operator | PostgreSQL (`::tsquery`, owner-prefixed) | SQLite FTS5 (`MATCH`) | MariaDB (`AGAINST (… IN BOOLEAN MODE)`) |
//! |---|---|---|---|
//! | `word` | `'7:word'` | `"word"` | `+7xword` |
//! | `word*` | `'7:word':*` | `"word"*` | `+7xword*` |
//! | `"a phrase"` | each word, `&` | each word | `+7xeach +7xword` |
//! | `-word`, `-word*` | `!'7:word'`, `!'7:word':*` | `NOT "word"`, `NOT "word"*` | `-7xword`, `-7xword*` |
//!
//! Only words made of letters and digits reach the index's syntax ([`super::words`]), so no
//! user text is read as an operator. A phrase asks the index for its words; their order
//! and adjacency are checked on the text ([`Query::find`]).
//!
//! The rank is how many of the note's words match one of the query's required words (a
//! word equal to it, or starting with it for `word*`): the same integer on every backend,
//! independent of other users' notes (a score built on the whole table's statistics would
//! vary with, and hint at, what others wrote), and exact in a page cursor. Ties go to the
//! newest note. PostgreSQL reads it from the note's index entries, SQLite counts FTS5's own
//! `highlight()` marks, MariaDB a regular expression over `search_text`.
//!
//! ## Rank tiers (PostgreSQL)
//!
//! Ranking every match before the best page is known costs a common word's every note: the
//! heavy user of the benchmark has 19 500 notes holding two common words. PostgreSQL's
//! index therefore holds, besides `OWNER:word`, a mark `OWNER:~word~K` for the K-th time a
//! word occurs in a note (`m20261207_000010_search_rank_tiers`), so "the words occur at least
//! S times in all" is itself an index query. For a query of up to [`MAX_TIERED_WORDS`] plain
//! words, a page first reads the top tier — the notes of rank ≥ n + [`TIER_SPAN`] (n words),
//! ranked — and only when that runs short the middle tier (rank ≥ n + [`MIDDLE_TIER`]), then
//! the rest, each ranked. A first page of common words reads the top tier alone (158 notes for
//! that heavy user, not 19 500). When the top tier is empty the words are rare: the page reads
//! every lower rank in one statement ([`Page::widen`]).

use sea_orm::{DbBackend, Statement, Value};

use super::Query;

/// Which page of the caller's matching notes to read.
pub struct Page {
    pub owner: i64,
    pub completed: Option<bool>,
    /// The rank and id of the last note of the previous page.
    pub after: Option<(i64, i64)>,
    pub limit: u64,
    /// The tier above `after` held nothing: read every rank below it in one statement
    /// (PostgreSQL). Its words are rare, so the rest is small.
    pub widen: bool,
}

/// One statement's worth of candidates.
pub struct Batch {
    /// The `SELECT`: the columns of [`entity::note::Listed`], in its order, then the rank;
    /// best first, at most the page's `limit`.
    pub statement: Statement,
    /// Where the candidates go on when this batch returns fewer than `limit`: the cursor of
    /// the next tier (`None`: there are no more).
    pub then: Option<(i64, i64)>,
}

/// How many plain words a query may have for PostgreSQL to read it tier by tier.
pub const MAX_TIERED_WORDS: usize = 3;
/// The top tier holds the notes where the words occur this many times more than once each.
pub const TIER_SPAN: i64 = 4;
/// The middle tier, below the top one: this many times more than once each.
pub const MIDDLE_TIER: i64 = 2;

/// The batch that reads `page` of the notes matching `query`.
pub fn batch(query: &Query, page: &Page, backend: DbBackend) -> Batch {
    let ranked = ranked_words(query);
    if backend == DbBackend::Postgres
        && !ranked.is_empty()
        && ranked.len() <= MAX_TIERED_WORDS
        && ranked.iter().all(|&(_, prefix)| !prefix)
    {
        return tier(query, &ranked, page);
    }
    Batch {
        statement: statement(query, &ranked, page, backend, None),
        then: None,
    }
}

/// The query's distinct required words, each with whether it is a prefix.
fn ranked_words(query: &Query) -> Vec<(&str, bool)> {
    let mut words = Vec::new();
    for word in query.required_words() {
        if !words.contains(&word) {
            words.push(word);
        }
    }
    words
}

/// PostgreSQL's batch for `page` of a query of plain words (`ranked`, none a prefix): the
/// tier its cursor is in.
fn tier(query: &Query, ranked: &[(&str, bool)], page: &Page) -> Batch {
    let words: Vec<&str> = ranked.iter().map(|&(word, _)| word).collect();
    let lowest = words.len() as i64;
    let (middle, top) = (lowest + MIDDLE_TIER, lowest + TIER_SPAN);
    let at_least = |total, marks_only| at_least(page.owner, &words, total, marks_only);
    let rank = page.after.map_or(i64::MAX, |(rank, _)| rank);
    let (condition, marks, then) = if rank >= top {
        let marks = at_least(top, true);
        (at_least(top, false), Some(marks), Some((top - 1, i64::MAX)))
    } else if page.widen {
        (format!("!{}", at_least(top, false)), None, None)
    } else if rank >= middle {
        (
            format!("{} & !{}", at_least(middle, false), at_least(top, false)),
            None,
            Some((middle - 1, i64::MAX)),
        )
    } else {
        (format!("!{}", at_least(middle, false)), None, None)
    };
    Batch {
        statement: statement(
            query,
            ranked,
            page,
            DbBackend::Postgres,
            Some(Tier { condition, marks }),
        ),
        then,
    }
}

/// A part of PostgreSQL's ranks: the `tsquery` `condition` the query's own is extended with,
/// and the marks alone to ask the index for, when they find fewer notes than the words.
struct Tier {
    condition: String,
    /// Looked up in the index instead of the whole query, which is then checked on each note
    /// found: the top tier's marks are rare, and with the common words themselves the
    /// index would read those words' every entry of the user.
    marks: Option<String>,
}

/// The `tsquery` of the notes where `words` occur `total` times or more in all: one of the
/// ways to share `total` among them (each word at least once) is met, a word's K-th
/// occurrence being its mark `OWNER:~word~K` — with `marks_only`, a share's words that
/// occur once are left out (a superset, for the index).
fn at_least(owner: i64, words: &[&str], total: i64, marks_only: bool) -> String {
    let mut shares = Vec::new();
    compositions(total, words.len(), &mut Vec::new(), &mut shares);
    let alternatives: Vec<String> = shares
        .iter()
        .map(|share| {
            let marks: Vec<String> = words
                .iter()
                .zip(share)
                .filter(|&(_, &times)| !(marks_only && times == 1))
                .map(|(word, &times)| match times {
                    1 => format!("'{owner}:{word}'"),
                    _ => format!("'{owner}:~{word}~{times}'"),
                })
                .collect();
            format!("({})", marks.join(" & "))
        })
        .collect();
    format!("({})", alternatives.join(" | "))
}

/// Every way to write `total` as `parts` positive integers, in order.
fn compositions(total: i64, parts: usize, prefix: &mut Vec<i64>, out: &mut Vec<Vec<i64>>) {
    if parts == 1 {
        if total >= 1 {
            prefix.push(total);
            out.push(prefix.clone());
            prefix.pop();
        }
        return;
    }
    for first in 1..=total - (parts as i64 - 1) {
        prefix.push(first);
        compositions(total - first, parts - 1, prefix, out);
        prefix.pop();
    }
}

/// The `SELECT` of `page` of the notes matching `query`, ranked on `ranked` (its distinct
/// required words), in `tier` on PostgreSQL when given.
fn statement(
    query: &Query,
    ranked: &[(&str, bool)],
    page: &Page,
    backend: DbBackend,
    tier: Option<Tier>,
) -> Statement {
    // Bound in the order the placeholders appear: `?` placeholders are positional.
    let mut sql = Sql::new(backend);
    let completed = |sql: &mut Sql| match page.completed {
        Some(completed) => format!(" AND completed = {}", sql.bind(completed)),
        None => String::new(),
    };
    let (rank, from) = match backend {
        DbBackend::Postgres => {
            let rank = postgres_rank(&mut sql, page.owner, ranked);
            let mut tsquery = POSTGRES.spell(query, &format!("{}:", page.owner));
            let mut marks = None;
            if let Some(tier) = tier {
                tsquery = format!("{tsquery} & {}", tier.condition);
                marks = tier.marks;
            }
            let owner = sql.bind(page.owner);
            // `ts_match_vq` is `@@` that the planner does not take to the index.
            let matched = match marks {
                Some(marks) => format!(
                    "search @@ {}::tsquery AND ts_match_vq(search, {}::tsquery)",
                    sql.bind(marks),
                    sql.bind(tsquery)
                ),
                None => format!("search @@ {}::tsquery", sql.bind(tsquery)),
            };
            let completed = completed(&mut sql);
            // `user_id + 0`: the owner is in the index's words already; a second index on
            // `user_id` would only add every note of a heavy user to the bitmap.
            (
                rank,
                format!("FROM notes WHERE user_id + 0 = {owner} AND {matched}{completed}"),
            )
        }
        DbBackend::MySql => {
            let rank = format!(
                "CHAR_LENGTH(REGEXP_REPLACE(REGEXP_REPLACE(search_text, {}, CHAR(1 USING utf8mb4)), {}, ''))",
                sql.bind(mariadb_pattern(page.owner, ranked)),
                sql.bind("[^\\x01]+")
            );
            let owner = sql.bind(page.owner);
            let against = sql.bind(MARIADB.spell(query, &format!("{}x", page.owner)));
            let completed = completed(&mut sql);
            (
                rank,
                format!(
                    "FROM notes WHERE user_id = {owner} AND \
                     MATCH (search_text) AGAINST ({against} IN BOOLEAN MODE){completed}"
                ),
            )
        }
        // FTS5 marks each of the note's words the query matched (its `text` column only):
        // the rank is how many marks `highlight()` adds. Only the owner's entries are read
        // (`notes_search` indexes `user_id` too): FTS5 steps through them and skips ahead in
        // a common word's list of everyone's notes.
        _ => {
            let matched = sql.bind(format!(
                "user_id:\"{}\" AND text:({})",
                page.owner,
                SQLITE.spell(query, "")
            ));
            let owner = sql.bind(page.owner);
            let completed = completed(&mut sql);
            (
                "(LENGTH(found.marked) - LENGTH(REPLACE(found.marked, CHAR(1), ''))) \
                 - (LENGTH(notes.text) - LENGTH(REPLACE(notes.text, CHAR(1), '')))"
                    .to_owned(),
                format!(
                    "FROM (SELECT rowid, highlight(notes_search, 0, CHAR(1), '') AS marked \
                     FROM notes_search WHERE notes_search MATCH {matched}) AS found \
                     JOIN notes ON notes.id = found.rowid \
                     WHERE notes.user_id = {owner}{completed}"
                ),
            )
        }
    };
    let columns = "id, user_id, text, completed, created_at, updated_at";
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let qualified = match backend {
        DbBackend::Sqlite => {
            "notes.id, notes.user_id, notes.text, notes.completed, \
                              notes.created_at, notes.updated_at"
        }
        _ => columns,
    };
    let after = match page.after {
        Some((rank, id)) => format!(" WHERE (rank, id) < ({}, {})", sql.bind(rank), sql.bind(id)),
        None => String::new(),
    };
    let limit = sql.bind(limit);
    sql.finish(format!(
        "SELECT {columns}, rank FROM (SELECT {qualified}, {rank} AS rank {from}) AS found_notes\
         {after} ORDER BY rank DESC, id DESC LIMIT {limit}"
    ))
}

/// PostgreSQL's rank: the note's index entries for `ranked` words (`OWNER:word` and each
/// mark `OWNER:~word~K`, or every entry starting so for a prefix), counted.
fn postgres_rank(sql: &mut Sql, owner: i64, ranked: &[(&str, bool)]) -> String {
    let conditions: Vec<String> = ranked
        .iter()
        .map(|&(word, prefix)| {
            let (word_entry, marks) = if prefix {
                (format!("{owner}:{word}"), format!("{owner}:~{word}"))
            } else {
                (format!("{owner}:{word}"), format!("{owner}:~{word}~"))
            };
            let first = if prefix {
                format!("starts_with(u.lexeme, {})", sql.bind(word_entry))
            } else {
                format!("u.lexeme = {}", sql.bind(word_entry))
            };
            format!("{first} OR starts_with(u.lexeme, {})", sql.bind(marks))
        })
        .collect();
    format!(
        "(SELECT count(*) FROM unnest(search) AS u WHERE {})",
        conditions.join(" OR ")
    )
}

/// MariaDB's rank pattern: a word of `search_text` (its words are separated by one space,
/// each after its owner: `7xword`) that is one of `ranked`, or starts with a prefix of it.
fn mariadb_pattern(owner: i64, ranked: &[(&str, bool)]) -> String {
    let words: Vec<String> = ranked
        .iter()
        .map(|&(word, prefix)| {
            if prefix {
                format!("{owner}x{word}[^ ]*")
            } else {
                format!("{owner}x{word}")
            }
        })
        .collect();
    format!("(?<![^ ])(?:{})(?![^ ])", words.join("|"))
}

/// How one engine spells the query's words: each word between `quote`s after the given
/// owner mark, a prefix followed by `prefix`, a required word after `required`, an
/// excluded one after `excluded`, joined by `separator`.
struct Syntax {
    quote: &'static str,
    prefix: &'static str,
    required: &'static str,
    excluded: &'static str,
    separator: &'static str,
}

const POSTGRES: Syntax = Syntax {
    quote: "'",
    prefix: ":*",
    required: "",
    excluded: "!",
    separator: " & ",
};
const SQLITE: Syntax = Syntax {
    quote: "\"",
    prefix: "*",
    required: "",
    excluded: "NOT ",
    separator: " ",
};
const MARIADB: Syntax = Syntax {
    quote: "",
    prefix: "*",
    required: "+",
    excluded: "-",
    separator: " ",
};

impl Syntax {
    fn spell(&self, query: &Query, owner: &str) -> String {
        let term = |mark: &str, (word, prefix): (&str, bool)| {
            let prefix = if prefix { self.prefix } else { "" };
            format!(
                "{mark}{quote}{owner}{word}{quote}{prefix}",
                quote = self.quote
            )
        };
        let required = query
            .required_words()
            .into_iter()
            .map(|w| term(self.required, w));
        let excluded = query
            .excluded_words()
            .into_iter()
            .map(|w| term(self.excluded, w));
        required
            .chain(excluded)
            .collect::<Vec<_>>()
            .join(self.separator)
    }
}

/// SQL text with its values bound in order, in the backend's placeholder style.
struct Sql {
    backend: DbBackend,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            values: Vec::new(),
        }
    }

    /// Bind `value`; its placeholder.
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".to_owned(),
        }
    }

    fn finish(self, sql: String) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_gets_only_words() {
        let query =
            Query::parse(r#"Apple "big red" fru* -pear -"old tree" -ab x' OR 1=1"#).unwrap();
        assert_eq!(
            POSTGRES.spell(&query, "7:"),
            "'7:apple' & '7:big' & '7:red' & '7:fru':* & !'7:pear'"
        );
        assert_eq!(
            SQLITE.spell(&query, ""),
            r#""apple" "big" "red" "fru"* NOT "pear""#
        );
        assert_eq!(
            MARIADB.spell(&query, "7x"),
            "+7xapple +7xbig +7xred +7xfru* -7xpear"
        );
        assert_eq!(
            mariadb_pattern(7, &ranked_words(&query)),
            "(?<![^ ])(?:7xapple|7xbig|7xred|7xfru[^ ]*)(?![^ ])"
        );
    }

    #[test]
    fn pages_continue_after_the_last_rank_and_id() {
        let query = Query::parse("apple fru*").unwrap();
        let page = Page {
            owner: 7,
            completed: Some(true),
            after: Some((3, 42)),
            limit: 20,
            widen: false,
        };
        let batch = batch(&query, &page, DbBackend::Postgres);
        let sql = &batch.statement.sql;
        assert!(sql.contains("WHERE (rank, id) < ($8, $9)"), "{sql}");
        assert!(
            sql.contains("u.lexeme = $1 OR starts_with(u.lexeme, $2)"),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE user_id + 0 = $5 AND search @@ $6::tsquery AND completed = $7"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ORDER BY rank DESC, id DESC LIMIT $10"),
            "{sql}"
        );
        assert_eq!(batch.statement.values.unwrap().0.len(), 10);
        assert!(batch.then.is_none(), "a prefix is ranked in one pass");
    }

    #[test]
    fn shares_of_a_total_are_every_composition() {
        let mut out = Vec::new();
        compositions(4, 2, &mut Vec::new(), &mut out);
        assert_eq!(out, [vec![1, 3], vec![2, 2], vec![3, 1]]);
        assert_eq!(
            at_least(7, &["a", "b"], 3, false),
            "(('7:a' & '7:~b~2') | ('7:~a~2' & '7:b'))"
        );
        assert_eq!(
            at_least(7, &["a", "b"], 3, true),
            "(('7:~b~2') | ('7:~a~2'))"
        );
        assert_eq!(at_least(7, &["a"], 2, false), "(('7:~a~2'))");
    }

    #[test]
    fn plain_words_read_the_tiers_best_first_on_postgres() {
        let query = Query::parse("apple pear").unwrap();
        let mut page = Page {
            owner: 7,
            completed: None,
            after: None,
            limit: 20,
            widen: false,
        };
        let values = |batch: &Batch| format!("{:?}", batch.statement.values);
        let top = batch(&query, &page, DbBackend::Postgres);
        assert_eq!(top.then, Some((5, i64::MAX)), "ranks 2 + 4 and more first");
        assert!(
            values(&top).contains("'7:apple' & '7:pear' & (('7:apple' & '7:~pear~5')"),
            "{}",
            values(&top)
        );
        assert!(
            values(&top).contains("\"(('7:~pear~5') | ('7:~apple~2' & '7:~pear~4')"),
            "{}",
            values(&top)
        );
        assert!(
            top.statement
                .sql
                .contains("search @@ $6::tsquery AND ts_match_vq(search, $7::tsquery)"),
            "{}",
            top.statement.sql
        );
        page.after = Some((9, 99));
        assert_eq!(batch(&query, &page, DbBackend::Postgres).then, top.then);

        page.after = top.then;
        let middle = batch(&query, &page, DbBackend::Postgres);
        assert!(
            values(&middle).contains("'7:apple' & '7:pear' & (('7:apple' & '7:~pear~3')"),
            "{}",
            values(&middle)
        );
        assert!(values(&middle).contains(" & !(("), "{}", values(&middle));
        assert_eq!(middle.then, Some((3, i64::MAX)));

        page.after = middle.then;
        let rest = batch(&query, &page, DbBackend::Postgres);
        assert!(
            values(&rest).contains("'7:apple' & '7:pear' & !(('7:apple' & '7:~pear~3')"),
            "{}",
            values(&rest)
        );
        assert!(rest.statement.sql.contains("ORDER BY rank DESC, id DESC"));
        assert_eq!(rest.then, None);

        page.after = top.then;
        page.widen = true;
        let wide = batch(&query, &page, DbBackend::Postgres);
        assert!(
            values(&wide).contains("'7:apple' & '7:pear' & !(('7:apple' & '7:~pear~5')"),
            "{}",
            values(&wide)
        );
        assert_eq!(wide.then, None);
        for backend in [DbBackend::Sqlite, DbBackend::MySql] {
            assert!(batch(&query, &page, backend).then.is_none());
        }
    }
}
