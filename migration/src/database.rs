//! Connection settings shared by the server, the CLI and the tests.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use url::Url;

/// The embedded default: a SQLite file under `./data/`, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/notes.db?mode=rwc";

/// `url` with any password replaced by `***`, safe to print or log.
///
/// A value that does not parse as a URL is replaced whole: it may hold anything.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// `text` with every occurrence of `url`'s password replaced by `***` (driver messages may
/// quote the URL they were given).
pub fn scrub(text: &str, url: &str) -> String {
    match Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(password) if !password.is_empty() => text.replace(&password, "***"),
        _ => text.to_owned(),
    }
}

/// For a `sqlite:` URL naming a file, create the file's directory so `mode=rwc` can create it.
pub fn ensure_sqlite_dir(url: &str) -> std::io::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(());
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(());
    }
    match std::path::Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Connect with short timeouts, for one-shot tools (the CLI, test set-up).
pub async fn connect_for_tool(url: &str) -> Result<DatabaseConnection, DbErr> {
    ensure_sqlite_dir(url).map_err(|e| DbErr::Custom(format!("cannot create directory: {e}")))?;
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(2)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password() {
        let shown = redact("postgres://app:s3cret@db.internal:5432/notes");
        assert_eq!(shown, "postgres://app:***@db.internal:5432/notes");
    }

    #[test]
    fn redact_keeps_urls_without_password() {
        assert_eq!(
            redact("sqlite://data/notes.db?mode=rwc"),
            "sqlite://data/notes.db?mode=rwc"
        );
    }

    #[test]
    fn redact_replaces_unparseable_values_whole() {
        assert_eq!(redact("not a url s3cret"), "<unparseable URL>");
    }

    #[test]
    fn scrub_removes_the_password_from_messages() {
        let url = "mysql://root:hunter22@127.0.0.1/x";
        assert_eq!(
            scrub("failed: hunter22 rejected", url),
            "failed: *** rejected"
        );
    }

    #[test]
    fn sqlite_directory_is_created() {
        let dir = std::env::temp_dir().join(format!("notes-dir-{}", std::process::id()));
        let url = format!("sqlite://{}/sub/notes.db?mode=rwc", dir.display());
        ensure_sqlite_dir(&url).unwrap();
        assert!(dir.join("sub").is_dir());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
