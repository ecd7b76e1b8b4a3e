//! A PostgreSQL streaming replica for reads (`DATABASE_READ_URL`), and read-your-writes.
//!
//! A request that only reads (GET, HEAD) runs its reads on the replica when the replica is up,
//! lags no more than `READ_MAX_LAG_MS`, and has replayed the client's last write. The client's
//! last write is a position in the primary's write-ahead log (LSN), read after the write
//! committed and given to the client in a cookie ([`WRITTEN_COOKIE`]); any instance compares it
//! with the replica's replay position, so read-your-writes holds across instances with no state
//! shared between them. Everything else — writes, the reads in them, the sign-in lookup (so a
//! revoked token is refused at once) — runs on the primary.
//!
//! The replica's state is read by a monitor every [`CHECK_EVERY`], not per request: a request
//! compares two numbers. A replica that fails a check or a read is bypassed until a check
//! succeeds again; a read that fails on it for want of a connection is run on the primary.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use crate::config::Settings;

/// The cookie that carries the client's last write position.
pub const WRITTEN_COOKIE: &str = "notes_written";

/// How often the monitor reads the replica's position and lag.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The primary's current write position, as a number (`pg_lsn` minus `0/0`).
const PRIMARY_POSITION: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";

/// The replica's replay position.
const REPLICA_POSITION: &str = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint";

/// How far back the monitor remembers the primary's positions (a lag beyond is "at least
/// this").
const HISTORY: Duration = Duration::from_secs(120);

/// Why a read-only request read on the primary although a replica is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bypass {
    /// The last check or read failed.
    Down,
    /// The replica lags more than `READ_MAX_LAG_MS`.
    Lagging,
    /// The replica has not replayed the client's last write yet.
    BehindClient,
}

impl Bypass {
    fn label(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Lagging => "lagging",
            Self::BehindClient => "behind_client",
        }
    }
}

/// The replica: its pool and what the monitor last saw.
#[derive(Debug)]
pub struct Replica {
    pool: DatabaseConnection,
    max_lag_ms: u64,
    up: AtomicBool,
    /// The replay position at the last check.
    replayed: AtomicU64,
    lag_ms: AtomicU64,
    /// The primary's position when this instance started (after its migrations): the replica
    /// serves no read before it has replayed that (the schema this instance expects).
    floor: AtomicU64,
    /// Read-only requests it served, and ones that read on the primary instead.
    served: AtomicU64,
    bypassed: AtomicU64,
}

impl Replica {
    /// A replica pool for `settings.database_read_url`, connected lazily (a replica that is
    /// down at start does not stop the server), and its monitor, which checks it against
    /// `primary` until the replica is dropped.
    pub async fn start(
        settings: &Settings,
        primary: DatabaseConnection,
    ) -> Result<Arc<Self>, DbErr> {
        let url = settings
            .database_read_url
            .as_ref()
            .ok_or_else(|| DbErr::Custom("no DATABASE_READ_URL".into()))?;
        // Several hosts (`prefer-standby`, say): the pool follows the one that fits, and the
        // monitor below bypasses it whenever it is not a replica that has caught up.
        let pool = super::open("replica", url, settings, true, |url| {
            super::pool_options(settings, url, 0, true)
        })
        .await?;
        let replica = Arc::new(Self {
            pool,
            max_lag_ms: settings.read_max_lag.as_millis() as u64,
            up: AtomicBool::new(false),
            replayed: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            // Unknown until the primary answers (below, or at the monitor's first check).
            floor: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        });
        if let Ok(position) = written_position(&primary).await {
            replica.floor.store(position, Ordering::Release);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(monitor(Arc::downgrade(&replica), primary));
        }
        Ok(replica)
    }

    /// The replica's pool.
    pub fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// Whether a read-only request whose client last wrote at `written` may read here; the
    /// decision is counted in the metrics.
    pub fn serves(&self, written: Option<u64>) -> Result<(), Bypass> {
        let decision = if !self.up.load(Ordering::Acquire) {
            Err(Bypass::Down)
        } else if self.lag_ms.load(Ordering::Relaxed) > self.max_lag_ms {
            Err(Bypass::Lagging)
        } else if written.unwrap_or(0).max(self.floor.load(Ordering::Acquire))
            > self.replayed.load(Ordering::Acquire)
        {
            Err(Bypass::BehindClient)
        } else {
            Ok(())
        };
        match decision {
            Ok(()) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("db_reads_total", "target" => "replica").increment(1);
            }
            Err(bypass) => {
                self.bypassed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("db_reads_total", "target" => "primary").increment(1);
                metrics::counter!("db_replica_bypasses_total", "reason" => bypass.label())
                    .increment(1);
            }
        }
        decision
    }

    /// Whether the last check succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Its replay position and lag at the last check.
    pub fn position(&self) -> (u64, Duration) {
        (
            self.replayed.load(Ordering::Acquire),
            Duration::from_millis(self.lag_ms.load(Ordering::Relaxed)),
        )
    }

    /// Read-only requests this instance read on the replica, and ones it sent to the primary.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.bypassed.load(Ordering::Relaxed),
        )
    }

    /// A read on the replica failed for want of a connection: bypass it until a check
    /// succeeds (the read is retried on the primary).
    pub fn failed(&self) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!("the read replica failed a read: reads go to the primary");
        }
        metrics::gauge!("db_replica_up").set(0.0);
        metrics::counter!("db_replica_bypasses_total", "reason" => "read_failed").increment(1);
    }

    /// One check: the primary's position, then the replica's. `history` holds the primary's
    /// positions at the earlier checks: the lag is how long ago the primary first had
    /// something the replica has not replayed yet (zero when it has replayed everything), to
    /// the check interval — a quiet spell before a write does not count as lag.
    async fn check(
        &self,
        primary: &DatabaseConnection,
        history: &mut VecDeque<(Instant, u64)>,
    ) -> Result<(), DbErr> {
        let written = position(primary, PRIMARY_POSITION).await?;
        let now = Instant::now();
        if history.back().is_none_or(|&(_, last)| last != written) {
            history.push_back((now, written));
        }
        while history.len() > 1 && history[1].0 + HISTORY < now {
            history.pop_front();
        }
        // The start-up read of the floor failed: this is the first position known.
        let _ = self
            .floor
            .compare_exchange(u64::MAX, written, Ordering::AcqRel, Ordering::Acquire);
        let replayed = position(&self.pool, REPLICA_POSITION).await?;
        let lag_ms = history
            .iter()
            .find(|&&(_, at)| at > replayed)
            .map_or(0, |&(since, _)| {
                now.duration_since(since).as_millis() as u64
            });
        self.replayed.store(replayed, Ordering::Release);
        self.lag_ms.store(lag_ms, Ordering::Relaxed);
        metrics::gauge!("db_replica_lag_seconds").set(lag_ms as f64 / 1000.0);
        Ok(())
    }
}

/// The primary's write position now, for the cookie of a request that wrote.
pub async fn written_position(primary: &DatabaseConnection) -> Result<u64, DbErr> {
    position(primary, PRIMARY_POSITION).await
}

/// The client's last write position, from its cookie (`None` when absent or malformed).
pub fn written_by_client(cookie_header: &[u8]) -> Option<u64> {
    let header = std::str::from_utf8(cookie_header).ok()?;
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == WRITTEN_COOKIE)
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// The position `sql` reads (a `bigint`): NULL for a replay position means the server is
/// not a replica (or not replaying yet).
async fn position(conn: &DatabaseConnection, sql: &str) -> Result<u64, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .ok_or_else(|| DbErr::Custom("no row".into()))?;
    let position: Option<i64> = row.try_get_by_index(0)?;
    let position =
        position.ok_or_else(|| DbErr::Custom("the read database is not replaying".into()))?;
    Ok(position.max(0) as u64)
}

/// Check the replica every [`CHECK_EVERY`] until it is dropped.
async fn monitor(replica: Weak<Replica>, primary: DatabaseConnection) {
    let mut interval = tokio::time::interval(CHECK_EVERY);
    let mut history = VecDeque::new();
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        let checked = tokio::time::timeout(
            Duration::from_secs(1),
            replica.check(&primary, &mut history),
        )
        .await;
        let up = matches!(checked, Ok(Ok(())));
        let was_up = replica.up.swap(up, Ordering::AcqRel);
        metrics::gauge!("db_replica_up").set(if up { 1.0 } else { 0.0 });
        match (was_up, up, checked) {
            (false, true, _) => tracing::info!("the read replica answers: reads use it"),
            (true, false, Ok(Err(error))) => {
                tracing::warn!(%error, "the read replica does not answer: reads go to the primary");
            }
            (true, false, _) => {
                tracing::warn!("the read replica is too slow to answer: reads go to the primary");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_position_is_read_from_its_cookie() {
        assert_eq!(written_by_client(b"notes_written=42"), Some(42));
        assert_eq!(
            written_by_client(b"a=1; notes_written=7000000; b=2"),
            Some(7_000_000)
        );
        assert_eq!(written_by_client(b"notes_written=x"), None);
        assert_eq!(written_by_client(b"other=1"), None);
        assert_eq!(written_by_client(b"notes_written=-1"), None);
        assert_eq!(written_by_client(b"\xff"), None);
    }
}
