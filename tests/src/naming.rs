//! Test database names: `test_<name>_<pid>_<nonce>_<kind>`.
//!
//! The process id tells a live run's database from a leftover of a run that was killed.

use std::path::Path;

/// Derive the `<name>` part from a configured URL: its database name, reduced to
/// `[a-z0-9]` and at most 16 characters (`notes` when there is none).
pub fn base_name(url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or_default();
    let after_scheme = without_query
        .split_once("://")
        .map_or(without_query, |(_, rest)| rest);
    // `host/db` for servers, a file path for SQLite; no `/` means no database name.
    let path = after_scheme.split_once('/').map_or("", |(_, path)| path);
    let stem = path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default();
    let cleaned: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(16)
        .collect();
    if cleaned.is_empty() {
        "notes".to_owned()
    } else {
        cleaned
    }
}

/// `test_<base>_<pid>_<nonce>_<kind>`.
pub fn database_name(base: &str, pid: u32, nonce: &str, kind: &str) -> String {
    format!("test_{base}_{pid}_{nonce}_{kind}")
}

/// The prefix every test database derived from `base` starts with.
pub fn prefix(base: &str) -> String {
    format!("test_{base}_")
}

/// The process that owns a test database, from its name.
pub fn parse_owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.rsplit('_');
    let _kind = parts.next()?;
    let _nonce = parts.next()?;
    parts.next()?.parse().ok()
}

/// A test database whose owning process is gone (or whose name has no owner).
pub fn is_leftover(name: &str) -> bool {
    match parse_owner_pid(name) {
        Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_name_comes_from_the_database_name() {
        assert_eq!(base_name("postgres://u@h:5432/Notes_App"), "notesapp");
        assert_eq!(
            base_name("mysql://root@127.0.0.1:3306/notes?ssl=false"),
            "notes"
        );
        assert_eq!(base_name("sqlite://data/notes.db?mode=rwc"), "notes");
        assert_eq!(base_name("mysql://root@127.0.0.1:3306"), "notes");
    }

    #[test]
    fn owner_pid_round_trips_through_the_name() {
        let name = database_name("notes", 4242, "a1b2c3", "r");
        assert_eq!(name, "test_notes_4242_a1b2c3_r");
        assert_eq!(parse_owner_pid(&name), Some(4242));
        assert!(!is_leftover(&database_name(
            "notes",
            std::process::id(),
            "x",
            "r"
        )));
        assert!(is_leftover(&database_name("notes", u32::MAX - 1, "x", "r")));
    }
}
