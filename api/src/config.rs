//! Settings: every variable README.md lists, parsed once at start into its type.
//!
//! `.env` is read if present and the real environment wins over it. A missing or malformed
//! value is a [`ConfigError`] that names the variable and what was expected; `main` prints it
//! on one line and exits with status 2 before anything binds.

use std::{collections::HashMap, fmt, net::IpAddr, time::Duration};

use migration::{
    database::{DEFAULT_DATABASE_URL, redact},
    hosts::Hosts,
};
use url::Url;

/// The database the server talks to, from the URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// A database URL. Its `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    backend: Backend,
    /// PostgreSQL: the hosts listed, when there are several or a `target_session_attrs`.
    hosts: Option<Hosts>,
}

impl DatabaseUrl {
    /// Validate a `sqlite:`, `postgres://` or `mysql://` URL.
    pub fn parse(value: &str) -> Result<Self, String> {
        let listed = Hosts::parse(value).map_err(|problem| {
            format!("a PostgreSQL URL listing its hosts the way libpq does, but {problem}")
        })?;
        if let Some(hosts) = listed {
            return Ok(Self {
                url: value.to_owned(),
                backend: Backend::Postgres,
                hosts: Some(hosts),
            });
        }
        let parsed = Url::parse(value).map_err(|_| "a valid URL".to_owned())?;
        let backend = match parsed.scheme() {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            "mysql" | "mariadb" => Backend::MySql,
            _ => return Err("a sqlite:, postgres:// or mysql:// URL".to_owned()),
        };
        if backend != Backend::Sqlite && parsed.host_str().is_none_or(str::is_empty) {
            return Err("a URL with a host name".to_owned());
        }
        // What the driver would refuse at connect time (an unknown `sslmode`, a bad port…)
        // is a configuration error now, not five connection attempts later.
        driver_accepts(backend, value).map_err(|error| {
            format!(
                "a URL its driver accepts ({})",
                migration::database::scrub(&error.to_string(), value)
            )
        })?;
        Ok(Self {
            url: value.to_owned(),
            backend,
            hosts: None,
        })
    }

    /// The hosts a PostgreSQL URL lists, when it lists several or a `target_session_attrs`.
    pub fn hosts(&self) -> Option<&Hosts> {
        self.hosts.as_ref()
    }

    /// The URL itself, with its password: for connecting only, never for printing.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// Which database this URL points at.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Parse `url` as the backend's driver will when it connects.
fn driver_accepts(backend: Backend, url: &str) -> Result<(), sea_orm::sqlx::Error> {
    use sea_orm::sqlx::{
        mysql::MySqlConnectOptions, postgres::PgConnectOptions, sqlite::SqliteConnectOptions,
    };
    use std::str::FromStr;
    match backend {
        Backend::Sqlite => SqliteConnectOptions::from_str(url).map(drop),
        Backend::Postgres => PgConnectOptions::from_str(url).map(drop),
        Backend::MySql => MySqlConnectOptions::from_str(url).map(drop),
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", redact(&self.url))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

/// Log output for people or for machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The server's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    /// A streaming replica of `database_url` for requests that only read
    /// (`DATABASE_READ_URL`, PostgreSQL only).
    pub database_read_url: Option<DatabaseUrl>,
    /// A replica lagging more than this is bypassed (`READ_MAX_LAG_MS`).
    pub read_max_lag: Duration,
    /// Cookies the server sets are `Secure` (`COOKIE_SECURE`).
    pub cookie_secure: bool,
    pub host: String,
    pub port: u16,
    pub auto_migrate: bool,
    pub db_pool_max: u32,
    pub db_pool_min: u32,
    pub db_acquire_timeout: Duration,
    pub body_limit_bytes: usize,
    pub shutdown_timeout: Duration,
    pub request_timeout: Duration,
    pub log_format: LogFormat,
    /// Mounts the test-only routes; read from the real environment only, never from `.env`.
    pub testing: bool,
    /// How long a sign-in token is accepted (`SESSION_TTL_S`).
    pub session_ttl: Duration,
    /// How long the answer to a request with an `Idempotency-Key` is kept for replays
    /// (`IDEMPOTENCY_TTL_S`).
    pub idempotency_ttl: Duration,
    /// Failed sign-ins per (client address, e-mail) within the throttle window before 429.
    pub signin_max_failures: u32,
    /// Peers whose `X-Forwarded-For` names the client (`FORWARDED_ALLOW_IPS`).
    pub forwarded_allow: ForwardedAllow,
    /// At most this many password hashes are computed at once (`HASH_CONCURRENCY`).
    pub hash_concurrency: u32,
    /// At most this many exports stream at once (`EXPORT_MAX_CONCURRENT`).
    pub export_max_concurrent: u32,
    /// An export whose client reads nothing for this long is cut (`EXPORT_IDLE_TIMEOUT_S`).
    pub export_idle_timeout: Duration,
    /// Where mail goes and what it links to.
    pub mail: MailSettings,
    /// How long a password-reset link works (`PASSWORD_RESET_TTL_S`).
    pub password_reset_ttl: Duration,
    /// How long note changes (tombstones included) are kept (`CHANGES_RETENTION_S`).
    pub changes_retention: Duration,
    /// Event streams one user may have open on an instance (`EVENTS_MAX_PER_USER`).
    pub events_max_per_user: u32,
    /// Event streams open at once on an instance (`EVENTS_MAX_CONCURRENT`).
    pub events_max_concurrent: u32,
}

/// Mail delivery: `SMTP_URL` (unset: `.eml` files under `MAIL_DIR`), `MAIL_FROM`, and
/// `PUBLIC_URL`, the address of the web page the mails link to.
#[derive(Clone)]
pub struct MailSettings {
    /// `smtp://host:port`, `smtp://…?tls=starttls` or `smtps://user:pass@host:465`; it may
    /// carry a password: never shown (`Debug` redacts it).
    pub smtp_url: Option<String>,
    pub dir: std::path::PathBuf,
    pub from: String,
    /// Without a trailing `/`.
    pub public_url: String,
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp_url", &self.smtp_url.as_deref().map(redact))
            .field("dir", &self.dir)
            .field("from", &self.from)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// The proxies trusted to say who the client is (`FORWARDED_ALLOW_IPS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardedAllow {
    /// Every peer (`*`).
    Any,
    /// These peers only (empty: none, the default).
    Peers(Vec<IpAddr>),
}

impl ForwardedAllow {
    /// Whether `peer` may name the client in `X-Forwarded-For`.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Peers(peers) => peers.contains(&peer),
        }
    }
}

/// A variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: expected {expected}, got {got}")]
pub struct ConfigError {
    pub var: &'static str,
    pub expected: String,
    pub got: String,
}

impl Settings {
    /// Load from the real environment, then `.env` (if present) for what the environment lacks.
    pub fn load() -> Result<Self, ConfigError> {
        let dotenv: HashMap<String, String> = dotenvy::dotenv_iter()
            .map(|iter| iter.filter_map(Result::ok).collect())
            .unwrap_or_default();
        Self::from_sources(|name| std::env::var(name).ok(), &dotenv)
    }

    /// Load from `env` first, falling back to `dotenv` entries — except `TESTING`, which
    /// only the real environment sets: a `.env` copied onto a production host must not mount
    /// the test routes.
    pub fn from_sources(
        env: impl Fn(&str) -> Option<String>,
        dotenv: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| {
            env(name).or_else(|| {
                (name != ENV_ONLY)
                    .then(|| dotenv.get(name).cloned())
                    .flatten()
            })
        })
    }

    /// Load from a single lookup function (tests use a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let database_url = vars.parse("DATABASE_URL", DEFAULT_DATABASE_URL, DatabaseUrl::parse)?;
        let (default_max, default_min) = match database_url.backend() {
            // WAL lets readers run beside the one writer; writes queue on IMMEDIATE.
            Backend::Sqlite => (8, 1),
            Backend::Postgres | Backend::MySql => (16, 2),
        };
        let db_pool_max = vars.number("DB_POOL_MAX", default_max, 1..=1000)?;
        let db_pool_min =
            vars.number("DB_POOL_MIN", default_min.min(db_pool_max), 0..=db_pool_max)?;
        let database_read_url = match lookup("DATABASE_READ_URL") {
            Some(value) if !value.trim().is_empty() => {
                Some(vars.parse("DATABASE_READ_URL", "", |value| {
                    let url = DatabaseUrl::parse(value)?;
                    if url.backend() == Backend::Postgres
                        && database_url.backend() == Backend::Postgres
                    {
                        Ok(url)
                    } else {
                        Err(
                            "a postgres:// URL of a streaming replica, with a PostgreSQL \
                             DATABASE_URL (read replicas are supported on PostgreSQL)"
                                .to_owned(),
                        )
                    }
                })?)
            }
            _ => None,
        };
        let host = vars.parse("HOST", "127.0.0.1", parse_host)?;
        let port = vars.number("PORT", 8000, 0..=65535)? as u16;
        let default_public_url = if host.contains(':') {
            format!("http://[{host}]:{port}")
        } else {
            format!("http://{host}:{port}")
        };
        Ok(Self {
            database_url,
            database_read_url,
            read_max_lag: Duration::from_millis(
                vars.number("READ_MAX_LAG_MS", 5000, 0..=3_600_000)?.into(),
            ),
            cookie_secure: vars.parse("COOKIE_SECURE", "false", parse_bool)?,
            host,
            port,
            auto_migrate: vars.parse("AUTO_MIGRATE", "true", parse_bool)?,
            db_pool_max,
            db_pool_min,
            db_acquire_timeout: Duration::from_millis(
                vars.number("DB_ACQUIRE_TIMEOUT_MS", 2000, 1..=600_000)?
                    .into(),
            ),
            body_limit_bytes: vars.number("BODY_LIMIT_BYTES", 1 << 20, 1..=1 << 30)? as usize,
            shutdown_timeout: Duration::from_secs(
                vars.number("SHUTDOWN_TIMEOUT_S", 30, 0..=3600)?.into(),
            ),
            request_timeout: Duration::from_secs(
                vars.number("REQUEST_TIMEOUT_S", 30, 1..=3600)?.into(),
            ),
            log_format: vars.parse("LOG_FORMAT", "pretty", parse_log_format)?,
            testing: vars.parse(ENV_ONLY, "false", parse_bool)?,
            session_ttl: Duration::from_secs(
                vars.number("SESSION_TTL_S", 14 * 24 * 3600, 1..=366 * 24 * 3600)?
                    .into(),
            ),
            idempotency_ttl: Duration::from_secs(
                vars.number("IDEMPOTENCY_TTL_S", 24 * 3600, 1..=366 * 24 * 3600)?
                    .into(),
            ),
            signin_max_failures: vars.number("SIGNIN_MAX_FAILURES", 5, 1..=1000)?,
            forwarded_allow: vars.parse("FORWARDED_ALLOW_IPS", "", parse_forwarded_allow)?,
            hash_concurrency: vars.number("HASH_CONCURRENCY", cpus(), 1..=1024)?,
            export_max_concurrent: vars.number(
                "EXPORT_MAX_CONCURRENT",
                (db_pool_max / 4).max(1),
                1..=db_pool_max,
            )?,
            export_idle_timeout: Duration::from_secs(
                vars.number("EXPORT_IDLE_TIMEOUT_S", 10, 1..=3600)?.into(),
            ),
            mail: MailSettings {
                smtp_url: match lookup("SMTP_URL") {
                    Some(value) if !value.trim().is_empty() => {
                        Some(vars.parse("SMTP_URL", "", parse_smtp_url)?)
                    }
                    _ => None,
                },
                dir: vars.parse("MAIL_DIR", "./data/mail/", |dir| {
                    if dir.is_empty() {
                        Err("a directory".to_owned())
                    } else {
                        Ok(std::path::PathBuf::from(dir))
                    }
                })?,
                from: vars.parse("MAIL_FROM", "notes@localhost", parse_mail_from)?,
                public_url: vars.parse("PUBLIC_URL", &default_public_url, parse_public_url)?,
            },
            password_reset_ttl: Duration::from_secs(
                vars.number("PASSWORD_RESET_TTL_S", 1800, 1..=7 * 24 * 3600)?
                    .into(),
            ),
            changes_retention: Duration::from_secs(
                vars.number("CHANGES_RETENTION_S", 30 * 24 * 3600, 1..=3650 * 24 * 3600)?
                    .into(),
            ),
            events_max_per_user: vars.number("EVENTS_MAX_PER_USER", 5, 1..=1000)?,
            events_max_concurrent: vars.number("EVENTS_MAX_CONCURRENT", 1000, 1..=100_000)?,
        })
    }

    /// Settings for `url` with every other variable at its default (tests and tools).
    pub fn for_database(url: &str) -> Result<Self, ConfigError> {
        let url = url.to_owned();
        Self::from_lookup(move |name| (name == "DATABASE_URL").then(|| url.clone()))
    }

    /// `HOST:PORT`.
    pub fn listen_address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The variable only the real environment may set (see [`Settings::from_sources`]).
const ENV_ONLY: &str = "TESTING";

/// The number of CPUs this process may use (the default of `HASH_CONCURRENCY`).
fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(1024) as u32)
}

struct Vars<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    fn parse<T>(
        &self,
        var: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = (self.0)(var).unwrap_or_else(|| default.to_owned());
        parse(value.trim()).map_err(|expected| ConfigError {
            var,
            expected,
            // Never echo a database URL: it may carry a password.
            got: if var.starts_with("DATABASE_") || var == "SMTP_URL" {
                format!("{:?}", redact(&value))
            } else {
                format!("{value:?}")
            },
        })
    }

    fn number(
        &self,
        var: &'static str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let expected = format!("an integer from {} to {}", range.start(), range.end());
        self.parse(var, &default.to_string(), |value| {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| expected.clone())
        })
    }
}

/// `SMTP_URL`: an `smtp://` or `smtps://` URL with a host (checked in full when the mail
/// transport is built at start).
fn parse_smtp_url(value: &str) -> Result<String, String> {
    let expected = || {
        "smtp://host:port, smtp://host:port?tls=starttls or smtps://user:password@host:465"
            .to_owned()
    };
    let url = url::Url::parse(value).map_err(|_| expected())?;
    if !matches!(url.scheme(), "smtp" | "smtps") || url.host_str().is_none_or(str::is_empty) {
        return Err(expected());
    }
    Ok(value.to_owned())
}

/// `MAIL_FROM`: one address, nothing that could end a mail header.
fn parse_mail_from(value: &str) -> Result<String, String> {
    value
        .parse::<lettre::message::Mailbox>()
        .map(|_| value.to_owned())
        .map_err(|_| {
            "an e-mail address (`notes@example.org` or `Notes <notes@example.org>`)".to_owned()
        })
}

/// `PUBLIC_URL`: an `http(s)://` URL without query or fragment; kept without a trailing `/`.
fn parse_public_url(value: &str) -> Result<String, String> {
    let expected = || "an http:// or https:// URL without query or fragment".to_owned();
    let url = url::Url::parse(value).map_err(|_| expected())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.cannot_be_a_base()
    {
        return Err(expected());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("true, false, 1 or 0".to_owned()),
    }
}

fn parse_host(value: &str) -> Result<String, String> {
    let is_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let valid =
        value.parse::<IpAddr>().is_ok() || (value.len() <= 253 && value.split('.').all(is_label));
    if valid {
        Ok(value.to_owned())
    } else {
        Err("an IP address or host name".to_owned())
    }
}

fn parse_forwarded_allow(value: &str) -> Result<ForwardedAllow, String> {
    if value == "*" {
        return Ok(ForwardedAllow::Any);
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.parse::<IpAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map(ForwardedAllow::Peers)
        .map_err(|_| "`*` or comma-separated IP addresses".to_owned())
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.to_ascii_lowercase().as_str() {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err("pretty or json".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn mail_settings_default_to_files_and_the_listen_address() {
        let settings = load(&[("HOST", "0.0.0.0"), ("PORT", "9000")]).unwrap();
        assert_eq!(settings.mail.smtp_url, None);
        assert_eq!(settings.mail.public_url, "http://0.0.0.0:9000");
        assert_eq!(settings.mail.from, "notes@localhost");
        assert_eq!(settings.password_reset_ttl, Duration::from_secs(1800));
        assert_eq!(
            settings.changes_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
        let settings = load(&[("PUBLIC_URL", "https://notes.example.org/")]).unwrap();
        assert_eq!(settings.mail.public_url, "https://notes.example.org");
    }

    #[test]
    fn bad_mail_settings_name_the_variable_and_never_show_the_password() {
        for bad in [
            "not a url",
            "ftp://example.org",
            "https://x.org/?a=1",
            "https://x.org/#f",
        ] {
            assert_eq!(load(&[("PUBLIC_URL", bad)]).unwrap_err().var, "PUBLIC_URL");
        }
        let err = load(&[("SMTP_URL", "http://user:hunter2@mail.example.org")]).unwrap_err();
        assert_eq!(err.var, "SMTP_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(
            load(&[("MAIL_FROM", "notes@example.org\r\nBcc: x@y.z")])
                .unwrap_err()
                .var,
            "MAIL_FROM"
        );
        let settings = load(&[("SMTP_URL", "smtps://user:hunter2@mail.example.org:465")]).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_need_no_configuration() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(settings.database_url.backend(), Backend::Sqlite);
        assert_eq!(settings.listen_address(), "127.0.0.1:8000");
        assert!(settings.auto_migrate);
        assert_eq!(settings.db_acquire_timeout, Duration::from_millis(2000));
        assert_eq!(settings.body_limit_bytes, 1 << 20);
        assert_eq!(settings.log_format, LogFormat::Pretty);
        assert!(!settings.testing);
    }

    #[test]
    fn booleans_accept_true_false_one_zero() {
        for (value, expected) in [("true", true), ("1", true), ("FALSE", false), ("0", false)] {
            assert_eq!(
                load(&[("TESTING", value)]).unwrap().testing,
                expected,
                "{value}"
            );
        }
        let err = load(&[("AUTO_MIGRATE", "yes")]).unwrap_err();
        assert_eq!(err.var, "AUTO_MIGRATE");
        assert_eq!(
            err.to_string(),
            "invalid AUTO_MIGRATE: expected true, false, 1 or 0, got \"yes\""
        );
    }

    #[test]
    fn numbers_are_bounded() {
        assert_eq!(load(&[("PORT", "65536")]).unwrap_err().var, "PORT");
        assert_eq!(load(&[("PORT", "-1")]).unwrap_err().var, "PORT");
        assert_eq!(
            load(&[("DB_POOL_MAX", "0")]).unwrap_err().var,
            "DB_POOL_MAX"
        );
        assert_eq!(
            load(&[("DB_POOL_MAX", "4"), ("DB_POOL_MIN", "5")])
                .unwrap_err()
                .var,
            "DB_POOL_MIN"
        );
        assert_eq!(
            load(&[("DB_ACQUIRE_TIMEOUT_MS", "abc")]).unwrap_err().var,
            "DB_ACQUIRE_TIMEOUT_MS"
        );
        assert_eq!(
            load(&[("BODY_LIMIT_BYTES", "0")]).unwrap_err().var,
            "BODY_LIMIT_BYTES"
        );
        assert_eq!(
            load(&[("SHUTDOWN_TIMEOUT_S", "3601")]).unwrap_err().var,
            "SHUTDOWN_TIMEOUT_S"
        );
        let settings = load(&[("PORT", "0"), ("DB_POOL_MAX", "1")]).unwrap();
        assert_eq!(
            (settings.port, settings.db_pool_max, settings.db_pool_min),
            (0, 1, 1)
        );
    }

    #[test]
    fn urls_are_validated() {
        let err = load(&[("DATABASE_URL", "redis://localhost")]).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert_eq!(
            load(&[("DATABASE_URL", "not a url")]).unwrap_err().var,
            "DATABASE_URL"
        );
        let pg = load(&[("DATABASE_URL", "postgres://u@db/notes")]).unwrap();
        assert_eq!(pg.database_url.backend(), Backend::Postgres);
        assert_eq!(pg.db_pool_max, 16);
        let my = load(&[("DATABASE_URL", "mysql://root@127.0.0.1:3306/notes")]).unwrap();
        assert_eq!(my.database_url.backend(), Backend::MySql);
    }

    #[test]
    fn a_postgres_url_may_list_hosts_the_way_libpq_does() {
        let url = "postgres://app:s3cretpw@127.0.0.1:6001,127.0.0.1:6002/notes?target_session_attrs=read-write";
        let settings = load(&[("DATABASE_URL", url)]).unwrap();
        let hosts = settings.database_url.hosts().expect("the hosts");
        assert_eq!((hosts.len(), hosts.host(1)), (2, "127.0.0.1:6002"));
        assert_eq!(hosts.target, migration::hosts::Target::ReadWrite);
        assert_eq!(settings.database_url.backend(), Backend::Postgres);
        let shown = format!("{:?}", settings.database_url);
        assert!(
            !shown.contains("s3cretpw") && shown.contains("6001,127.0.0.1:6002"),
            "{shown}"
        );
        for bad in [
            "postgres://app:s3cretpw@127.0.0.1:6001,:6002/notes",
            "postgres://app:s3cretpw@h1,h2/notes?target_session_attrs=master",
        ] {
            let err = load(&[("DATABASE_URL", bad)]).unwrap_err();
            assert_eq!(err.var, "DATABASE_URL");
            assert!(!err.to_string().contains("s3cretpw"), "{err}");
            assert!(err.to_string().contains("libpq"), "{err}");
        }
        let single = load(&[("DATABASE_URL", "postgres://u@db/notes")]).unwrap();
        assert!(single.database_url.hosts().is_none());
    }

    #[test]
    fn a_read_replica_is_a_postgres_url_beside_a_postgres_primary() {
        let primary = ("DATABASE_URL", "postgres://u@db/notes");
        let settings = load(&[
            primary,
            ("DATABASE_READ_URL", "postgres://u:secret@replica/notes"),
            ("READ_MAX_LAG_MS", "250"),
        ])
        .unwrap();
        let read = settings.database_read_url.unwrap();
        assert_eq!(read.backend(), Backend::Postgres);
        assert!(!format!("{read} {read:?}").contains("secret"));
        assert_eq!(settings.read_max_lag, Duration::from_millis(250));
        let none = load(&[primary, ("DATABASE_READ_URL", "  ")]).unwrap();
        assert_eq!(none.database_read_url, None);
        assert_eq!(none.read_max_lag, Duration::from_secs(5));
        for bad in [
            vec![("DATABASE_READ_URL", "postgres://u@replica/notes")],
            vec![primary, ("DATABASE_READ_URL", "mysql://root@replica/notes")],
            vec![primary, ("DATABASE_READ_URL", "not a url")],
            vec![primary, ("READ_MAX_LAG_MS", "-1")],
        ] {
            let err = load(&bad).unwrap_err();
            assert!(
                err.var == "DATABASE_READ_URL" || err.var == "READ_MAX_LAG_MS",
                "{bad:?}"
            );
        }
        let err = load(&[
            primary,
            ("DATABASE_READ_URL", "postgres://u:pw@replica:99999/x"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("pw@"), "{err}");
        assert!(load(&[("COOKIE_SECURE", "yes")]).is_err());
        assert!(load(&[("COOKIE_SECURE", "true")]).unwrap().cookie_secure);
    }

    #[test]
    fn other_variables_are_checked() {
        assert_eq!(
            load(&[("LOG_FORMAT", "xml")]).unwrap_err().var,
            "LOG_FORMAT"
        );
        assert_eq!(
            load(&[("LOG_FORMAT", "json")]).unwrap().log_format,
            LogFormat::Json
        );
        for bad in ["not a host/", "also bad", "", "a..b", "under_score"] {
            assert_eq!(load(&[("HOST", bad)]).unwrap_err().var, "HOST", "{bad:?}");
        }
        assert_eq!(load(&[("HOST", "localhost")]).unwrap().host, "localhost");
        assert_eq!(load(&[("HOST", "0.0.0.0")]).unwrap().host, "0.0.0.0");
        assert_eq!(
            load(&[("HOST", "::1"), ("PORT", "9")])
                .unwrap()
                .listen_address(),
            "[::1]:9"
        );
    }

    #[test]
    fn account_settings_have_defaults_and_bounds() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.session_ttl, Duration::from_secs(1_209_600));
        assert_eq!(settings.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(settings.signin_max_failures, 5);
        assert_eq!(settings.forwarded_allow, ForwardedAllow::Peers(vec![]));
        assert_eq!(settings.hash_concurrency, cpus());
        assert_eq!(settings.export_max_concurrent, 2, "a quarter of SQLite's 8");
        assert_eq!(settings.export_idle_timeout, Duration::from_secs(10));
        let small = load(&[("DB_POOL_MAX", "2")]).unwrap();
        assert_eq!(small.export_max_concurrent, 1, "at least one");
        for var in [
            "SESSION_TTL_S",
            "IDEMPOTENCY_TTL_S",
            "SIGNIN_MAX_FAILURES",
            "HASH_CONCURRENCY",
            "EXPORT_MAX_CONCURRENT",
            "EXPORT_IDLE_TIMEOUT_S",
        ] {
            assert_eq!(load(&[(var, "0")]).unwrap_err().var, var);
        }
        assert_eq!(
            load(&[("EXPORT_MAX_CONCURRENT", "9")]).unwrap_err().var,
            "EXPORT_MAX_CONCURRENT",
            "no more exports than pooled connections"
        );
    }

    #[test]
    fn forwarded_allow_ips_is_star_or_addresses() {
        let any = load(&[("FORWARDED_ALLOW_IPS", "*")])
            .unwrap()
            .forwarded_allow;
        assert!(any.trusts("203.0.113.9".parse().unwrap()));
        let some = load(&[("FORWARDED_ALLOW_IPS", "127.0.0.1, ::1")])
            .unwrap()
            .forwarded_allow;
        assert!(some.trusts("127.0.0.1".parse().unwrap()));
        assert!(some.trusts("::1".parse().unwrap()));
        assert!(!some.trusts("10.0.0.1".parse().unwrap()));
        let err = load(&[("FORWARDED_ALLOW_IPS", "10.0.0.0/8")]).unwrap_err();
        assert_eq!(err.var, "FORWARDED_ALLOW_IPS");
    }

    #[test]
    fn testing_is_read_from_the_real_environment_only() {
        let dotenv: HashMap<String, String> = [("TESTING".to_owned(), "true".to_owned())].into();
        let from_dotenv = Settings::from_sources(|_| None, &dotenv).unwrap();
        assert!(!from_dotenv.testing, ".env cannot turn the test routes on");
        let from_env =
            Settings::from_sources(|name| (name == "TESTING").then(|| "1".to_owned()), &dotenv)
                .unwrap();
        assert!(from_env.testing);
    }

    #[test]
    fn real_environment_overrides_dotenv() {
        let dotenv: HashMap<String, String> = [
            ("PORT".to_owned(), "9000".to_owned()),
            ("HOST".to_owned(), "0.0.0.0".to_owned()),
        ]
        .into();
        let settings =
            Settings::from_sources(|name| (name == "PORT").then(|| "9100".to_owned()), &dotenv)
                .unwrap();
        assert_eq!(settings.port, 9100, "the environment wins");
        assert_eq!(
            settings.host, "0.0.0.0",
            ".env fills what the environment lacks"
        );
    }

    #[test]
    fn database_password_never_shows() {
        let url = "postgres://app:Sup3rS3cret@db.internal/notes";
        let settings = load(&[("DATABASE_URL", url)]).unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("Sup3rS3cret"), "{debug}");
        assert!(debug.contains("app:***@db.internal"), "{debug}");
        assert!(!settings.database_url.to_string().contains("Sup3rS3cret"));

        let err = load(&[("DATABASE_URL", "ftp://app:Sup3rS3cret@host/x")]).unwrap_err();
        assert!(!err.to_string().contains("Sup3rS3cret"), "{err}");
    }

    #[test]
    fn a_url_the_driver_refuses_is_a_configuration_error() {
        for url in [
            "mysql://app:Sup3rS3cret@db/notes?sslmode=disable",
            "postgres://app:Sup3rS3cret@db/notes?sslmode=sometimes",
            "sqlite://data/notes.db?mode=sideways",
        ] {
            let err = load(&[("DATABASE_URL", url)]).unwrap_err();
            assert_eq!(err.var, "DATABASE_URL", "{url}");
            assert!(err.expected.contains("driver accepts"), "{url}: {err}");
            assert!(!err.to_string().contains("Sup3rS3cret"), "{err}");
        }
        let fine = "mysql://app@db/notes?ssl-mode=disabled";
        assert!(load(&[("DATABASE_URL", fine)]).is_ok());
    }
}
