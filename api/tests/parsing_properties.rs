//! Property-based fuzzing of request-body and query parsing: whatever the bytes, parsing
//! never panics, answers only 400 or 422, and what it accepts holds the API's rules.
//!
//! CI runs the default number of cases; run longer by hand with
//! `PROPTEST_CASES=200000 cargo test --release -p api --test parsing_properties`.

use api::{
    http::{
        error::ApiError,
        input::{parse_id, parse_json_body},
        pagination::ListQuery,
    },
    routes::{
        notes::{MAX_BULK_ITEMS, MAX_TEXT_CHARS, NewNote, NewNotes, NotePatch},
        users::NewUser,
    },
    search::{
        Query, QueryError, SNIPPET_CHARS,
        sql::{self, Page},
    },
};
use proptest::prelude::*;
use sea_orm::{DbBackend, Value as SqlValue};
use serde_json::{Value, json};

/// Arbitrary JSON values, with strings that like to be long, empty, or odd.
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        any::<String>(),
        Just(String::new()),
        "\\PC{0,20}",
        Just("\u{0}".to_owned()),
        Just("x".repeat(MAX_TEXT_CHARS)),
        Just("é".repeat(MAX_TEXT_CHARS + 1)),
        "[a-zA-Z0-9._%+-]{1,10}@[a-z]{1,8}\\.[a-z]{2,4}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let key = prop_oneof![
            Just("text".to_owned()),
            Just("completed".to_owned()),
            Just("email".to_owned()),
            Just("password".to_owned()),
            Just("name".to_owned()),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies: raw bytes, or serialised arbitrary JSON (sometimes cut short).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let bytes = v.to_string().into_bytes();
            let end = cut.index(bytes.len() + 1);
            bytes[..end].to_vec()
        }),
    ]
}

fn is_client_error<T>(result: &Result<T, ApiError>) -> bool {
    match result {
        Ok(_) => true,
        Err(ApiError::BadRequest(_)) => true,
        Err(ApiError::Validation(errors)) => !errors.is_empty(),
        Err(_) => false,
    }
}

fn valid_text(text: &str) -> bool {
    let chars = text.chars().count();
    (1..=MAX_TEXT_CHARS).contains(&chars) && !text.contains('\0')
}

proptest! {
    #[test]
    fn note_bodies_parse_to_valid_notes_or_client_errors(bytes in body()) {
        let result = parse_json_body::<NewNote>(&bytes);
        prop_assert!(is_client_error(&result));
        if let Ok(note) = result {
            prop_assert!(valid_text(&note.text));
        }
    }

    #[test]
    fn bulk_bodies_hold_1_to_5000_valid_notes(bytes in body()) {
        let result = parse_json_body::<NewNotes>(&bytes);
        prop_assert!(is_client_error(&result));
        if let Ok(NewNotes(notes)) = result {
            prop_assert!((1..=MAX_BULK_ITEMS).contains(&notes.len()));
            prop_assert!(notes.iter().all(|n| valid_text(&n.text)));
        }
    }

    #[test]
    fn patches_hold_only_valid_changes(bytes in body()) {
        let result = parse_json_body::<NotePatch>(&bytes);
        prop_assert!(is_client_error(&result));
        if let Ok(patch) = result {
            prop_assert!(patch.text.as_deref().is_none_or(valid_text));
        }
    }

    #[test]
    fn sign_ups_hold_normalised_addresses(bytes in body()) {
        let result = parse_json_body::<NewUser>(&bytes);
        prop_assert!(is_client_error(&result));
        if let Ok(user) = result {
            prop_assert_eq!(user.email.clone(), user.email.trim().to_lowercase());
            prop_assert!(user.email.contains('@') && user.email.chars().count() <= 254);
            prop_assert!(user.name.as_deref().is_none_or(|n| n.chars().count() <= 200));
        }
    }

    #[test]
    fn object_bodies_with_known_keys_never_panic(value in json_value()) {
        let bytes = value.to_string().into_bytes();
        prop_assert!(is_client_error(&parse_json_body::<NewNote>(&bytes)));
        prop_assert!(is_client_error(&parse_json_body::<NewUser>(&bytes)));
    }

    #[test]
    fn query_strings_parse_to_bounded_pages_or_client_errors(query in "\\PC{0,80}") {
        match ListQuery::parse(&query) {
            Ok(page) => {
                prop_assert!((1..=1000).contains(&page.limit));
                prop_assert!(page.after.is_none_or(|a| a >= 0));
            }
            Err(error) => prop_assert!(matches!(
                error,
                ApiError::BadRequest(_) | ApiError::Validation(_)
            )),
        }
    }

    #[test]
    fn path_ids_are_positive_or_not_found(raw in "\\PC{0,24}") {
        match parse_id(&raw) {
            Ok(id) => prop_assert!(id > 0 && raw.bytes().all(|b| b.is_ascii_digit())),
            Err(error) => prop_assert!(matches!(error, ApiError::NotFound)),
        }
    }

    #[test]
    fn search_queries_reach_the_database_as_words_only(query in search_query()) {
        match Query::parse(&query) {
            Ok(parsed) => {
                for after in [None, Some((2, 3)), Some((4, 9))] {
                    let page = Page { owner: 1, completed: None, after, limit: 20, widen: false };
                    for backend in [DbBackend::Sqlite, DbBackend::Postgres, DbBackend::MySql] {
                        let batch = sql::batch(&parsed, &page, backend);
                        for value in batch.statement.values.unwrap().0 {
                            if let SqlValue::String(Some(text)) = value {
                                // The translations' own wrappers around the query's words:
                                // SQLite's owner and column, MariaDB's rank pattern.
                                let text = text
                                    .strip_prefix("user_id:\"1\" AND text:(")
                                    .and_then(|inner| inner.strip_suffix(')'))
                                    .or_else(|| {
                                        text.strip_prefix("(?<![^ ])(?:")
                                            .and_then(|inner| inner.strip_suffix(")(?![^ ])"))
                                    })
                                    .unwrap_or(&text)
                                    .replace("[^ ]*", "*")
                                    .replace("[^\\x01]+", "");
                                // Only words, each operator the translation's own.
                                prop_assert!(
                                    text.chars().all(|c| c.is_alphanumeric() || " '\"*:&!+-()|~".contains(c)),
                                    "{text:?} from {query:?}"
                                );
                            }
                        }
                    }
                }
            }
            Err(error) => prop_assert!(
                query.trim().is_empty() || query.chars().count() > 256 || error == QueryError::NothingToFind,
                "{error:?} for {query:?}"
            ),
        }
    }

    #[test]
    fn search_results_mark_only_matched_words(query in search_query(), text in "\\PC{0,400}") {
        if let Ok(parsed) = Query::parse(&query)
            && let Some(found) = parsed.find(&text)
        {
            let snippet: Vec<char> = found.snippet.chars().collect();
            prop_assert!(snippet.len() <= SNIPPET_CHARS);
            prop_assert!(text.contains(found.snippet.as_str()));
            for [start, end] in found.matches {
                prop_assert!(start < end && end <= snippet.len());
                prop_assert!(snippet[start..end].iter().all(|c| c.is_alphanumeric()));
            }
        }
    }
}

/// Search queries: random text, and text made of every backend's operators and words.
fn search_query() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z]{1,8}",
        "[a-z]{3,6}\\*",
        Just("\"".to_owned()),
        Just("-".to_owned()),
        Just("*".to_owned()),
        prop::sample::select(vec![
            "NEAR(",
            "AND",
            "OR",
            "NOT",
            ":",
            "^",
            "&",
            "|",
            "!",
            "<->",
            "+",
            "~",
            "<",
            ">",
            "@",
            "(",
            ")",
            "'",
            "\u{0}",
            "é",
            "😀",
            "\u{301}",
            "عربي",
            "; DROP TABLE notes; --",
        ])
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        "\\PC{0,300}",
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.join(" ")),
    ]
}
