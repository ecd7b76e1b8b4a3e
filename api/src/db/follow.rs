//! A PostgreSQL pool on a URL that lists several hosts (`migration::hosts`): its connections
//! go to the host whose server fits `target_session_attrs`, and follow it when that changes
//! (a failover), with no restart.
//!
//! - **Each new connection checks its server** (`after_connect`): one on a server that does
//!   not fit (a demoted primary, a standby not promoted yet) is closed, and the pool tries
//!   again until the acquire timeout: a request answers 503, never writes to the wrong server.
//! - **A sentinel** ([`watch`]) keeps one connection of its own and reads its server's state
//!   every [`CHECK_EVERY`]. When the connection fails or the server no longer fits (or, with
//!   `prefer-standby`, is not a standby: every [`LOOK_FOR_BETTER`]), the hosts are tried in order
//!   ([`Hosts::pick`]) and the pool's new connections go to the one that fits.
//! - **Old connections leave** (`before_acquire`): a pooled connection opened before the
//!   switch, or while no host fits, is closed when next taken instead of being used.
//! - **While no host fits**, every connection is refused, old and new: requests (and
//!   `/readyz`) answer 503 within the acquire timeout.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use migration::hosts::{Hosts, ServerState};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbErr,
    sqlx::{self, Connection, postgres::PgPool},
};

/// How often the sentinel reads its server's state (so a failover is noticed within it, plus
/// the time to try the hosts).
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// How often a pool on a host that fits, but is not the one `target_session_attrs` prefers,
/// tries the others.
const LOOK_FOR_BETTER: Duration = Duration::from_secs(5);

/// How long one host has to answer when the hosts are tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which host a pool follows, and since when.
#[derive(Debug)]
pub struct Following {
    /// `primary` or `replica`, for the metrics.
    pool: &'static str,
    hosts: Hosts,
    current: AtomicUsize,
    fits: AtomicBool,
    /// When the pool last changed host, or lost its fitting host.
    changed: Mutex<Instant>,
}

impl Following {
    /// Whether a host that fits is known.
    pub fn fits(&self) -> bool {
        self.fits.load(Ordering::Acquire)
    }

    /// Whether a pooled connection opened `age` ago may still be used.
    fn keeps(&self, age: Duration) -> bool {
        let changed = *self.changed.lock().unwrap_or_else(PoisonError::into_inner);
        self.fits()
            && Instant::now()
                .checked_sub(age)
                .is_none_or(|opened| opened > changed)
    }

    fn set_fits(&self, fits: bool) -> bool {
        metrics::gauge!("db_host_fits", "pool" => self.pool).set(if fits { 1.0 } else { 0.0 });
        self.fits.swap(fits, Ordering::AcqRel)
    }

    fn mark_changed(&self) {
        *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}

/// Open a pool on `hosts`: the first host that fits (within `timeout`; `lazy`: host 1 when
/// none does yet, as a replica that is down must not stop the server), with the options
/// `build` makes for its URL; and start its sentinel.
pub async fn connect(
    pool: &'static str,
    hosts: Hosts,
    timeout: Duration,
    lazy: bool,
    build: impl FnOnce(String) -> ConnectOptions,
) -> Result<DatabaseConnection, DbErr> {
    let (first, fits) = match hosts.pick(timeout.min(PROBE_TIMEOUT)).await {
        Ok((host, _)) => (host, true),
        Err(_) if lazy => (0, false),
        Err(said) => return Err(DbErr::Custom(said)),
    };
    let following = Arc::new(Following {
        pool,
        current: AtomicUsize::new(first),
        fits: AtomicBool::new(fits),
        changed: Mutex::new(Instant::now()),
        hosts,
    });
    following.set_fits(fits);
    let mut options = build(following.hosts.url_for(first));
    let checked = Arc::clone(&following);
    options.map_sqlx_postgres_pool_opts(move |pool| {
        let checked = Arc::clone(&checked);
        pool.after_connect(move |connection, _| {
            let checked = Arc::clone(&checked);
            Box::pin(async move {
                let state = ServerState::of(connection).await?;
                if checked.hosts.target.accepts(state) {
                    Ok(())
                } else {
                    Err(sqlx::Error::Configuration(
                        "the server does not fit target_session_attrs (a failover?)".into(),
                    ))
                }
            })
        })
    });
    let kept = Arc::clone(&following);
    options.map_sqlx_postgres_before_acquire(move |_, meta| {
        let keep = kept.keeps(meta.age);
        Box::pin(async move { Ok(keep) })
    });
    let db = Database::connect(options).await?;
    tokio::spawn(watch(following, db.get_postgres_connection_pool().clone()));
    Ok(db)
}

/// The sentinel (see the module documentation); it ends when the pool is closed.
async fn watch(following: Arc<Following>, pool: PgPool) {
    let hosts = &following.hosts;
    let mut sentinel: Option<sqlx::PgConnection> = None;
    let mut looked = Instant::now();
    while !pool.is_closed() {
        let current = following.current.load(Ordering::Acquire);
        let state = match sentinel.as_mut() {
            Some(connection) => ServerState::of(connection).await.ok(),
            None => None,
        };
        let state = match state {
            Some(state) => Some(state),
            None => {
                sentinel = None;
                match hosts.options_for(current) {
                    Ok(options) => match sqlx::PgConnection::connect_with(&options).await {
                        Ok(mut connection) => {
                            let state = ServerState::of(&mut connection).await.ok();
                            sentinel = Some(connection);
                            state
                        }
                        Err(_) => None,
                    },
                    Err(_) => None,
                }
            }
        };
        // On a host that fits but is not the best (`prefer-standby` on the primary while no
        // standby is up), the others are tried every `LOOK_FOR_BETTER`, not every round.
        let fits = state.is_some_and(|state| hosts.target.accepts(state));
        let best = state.is_some_and(|state| hosts.target.is_best(state));
        let settled = fits && (best || looked.elapsed() < LOOK_FOR_BETTER);
        if !settled {
            looked = Instant::now();
            match hosts.pick(PROBE_TIMEOUT).await {
                Ok((host, _)) if host != current => {
                    switch(&pool, &following, host);
                    sentinel = None;
                }
                Ok(_) => {
                    if !following.set_fits(true) {
                        tracing::warn!(host = hosts.host(current), "the database host fits again");
                    }
                }
                Err(said) => {
                    if following.set_fits(false) {
                        following.mark_changed();
                        tracing::warn!(%said, "no database host fits: requests answer 503 until one does");
                    }
                }
            }
        } else if !following.set_fits(true) {
            tracing::warn!(host = hosts.host(current), "the database host fits again");
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// New connections of `pool` go to host `host` from now on; the ones open leave.
fn switch(pool: &PgPool, following: &Following, host: usize) {
    let Ok(target) = following.hosts.options_for(host) else {
        return;
    };
    // The pool's own options (logging, timeouts…) with the new host's address.
    let options = (*pool.connect_options())
        .clone()
        .host(target.get_host())
        .port(target.get_port());
    pool.set_connect_options(options);
    following.current.store(host, Ordering::Release);
    following.set_fits(true);
    following.mark_changed();
    metrics::counter!("db_host_switches_total", "pool" => following.pool).increment(1);
    tracing::warn!(
        host = following.hosts.host(host),
        "the database host that fits target_session_attrs changed: new connections go there"
    );
}
