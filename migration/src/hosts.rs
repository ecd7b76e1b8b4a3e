//! PostgreSQL URLs that name several hosts, read the way libpq reads them:
//! `postgres://app:pw@h1:5432,h2:5433/notes?target_session_attrs=read-write` is the hosts in
//! order, and the kind of server a connection must land on.
//!
//! sqlx connects to one host. [`Hosts::url_for`] gives each host's own URL for it (the same
//! user, password, database and parameters), [`Hosts::pick`] tries them in order like libpq
//! and answers the first whose server fits the target. The CLI connects to that host; the
//! server's pools follow the fitting host as it changes (`api::db::follow`).

use std::time::Duration;

use sea_orm::sqlx::{self, Connection, Row, postgres::PgConnectOptions};

/// The query that tells a server's state: in recovery (a standby), and whether a session on it
/// is read-only (a standby, or a primary set `default_transaction_read_only`).
pub const STATE_QUERY: &str =
    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'";

/// What a session found its server to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub in_recovery: bool,
    pub read_only: bool,
}

impl ServerState {
    /// Read the state of the server `connection` is on.
    pub async fn of(connection: &mut sqlx::PgConnection) -> Result<Self, sqlx::Error> {
        let row = sqlx::query(STATE_QUERY).fetch_one(connection).await?;
        Ok(Self {
            in_recovery: row.try_get(0)?,
            read_only: row.try_get(1)?,
        })
    }
}

/// `target_session_attrs`: which server a connection must land on (libpq's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any server (libpq's default).
    Any,
    /// A session that can write.
    ReadWrite,
    /// A session that cannot write.
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery.
    Standby,
    /// A standby when one answers, else any server.
    PreferStandby,
}

impl Target {
    const VALUES: &str = "any, read-write, read-only, primary, standby or prefer-standby";

    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            _ => {
                return Err(format!(
                    "target_session_attrs is not one of {}",
                    Self::VALUES
                ));
            }
        })
    }

    /// Whether a server in `state` fits. (`PreferStandby` takes any server; [`Hosts::pick`]
    /// prefers a standby.)
    pub fn accepts(self, state: ServerState) -> bool {
        match self {
            Self::Any | Self::PreferStandby => true,
            Self::ReadWrite => !state.read_only,
            Self::ReadOnly => state.read_only,
            Self::Primary => !state.in_recovery,
            Self::Standby => state.in_recovery,
        }
    }

    /// Whether a fitting server in `state` is the best one can hope for (else a better one is
    /// looked for now and then).
    pub fn is_best(self, state: ServerState) -> bool {
        self != Self::PreferStandby || state.in_recovery
    }
}

/// A PostgreSQL URL with several hosts, or a target (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Hosts {
    /// `postgres://` or `postgresql://`, and the user-info with its `@` (or nothing).
    head: String,
    /// Each host as written (`h`, `h:5433`, `[::1]:5433`).
    hosts: Vec<String>,
    /// The path and the query, without `target_session_attrs`.
    tail: String,
    pub target: Target,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No user-info: it may hold a password.
        f.debug_struct("Hosts")
            .field("hosts", &self.hosts)
            .field("target", &self.target)
            .finish()
    }
}

impl Hosts {
    /// Read `url`: `Ok(None)` when it is not a PostgreSQL URL, or names one host and no
    /// `target_session_attrs` (the driver reads it as it is). Errors say what is wrong without
    /// quoting the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Option<Self>, String> {
        let Some(scheme) = ["postgres://", "postgresql://"]
            .into_iter()
            .find(|scheme| url.starts_with(scheme))
        else {
            return Ok(None);
        };
        let rest = &url[scheme.len()..];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, host_list) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut target = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == "target_session_attrs" {
                target = Some(Target::parse(value)?);
            } else {
                kept.push(pair);
            }
        }
        if !host_list.contains(',') && target.is_none() {
            return Ok(None);
        }
        let hosts: Vec<String> = host_list.split(',').map(str::to_owned).collect();
        for (i, host) in hosts.iter().enumerate() {
            check_host(host).map_err(|problem| format!("host {} of the list {problem}", i + 1))?;
        }
        let tail = if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        let hosts = Self {
            head: format!("{scheme}{userinfo}"),
            hosts,
            tail,
            target: target.unwrap_or(Target::Any),
        };
        for i in 0..hosts.len() {
            hosts
                .options_for(i)
                .map_err(|_| format!("the URL of host {} is not one the driver accepts", i + 1))?;
        }
        Ok(Some(hosts))
    }

    /// How many hosts the URL names.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether it names none (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `i` as written (`h:5433`): safe to log.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// The URL of host `i` alone, for the driver (it holds the password: never print it).
    pub fn url_for(&self, i: usize) -> String {
        format!("{}{}{}", self.head, self.hosts[i], self.tail)
    }

    /// The driver's options for host `i`.
    pub fn options_for(&self, i: usize) -> Result<PgConnectOptions, sqlx::Error> {
        self.url_for(i).parse()
    }

    /// Try the hosts in order, each within `timeout`, as libpq does: the first whose server
    /// fits the target (with `prefer-standby`, the first standby, else the first that
    /// answers). `Err` lists what each host said, without secrets.
    pub async fn pick(&self, timeout: Duration) -> Result<(usize, ServerState), String> {
        let mut said = Vec::new();
        let mut fallback = None;
        for i in 0..self.len() {
            match self.state_of(i, timeout).await {
                Ok(state) if self.target.accepts(state) && self.target.is_best(state) => {
                    return Ok((i, state));
                }
                Ok(state) if self.target.accepts(state) => {
                    fallback.get_or_insert((i, state));
                }
                Ok(state) => said.push(format!("{}: {}", self.host(i), describe(state))),
                Err(problem) => said.push(format!("{}: {problem}", self.host(i))),
            }
        }
        fallback.ok_or_else(|| {
            format!(
                "no host fits target_session_attrs={} ({})",
                self.target_name(),
                said.join("; ")
            )
        })
    }

    /// The state of host `i`'s server, on a connection of its own (closed after).
    pub async fn state_of(&self, i: usize, timeout: Duration) -> Result<ServerState, String> {
        let options = self.options_for(i).map_err(|_| "a bad URL".to_owned())?;
        let probe = async {
            let mut connection = sqlx::PgConnection::connect_with(&options).await?;
            let state = ServerState::of(&mut connection).await;
            let _ = connection.close().await;
            state
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(error)) => Err(short(&error)),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    fn target_name(&self) -> &'static str {
        match self.target {
            Target::Any => "any",
            Target::ReadWrite => "read-write",
            Target::ReadOnly => "read-only",
            Target::Primary => "primary",
            Target::Standby => "standby",
            Target::PreferStandby => "prefer-standby",
        }
    }
}

/// A host as written: a name or address, or `[v6]`, then `:port` or nothing.
fn check_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (_, after) = v6.split_once(']').ok_or("has a '[' without ']'")?;
        (v6, after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return Err("is empty");
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err("has a port that is not a number from 0 to 65535");
    }
    Ok(())
}

fn describe(state: ServerState) -> &'static str {
    match (state.in_recovery, state.read_only) {
        (true, _) => "a standby",
        (false, true) => "a primary that does not accept writes",
        (false, false) => "a primary",
    }
}

/// What a failed probe says, without the options (the driver's messages may quote them).
fn short(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(io) => io.kind().to_string(),
        sqlx::Error::Database(db) => format!("refused ({})", db.code().unwrap_or_default()),
        sqlx::Error::Tls(_) => "a TLS error".to_owned(),
        _ => "no connection".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Hosts {
        Hosts::parse(url).unwrap().expect("a multi-host URL")
    }

    #[test]
    fn one_url_per_host_keeps_the_rest() {
        let hosts = parse(
            "postgres://app:s%40cret@h1:5432,[::1]:5433,h3/notes?sslmode=disable&target_session_attrs=read-write&application_name=x",
        );
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts.target, Target::ReadWrite);
        assert_eq!(
            hosts.url_for(1),
            "postgres://app:s%40cret@[::1]:5433/notes?sslmode=disable&application_name=x"
        );
        assert_eq!(
            hosts.url_for(2),
            "postgres://app:s%40cret@h3/notes?sslmode=disable&application_name=x"
        );
        assert_eq!(hosts.host(0), "h1:5432");
        assert!(!format!("{hosts:?}").contains("cret"));
    }

    #[test]
    fn one_host_without_a_target_is_left_to_the_driver() {
        assert_eq!(
            Hosts::parse("postgres://app:pw@h1:5432/notes").unwrap(),
            None
        );
        assert_eq!(
            Hosts::parse("sqlite://data/notes.db?mode=rwc").unwrap(),
            None
        );
        assert_eq!(Hosts::parse("mysql://root@h1,h2/x").unwrap(), None);
        let one = parse("postgresql://h1/notes?target_session_attrs=any");
        assert_eq!((one.len(), one.target), (1, Target::Any));
        assert_eq!(one.url_for(0), "postgresql://h1/notes");
    }

    #[test]
    fn malformed_lists_are_refused_without_quoting_them() {
        for (url, expected) in [
            (
                "postgres://u:s3cretpw@h1:5432,,h3/db",
                "host 2 of the list is empty",
            ),
            (
                "postgres://u:s3cretpw@h1:54x32,h2/db",
                "host 1 of the list has a port",
            ),
            (
                "postgres://u:s3cretpw@h1,h2:99999/db",
                "host 2 of the list has a port",
            ),
            (
                "postgres://u:s3cretpw@[::1,h2/db",
                "host 1 of the list has a '['",
            ),
            (
                "postgres://u:s3cretpw@h1,h2/db?target_session_attrs=leader",
                "target_session_attrs is not one of",
            ),
        ] {
            let error = Hosts::parse(url).unwrap_err();
            assert!(error.starts_with(expected), "{url}: {error}");
            assert!(!error.contains("s3cretpw"), "{error}");
        }
    }

    #[test]
    fn targets_accept_the_servers_libpq_accepts() {
        let primary = ServerState {
            in_recovery: false,
            read_only: false,
        };
        let standby = ServerState {
            in_recovery: true,
            read_only: true,
        };
        let locked = ServerState {
            in_recovery: false,
            read_only: true,
        };
        assert!(Target::ReadWrite.accepts(primary));
        assert!(!Target::ReadWrite.accepts(standby));
        assert!(!Target::ReadWrite.accepts(locked));
        assert!(Target::Primary.accepts(locked));
        assert!(Target::ReadOnly.accepts(locked) && Target::ReadOnly.accepts(standby));
        assert!(Target::Standby.accepts(standby) && !Target::Standby.accepts(locked));
        assert!(Target::PreferStandby.accepts(primary) && !Target::PreferStandby.is_best(primary));
        assert!(Target::PreferStandby.is_best(standby));
        assert!(Target::Any.accepts(standby) && Target::Any.is_best(primary));
    }
}
