//! A [`Query`] as one `SELECT` per backend: the caller's notes that the backend's full-text
//! index finds for the query's words, each with its rank, best first, one page at a time.
//!
//! | operator | PostgreSQL (`to_tsquery('simple', …)`) | SQLite FTS5 (`MATCH`) | MariaDB (`AGAINST (… IN BOOLEAN MODE)`) |
//! |---|---|---|---|
//! | `word` | `'word'` | `"word"` | `+word` |
//! | `word*` | `'word':*` | `"word"*` | `+word*` |
//! | `"a phrase"` | each word, `&` | each word | `+each +word` |
//! | `-word`, `-word*` | `!'word'`, `!'word':*` | `NOT "word"`, `NOT "word"*` | `-word`, `-word*` |
//!
//! Only words made of letters and digits reach the index's syntax ([`super::words`]), so no
//! user text is read as an operator. A phrase asks the index for its words; their order
//! and adjacency are checked on the text ([`Query::find`]).
//!
//! The rank is the number of times the query's words occur in the text (as substrings of its
//! lower-cased text): the same integer on every backend, independent of other users' notes
//! (a score built on the whole table's statistics would vary with, and hint at, what others
//! wrote), and exact in a page cursor. Ties go to the newest note.

use sea_orm::{DbBackend, Statement, Value};

use super::Query;

/// Which page of the caller's matching notes to read.
pub struct Page {
    pub owner: i64,
    pub completed: Option<bool>,
    /// The rank and id of the last note of the previous page.
    pub after: Option<(i64, i64)>,
    pub limit: u64,
}

/// The `SELECT` of `page` of the notes matching `query`: the columns of
/// [`entity::note::Listed`], in its order, then the rank.
pub fn statement(query: &Query, page: &Page, backend: DbBackend) -> Statement {
    // Bound in the order the placeholders appear: `?` placeholders are positional.
    let mut sql = Sql::new(backend);
    let rank = rank(&mut sql, query);
    let owner = sql.bind(page.owner);
    let matched = match backend {
        DbBackend::Postgres => format!(
            "search @@ to_tsquery('simple', {})",
            sql.bind(POSTGRES.spell(query))
        ),
        DbBackend::MySql => format!(
            "MATCH (search_text) AGAINST ({} IN BOOLEAN MODE)",
            sql.bind(MARIADB.spell(query))
        ),
        // The owner's entries only (`notes_search` indexes `user_id` too): FTS5 steps through
        // them and skips ahead in a common word's list of everyone's notes.
        _ => format!(
            "id IN (SELECT rowid FROM notes_search WHERE notes_search MATCH {})",
            sql.bind(format!(
                "user_id:\"{}\" AND text:({})",
                page.owner,
                SQLITE.spell(query)
            ))
        ),
    };
    let completed = match page.completed {
        Some(completed) => format!(" AND completed = {}", sql.bind(completed)),
        None => String::new(),
    };
    let after = match page.after {
        Some((rank, id)) => format!(" WHERE (rank, id) < ({}, {})", sql.bind(rank), sql.bind(id)),
        None => String::new(),
    };
    let limit = sql.bind(i64::try_from(page.limit).unwrap_or(i64::MAX));
    sql.finish(format!(
        "SELECT id, user_id, text, completed, created_at, updated_at, rank FROM \
         (SELECT id, user_id, text, completed, created_at, updated_at, {rank} AS rank \
         FROM notes WHERE user_id = {owner} AND {matched}{completed}) AS found{after} \
         ORDER BY rank DESC, id DESC LIMIT {limit}"
    ))
}

/// The most words the rank counts: each is a string replacement over every candidate's text,
/// and a long query of common words must not cost the database a scan per word.
const MAX_RANKED_WORDS: usize = 8;

/// `Σ (length(t) - length(replace(t, word, ''))) / length(word)` over the query's (first
/// [`MAX_RANKED_WORDS`] distinct) words, with `t` the lower-cased text: how often they occur.
fn rank(sql: &mut Sql, query: &Query) -> String {
    let (length, divide) = match sql.backend {
        DbBackend::MySql => ("CHAR_LENGTH", "DIV"),
        DbBackend::Postgres => ("CHAR_LENGTH", "/"),
        _ => ("LENGTH", "/"),
    };
    let mut words: Vec<&str> = Vec::new();
    for (word, _) in query.required_words() {
        if !words.contains(&word) && words.len() < MAX_RANKED_WORDS {
            words.push(word);
        }
    }
    let counts: Vec<String> = words
        .into_iter()
        .map(|word| {
            let chars = word.chars().count() as i64;
            format!(
                "(({length}(LOWER(text)) - {length}(REPLACE(LOWER(text), {}, ''))) {divide} {})",
                sql.bind(word.to_owned()),
                sql.bind(chars)
            )
        })
        .collect();
    format!("({})", counts.join(" + "))
}

/// How one engine spells the query's words: each word between `quote`s, a prefix followed by
/// `prefix`, a required word after `required`, an excluded one after `excluded`, joined by
/// `separator`.
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
    fn spell(&self, query: &Query) -> String {
        let term = |mark: &str, (word, prefix): (&str, bool)| {
            let prefix = if prefix { self.prefix } else { "" };
            format!("{mark}{quote}{word}{quote}{prefix}", quote = self.quote)
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
            POSTGRES.spell(&query),
            "'apple' & 'big' & 'red' & 'fru':* & !'pear'"
        );
        assert_eq!(
            SQLITE.spell(&query),
            r#""apple" "big" "red" "fru"* NOT "pear""#
        );
        assert_eq!(MARIADB.spell(&query), "+apple +big +red +fru* -pear");
    }

    #[test]
    fn pages_continue_after_the_last_rank_and_id() {
        let query = Query::parse("apple").unwrap();
        let page = Page {
            owner: 7,
            completed: Some(true),
            after: Some((3, 42)),
            limit: 20,
        };
        let statement = statement(&query, &page, DbBackend::Postgres);
        assert!(
            statement.sql.contains("WHERE (rank, id) < ($6, $7)"),
            "{}",
            statement.sql
        );
        assert!(
            statement
                .sql
                .contains("REPLACE(LOWER(text), $1, ''))) / $2)")
        );
        assert!(
            statement
                .sql
                .contains("WHERE user_id = $3 AND search @@ to_tsquery('simple', $4)")
        );
        assert!(
            statement
                .sql
                .ends_with("ORDER BY rank DESC, id DESC LIMIT $8")
        );
        assert_eq!(statement.values.unwrap().0.len(), 8);
    }
}
