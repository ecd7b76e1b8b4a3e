//! Connection settings shared by the server, the CLI and the tests.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use url::Url;

use crate::hosts::Hosts;

/// The embedded default: a SQLite file under `./data/`, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/notes.db?mode=rwc";

/// Query parameters that carry a secret: the drivers accept a password there too
/// (`postgres://app@db/notes?password=…`).
const SECRET_PARAMS: [&str; 3] = ["password", "pass", "sslpassword"];

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}

/// `url` with any password — in its user-info or in a `?password=` parameter — replaced by
/// `***`, safe to print or log.
///
/// A value that does not parse as a URL is replaced whole: it may hold anything.
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        // A list of hosts (`h1:5432,h2:5433`) is not a URL to the `url` crate; its secrets are
        // those of its first host's URL.
        if let Ok(Some(_)) = Hosts::parse(url) {
            return scrub(url, url);
        }
        return "<unparseable URL>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(name, _)| is_secret_param(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_param(&name) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// `text` percent-decoded.
fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map_or_else(|| text.to_owned(), |(_, value)| value.into_owned())
}

/// Every secret `url` carries: its user-info password and its `?password=` values, both as
/// written (percent-encoded) and decoded (a driver may quote either).
fn secrets(url: &str) -> Vec<String> {
    let Ok(parsed) = Url::parse(url) else {
        return match Hosts::parse(url) {
            Ok(Some(hosts)) => secrets(&hosts.url_for(0)),
            _ => Vec::new(),
        };
    };
    let mut written: Vec<&str> = parsed.password().into_iter().collect();
    for pair in parsed.query().unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_secret_param(&decode(name)) {
            written.push(value);
        }
    }
    let mut secrets: Vec<String> = written
        .into_iter()
        .flat_map(|secret| [secret.to_owned(), decode(secret)])
        .filter(|secret| !secret.is_empty())
        .collect();
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

/// `text` with every occurrence of `url`'s passwords replaced by `***` (driver messages may
/// quote the URL they were given).
pub fn scrub(text: &str, url: &str) -> String {
    secrets(url)
        .iter()
        .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
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

/// How long a one-shot tool waits for a connection (and for each host of a list).
const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect with short timeouts, for one-shot tools (the CLI, test set-up). A PostgreSQL URL
/// with several hosts or a `target_session_attrs` connects to the first host that fits, as
/// libpq does ([`Hosts::pick`]).
pub async fn connect_for_tool(url: &str) -> Result<DatabaseConnection, DbErr> {
    ensure_sqlite_dir(url).map_err(|e| DbErr::Custom(format!("cannot create directory: {e}")))?;
    let url = match Hosts::parse(url).map_err(DbErr::Custom)? {
        Some(hosts) => {
            let (host, _) = hosts.pick(TOOL_TIMEOUT).await.map_err(DbErr::Custom)?;
            hosts.url_for(host)
        }
        None => url.to_owned(),
    };
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(2)
        .min_connections(0)
        .connect_timeout(TOOL_TIMEOUT)
        .acquire_timeout(TOOL_TIMEOUT)
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
    fn redact_hides_a_password_in_the_query_string() {
        let shown = redact("postgres://app@db.internal/notes?sslmode=require&password=s3cret");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert!(shown.contains("password=***"), "{shown}");
        let shown = redact("mysql://root@127.0.0.1/x?PASSWORD=hunter22%21");
        assert!(!shown.contains("hunter22"), "{shown}");
    }

    #[test]
    fn scrub_removes_a_query_string_password_from_messages() {
        let url = "postgres://app@db/notes?password=hunter%2122";
        assert_eq!(
            scrub("auth failed for hunter!22 (hunter%2122)", url),
            "auth failed for *** (***)"
        );
    }

    #[test]
    fn a_list_of_hosts_is_redacted_and_scrubbed() {
        let url =
            "postgres://u:s3cretpw@127.0.0.1:1,127.0.0.1:2/db?target_session_attrs=read-write";
        assert_eq!(
            redact(url),
            "postgres://u:***@127.0.0.1:1,127.0.0.1:2/db?target_session_attrs=read-write"
        );
        assert_eq!(
            scrub(
                "The connection string 'postgres://u:s3cretpw@127.0.0.1:1' failed",
                url
            ),
            "The connection string 'postgres://u:***@127.0.0.1:1' failed"
        );
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
