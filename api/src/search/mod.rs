//! Finding notes: the query language, parsed here once and never handed to a database as
//! text of its own syntax.
//!
//! Each backend's full-text index finds the candidates ([`sql`]): every note that can match,
//! and possibly a few more (MariaDB's accent-insensitive collation, a phrase's words in
//! another order). [`Query::find`] then decides, on the note's text, with one tokenizer for
//! every backend — so the three give the same answers — and marks what matched for the
//! snippet. The rules, in one place:
//!
//! - A word is a maximal run of letters and digits ([`char::is_alphanumeric`]), compared in
//!   lower case: punctuation (`@`, `.`, `_`, `'`, …) separates words.
//! - Words shorter than [`MIN_WORD_CHARS`] are not indexed (MariaDB's
//!   `innodb_ft_min_token_size` is 3): outside a phrase they are ignored; inside one they
//!   must still be there, checked on the text.
//! - `word` must occur, `word*` some word must start with it, `"a phrase"` its words must
//!   occur adjacent and in order, `-term` must not occur.

pub mod sql;

use std::fmt;

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// The shortest word the indexes hold, in characters.
pub const MIN_WORD_CHARS: usize = 3;
/// The longest word looked up in the indexes: MariaDB's holds a word after its owner
/// (`7xword`, up to 20 characters for the owner) within `innodb_ft_max_token_size` (84). A
/// longer word is checked on the text only.
pub const MAX_INDEXED_WORD_CHARS: usize = 64;
/// The longest snippet, in characters.
pub const SNIPPET_CHARS: usize = 200;
/// How many characters of context a snippet shows before its first match, at most.
const CONTEXT_BEFORE: usize = 60;

/// One thing a note must (or must not) contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// This word.
    Word(String),
    /// A word starting with this.
    Prefix(String),
    /// These words, adjacent and in this order (two or more).
    Phrase(Vec<String>),
}

impl Term {
    /// The words of this term an index can look up: at least [`MIN_WORD_CHARS`] and at most
    /// [`MAX_INDEXED_WORD_CHARS`] long.
    fn indexed_words(&self) -> Vec<&str> {
        let words: Vec<&str> = match self {
            Self::Word(word) | Self::Prefix(word) => vec![word],
            Self::Phrase(words) => words.iter().map(String::as_str).collect(),
        };
        words.into_iter().filter(|word| indexable(word)).collect()
    }

    /// Where this term occurs among `words`: the index of its first and last word, for each
    /// occurrence.
    fn occurrences(&self, words: &[Word]) -> Vec<(usize, usize)> {
        match self {
            Self::Word(word) => positions(words, |w| w.text == *word),
            Self::Prefix(prefix) => positions(words, |w| w.text.starts_with(prefix.as_str())),
            Self::Phrase(phrase) => words
                .windows(phrase.len())
                .enumerate()
                .filter(|(_, window)| window.iter().zip(phrase).all(|(w, p)| w.text == *p))
                .map(|(i, _)| (i, i + phrase.len() - 1))
                .collect(),
        }
    }
}

fn positions(words: &[Word], hit: impl Fn(&Word) -> bool) -> Vec<(usize, usize)> {
    (0..words.len())
        .filter(|&i| hit(&words[i]))
        .map(|i| (i, i))
        .collect()
}

fn indexable(word: &str) -> bool {
    (MIN_WORD_CHARS..=MAX_INDEXED_WORD_CHARS).contains(&word.chars().count())
}

/// A parsed query: what a note must contain, and what it must not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub include: Vec<Term>,
    pub exclude: Vec<Term>,
}

/// Why a query was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    Empty,
    TooLong,
    /// Only exclusions, punctuation or words too short to look up.
    NothingToFind,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "must not be empty",
            Self::TooLong => "must be at most 256 characters",
            Self::NothingToFind => {
                "has nothing to look for: give a word of at least 3 letters or digits that notes must contain"
            }
        })
    }
}

impl Query {
    /// Parse `raw`: words, `"phrases"` (an unclosed quote runs to the end), `-term` and
    /// `word*`. A word holding punctuation (`bob@example.org`) is the phrase of its words.
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        if raw.chars().count() > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong);
        }
        if raw.trim().is_empty() {
            return Err(QueryError::Empty);
        }
        let mut query = Self {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        let mut rest = raw;
        while let Some((negated, piece, after)) = next_piece(rest) {
            rest = after;
            let Some(term) = piece.term() else { continue };
            if negated {
                query.exclude.push(term);
            } else {
                query.include.push(term);
            }
        }
        if query
            .include
            .iter()
            .all(|term| term.indexed_words().is_empty())
        {
            return Err(QueryError::NothingToFind);
        }
        Ok(query)
    }

    /// The words an index must find in a candidate (each of them, for the candidate to match).
    pub fn required_words(&self) -> Vec<(&str, bool)> {
        self.include
            .iter()
            .flat_map(|term| {
                let prefix = matches!(term, Term::Prefix(_));
                term.indexed_words().into_iter().map(move |w| (w, prefix))
            })
            .collect()
    }

    /// The words an index may leave out (a note holding one never matches): excluded words
    /// and prefixes, not phrases (a phrase excludes only its words side by side).
    pub fn excluded_words(&self) -> Vec<(&str, bool)> {
        self.exclude
            .iter()
            .filter_map(|term| match term {
                Term::Word(word) if indexable(word) => Some((word.as_str(), false)),
                Term::Prefix(prefix) if indexable(prefix) => Some((prefix.as_str(), true)),
                _ => None,
            })
            .collect()
    }

    /// `text` as a search result, when it matches: its snippet and the matched words in it.
    pub fn find(&self, text: &str) -> Option<Found> {
        let words = words(text);
        let mut shown = Vec::new();
        for term in &self.include {
            let occurrences = term.occurrences(&words);
            if occurrences.is_empty() {
                return None;
            }
            for (first, last) in occurrences {
                shown.extend(words[first..=last].iter().map(|w| (w.start, w.end)));
            }
        }
        if self
            .exclude
            .iter()
            .any(|term| !term.occurrences(&words).is_empty())
        {
            return None;
        }
        shown.sort_unstable();
        shown.dedup();
        Some(Found::around(text, &shown))
    }
}

/// A matching note's excerpt: at most [`SNIPPET_CHARS`] characters around the first match,
/// and each matched word in it as `[start, end)` character offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub snippet: String,
    pub matches: Vec<[usize; 2]>,
}

impl Found {
    /// The excerpt of `text` around `spans` (character offsets into `text`, sorted).
    fn around(text: &str, spans: &[(usize, usize)]) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let first = spans.first().map_or(0, |&(start, _)| start);
        let mut start = if chars.len() <= SNIPPET_CHARS {
            0
        } else {
            first
                .saturating_sub(CONTEXT_BEFORE)
                .min(chars.len() - SNIPPET_CHARS)
        };
        // Begin at a word's start rather than in the middle of one.
        while start > 0 && start < first && chars[start - 1].is_alphanumeric() {
            start += 1;
        }
        let end = (start + SNIPPET_CHARS).min(chars.len());
        Self {
            snippet: chars[start..end].iter().collect(),
            matches: spans
                .iter()
                .filter(|&&(s, e)| s >= start && e <= end)
                .map(|&(s, e)| [s - start, e - start])
                .collect(),
        }
    }
}

/// One word of a text: lower-cased, and where it is, in characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// The words of `text`, in order.
pub fn words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut current: Option<Word> = None;
    for (i, c) in text.chars().enumerate() {
        if c.is_alphanumeric() {
            let word = current.get_or_insert_with(|| Word {
                text: String::new(),
                start: i,
                end: i,
            });
            word.text.extend(c.to_lowercase());
            word.end = i + 1;
        } else if let Some(word) = current.take() {
            words.push(word);
        }
    }
    words.extend(current);
    words
}

/// One piece of a query before it becomes a term: a quoted phrase, or a bare word that may
/// end in `*`.
enum Piece<'a> {
    Quoted(&'a str),
    Bare(&'a str),
}

impl Piece<'_> {
    fn term(&self) -> Option<Term> {
        let (text, prefix) = match *self {
            Self::Quoted(text) => (text, false),
            Self::Bare(text) => match text.strip_suffix('*') {
                Some(stem) => (stem.trim_end_matches('*'), true),
                None => (text, false),
            },
        };
        let mut words: Vec<String> = words(text).into_iter().map(|w| w.text).collect();
        match words.len() {
            0 => None,
            1 if words[0].chars().count() < MIN_WORD_CHARS => None,
            1 if prefix => Some(Term::Prefix(words.remove(0))),
            1 => Some(Term::Word(words.remove(0))),
            _ => Some(Term::Phrase(words)),
        }
    }
}

/// The next piece of `query` after blanks: whether it is negated (`-`), the piece, and the
/// rest of the query.
fn next_piece(query: &str) -> Option<(bool, Piece<'_>, &str)> {
    let query = query.trim_start();
    if query.is_empty() {
        return None;
    }
    let (negated, query) = match query.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, query),
    };
    if let Some(quoted) = query.strip_prefix('"') {
        let (phrase, rest) = quoted.split_once('"').unwrap_or((quoted, ""));
        return Some((negated, Piece::Quoted(phrase), rest));
    }
    let end = query
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(query.len());
    Some((negated, Piece::Bare(&query[..end]), &query[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(w: &str) -> Term {
        Term::Word(w.into())
    }

    fn phrase(words: &[&str]) -> Term {
        Term::Phrase(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn parses_each_operator() {
        let query = Query::parse(r#"Apple "big red" -pear fru* -"old tree""#).unwrap();
        assert_eq!(
            query.include,
            [
                word("apple"),
                phrase(&["big", "red"]),
                Term::Prefix("fru".into())
            ]
        );
        assert_eq!(query.exclude, [word("pear"), phrase(&["old", "tree"])]);
    }

    #[test]
    fn punctuation_separates_words() {
        let query = Query::parse("bob@example.org foo_bar").unwrap();
        assert_eq!(
            query.include,
            [phrase(&["bob", "example", "org"]), phrase(&["foo", "bar"])]
        );
        let words: Vec<String> = words("don't, Foo_Bar!")
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(words, ["don", "t", "foo", "bar"]);
    }

    #[test]
    fn refuses_queries_with_nothing_to_find() {
        for (raw, error) in [
            ("", QueryError::Empty),
            ("   ", QueryError::Empty),
            ("-apple", QueryError::NothingToFind),
            ("*", QueryError::NothingToFind),
            ("-", QueryError::NothingToFind),
            ("\"", QueryError::NothingToFind),
            ("!!! ???", QueryError::NothingToFind),
            ("to be", QueryError::NothingToFind),
            ("\0", QueryError::NothingToFind),
        ] {
            assert_eq!(Query::parse(raw), Err(error), "{raw:?}");
        }
        assert_eq!(Query::parse(&"a".repeat(257)), Err(QueryError::TooLong));
        assert!(Query::parse(&"café ".repeat(51)).is_ok());
        assert_eq!(
            Query::parse(&"é".repeat(85)),
            Err(QueryError::NothingToFind),
            "longer than any index holds"
        );
    }

    #[test]
    fn finds_and_marks_words() {
        let query = Query::parse("apple").unwrap();
        let found = query.find("An APPLE, an apple-pie").unwrap();
        assert_eq!(found.snippet, "An APPLE, an apple-pie");
        assert_eq!(found.matches, [[3, 8], [13, 18]]);
        assert!(query.find("pineapple").is_none());
    }

    #[test]
    fn phrases_prefixes_and_exclusions() {
        let query = Query::parse(r#""to be" runn* -never"#).unwrap();
        assert!(query.find("to be running").is_some());
        assert!(query.find("be to running").is_none());
        assert!(query.find("to be running, never").is_none());
        assert!(query.find("to be").is_none());
    }

    #[test]
    fn offsets_count_characters() {
        let query = Query::parse("café").unwrap();
        let found = query.find("😀 déjà vu au Café").unwrap();
        let chars: Vec<char> = found.snippet.chars().collect();
        let [start, end] = found.matches[0];
        assert_eq!(chars[start..end].iter().collect::<String>(), "Café");
    }

    #[test]
    fn snippets_are_short_and_start_at_a_word() {
        let text = format!("{} needle {}", "hay ".repeat(100), "straw ".repeat(100));
        let found = Query::parse("needle").unwrap().find(&text).unwrap();
        assert!(found.snippet.chars().count() <= SNIPPET_CHARS);
        assert!(found.snippet.starts_with("hay"), "{}", found.snippet);
        let [start, end] = found.matches[0];
        let chars: Vec<char> = found.snippet.chars().collect();
        assert_eq!(chars[start..end].iter().collect::<String>(), "needle");
    }
}
