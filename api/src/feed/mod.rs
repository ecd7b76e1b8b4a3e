//! Live note changes for `GET /notes/events` (`routes::notes::events`): which users have
//! streams open on this instance, and a poke for each when one of their changes commits, on
//! any instance.
//!
//! - **One watcher per instance, not per stream.** PostgreSQL: one connection `LISTEN`s to
//!   `note_changes` (the log's trigger notifies the owner's id; a notification is sent at
//!   commit, never for a rolled-back change) ([`listen`]). MariaDB and SQLite: one query every
//!   [`POLL`] reads the counters of the users with open streams, only while there are some
//!   ([`poll`]).
//! - **A poke, not the change.** Each user's streams share a `watch` channel; a poke wakes
//!   them, and each reads the log from its own position ([`entity::note_change::after`]) on a
//!   pooled connection it returns at once: an idle stream holds no database connection, and a
//!   poke lost or folded loses nothing (the log has it).
//! - **Bounded.** At most `EVENTS_MAX_PER_USER` streams per user and `EVENTS_MAX_CONCURRENT`
//!   per instance ([`Feed::subscribe`]); [`Feed::close`] ends every stream at once (SIGTERM).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use entity::{change_counter, session, user};
use sea_orm::{
    ColumnTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
    sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::sync::watch;

/// How often MariaDB and SQLite instances read the counters of watched users.
pub const POLL: Duration = Duration::from_millis(250);
/// How often the streams' tokens are checked (half the revocation bound).
pub const RECHECK: Duration = Duration::from_millis(500);
/// The PostgreSQL channel the log's trigger notifies.
pub const CHANNEL: &str = "note_changes";

/// Why a stream was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The user has `EVENTS_MAX_PER_USER` streams open here.
    UserFull,
    /// This instance has `EVENTS_MAX_CONCURRENT` streams open.
    InstanceFull,
    /// This instance is stopping.
    Closing,
}

/// The streams of one user on this instance.
struct Watched {
    streams: usize,
    /// The tokens the streams came with (digests), each with its number of streams.
    tokens: HashMap<String, usize>,
    /// Tokens found revoked (or their user deactivated): their streams end.
    revoked: HashSet<String>,
    /// The newest change number this instance has heard of for the user.
    newest: i64,
    poke: watch::Sender<u64>,
}

/// This instance's open streams (see the module documentation).
pub struct Feed {
    users: Mutex<HashMap<i64, Watched>>,
    /// The streams open here (the sum of `users`' counts; changed under its lock).
    open: AtomicUsize,
    max_per_user: usize,
    max_total: usize,
    closing: watch::Sender<bool>,
}

/// One open stream's place in the [`Feed`]: poked when its user's changes commit; gone (and
/// counted out) when dropped.
pub struct Subscription {
    feed: Arc<Feed>,
    user: i64,
    token_digest: String,
    pub poked: watch::Receiver<u64>,
    pub closing: watch::Receiver<bool>,
}

impl Feed {
    pub fn new(max_per_user: u32, max_total: u32) -> Arc<Self> {
        Arc::new(Self {
            users: Mutex::default(),
            open: AtomicUsize::new(0),
            max_per_user: max_per_user as usize,
            max_total: max_total as usize,
            closing: watch::Sender::new(false),
        })
    }

    fn users(&self) -> MutexGuard<'_, HashMap<i64, Watched>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more stream of `user`, signed in with the token of `token_digest`,
    /// within the limits.
    pub fn subscribe(
        self: &Arc<Self>,
        user: i64,
        token_digest: &str,
    ) -> Result<Subscription, Refused> {
        if *self.closing.borrow() {
            return Err(Refused::Closing);
        }
        let mut users = self.users();
        let open = self.open.load(Ordering::Relaxed);
        let streams = users.get(&user).map_or(0, |watched| watched.streams);
        if streams >= self.max_per_user {
            return Err(Refused::UserFull);
        }
        if open >= self.max_total {
            return Err(Refused::InstanceFull);
        }
        let watched = users.entry(user).or_insert_with(|| Watched {
            streams: 0,
            tokens: HashMap::new(),
            revoked: HashSet::new(),
            newest: 0,
            poke: watch::Sender::new(0),
        });
        watched.streams += 1;
        self.open.store(open + 1, Ordering::Relaxed);
        *watched.tokens.entry(token_digest.to_owned()).or_default() += 1;
        metrics::gauge!("events_streams_open").set((open + 1) as f64);
        Ok(Subscription {
            feed: Arc::clone(self),
            user,
            token_digest: token_digest.to_owned(),
            poked: watched.poke.subscribe(),
            closing: self.closing.subscribe(),
        })
    }

    /// `user` has a change numbered `seq` (or, with `None`, may have some): wake their
    /// streams here when it is news.
    pub fn announce(&self, user: i64, seq: Option<i64>) {
        let mut users = self.users();
        let Some(watched) = users.get_mut(&user) else {
            return;
        };
        match seq {
            Some(seq) if seq <= watched.newest => {}
            Some(seq) => {
                watched.newest = seq;
                watched.poke.send_modify(|n| *n += 1);
            }
            None => watched.poke.send_modify(|n| *n += 1),
        }
    }

    /// Wake every stream here (after a gap in the notifications: they read the log).
    pub fn announce_all(&self) {
        for watched in self.users().values() {
            watched.poke.send_modify(|n| *n += 1);
        }
    }

    /// The users with streams open here.
    pub fn watched(&self) -> Vec<i64> {
        self.users().keys().copied().collect()
    }

    /// The tokens of the streams open here (digests), by user.
    fn tokens(&self) -> Vec<(i64, String)> {
        self.users()
            .iter()
            .flat_map(|(user, watched)| watched.tokens.keys().map(|digest| (*user, digest.clone())))
            .collect()
    }

    /// The streams of `user` with the token of `digest` end (revoked, expired, deactivated).
    fn revoke(&self, user: i64, digest: &str) {
        if let Some(watched) = self.users().get_mut(&user)
            && watched.tokens.contains_key(digest)
            && watched.revoked.insert(digest.to_owned())
        {
            watched.poke.send_modify(|n| *n += 1);
        }
    }

    /// End every stream, and refuse new ones (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

impl Subscription {
    /// Whether the stream's token was found revoked: the stream must end.
    pub fn revoked(&self) -> bool {
        self.feed
            .users()
            .get(&self.user)
            .is_some_and(|watched| watched.revoked.contains(&self.token_digest))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut users = self.feed.users();
        if let Some(watched) = users.get_mut(&self.user) {
            watched.streams -= 1;
            if let Some(count) = watched.tokens.get_mut(&self.token_digest) {
                *count -= 1;
                if *count == 0 {
                    watched.tokens.remove(&self.token_digest);
                    watched.revoked.remove(&self.token_digest);
                }
            }
            if watched.streams == 0 {
                users.remove(&self.user);
            }
            let open = self.feed.open.fetch_sub(1, Ordering::Relaxed) - 1;
            metrics::gauge!("events_streams_open").set(open as f64);
        }
    }
}

/// Watch the database until `stop`: for committed changes of watched users (`LISTEN` on
/// PostgreSQL, a poll of the counters elsewhere), and for the revocation of the streams'
/// tokens ([`revocations`]).
pub async fn watch(feed: Arc<Feed>, db: DatabaseConnection, stop: watch::Receiver<bool>) {
    let changes = async {
        if db.get_database_backend() == DatabaseBackend::Postgres {
            listen(Arc::clone(&feed), db.clone(), stop.clone()).await;
        } else {
            poll(Arc::clone(&feed), db.clone(), stop.clone()).await;
        }
    };
    tokio::join!(
        changes,
        revocations(Arc::clone(&feed), db.clone(), stop.clone())
    );
}

/// Every [`RECHECK`], one query finds which of the streams' tokens still sign their user in
/// (a session not expired, of an active user); the streams of the others end. So a stream
/// ends within the revocation bound of every token (a second), whichever instance revoked it.
async fn revocations(feed: Arc<Feed>, db: DatabaseConnection, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let tokens = feed.tokens();
        if !tokens.is_empty() {
            let digests: Vec<String> = tokens.iter().map(|(_, digest)| digest.clone()).collect();
            let valid = session::Entity::find()
                .inner_join(user::Entity)
                .select_only()
                .column(session::Column::TokenDigest)
                .filter(session::Column::TokenDigest.is_in(digests))
                .filter(session::Column::ExpiresAt.gt(entity::now()))
                .filter(user::Column::IsActive.eq(true))
                .into_tuple::<String>()
                .all(&db)
                .await;
            match valid {
                Ok(valid) => {
                    let valid: HashSet<String> = valid.into_iter().collect();
                    for (user, digest) in tokens {
                        if !valid.contains(&digest) {
                            feed.revoke(user, &digest);
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "checking the streams' tokens failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RECHECK) => {}
            _ = stop.changed() => return,
        }
    }
}

/// PostgreSQL: one connection (outside the requests' pool) `LISTEN`s; each notification
/// names a user. Whenever the listener (re)connects, every stream here is woken and reads what
/// it may have missed from the log. It connects again, after a growing pause:
///
/// - when its connection is lost or `LISTEN` is refused (a standby: "cannot execute LISTEN
///   during recovery");
/// - when the requests' pool moved to another host ([`crate::db::follow`], a failover): a
///   demoted primary may keep its connections, and notifications are sent by the new one.
async fn listen(feed: Arc<Feed>, db: DatabaseConnection, mut stop: watch::Receiver<bool>) {
    let requests = db.get_postgres_connection_pool();
    let acquire_timeout = requests.options().get_acquire_timeout();
    let mut retry = Duration::from_millis(100);
    while !*stop.borrow() {
        let options = requests.connect_options();
        let listening = tokio::select! {
            listening = listen_on(&options, acquire_timeout) => listening,
            _ = stop.changed() => return,
        };
        let mut listener = match listening {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for note changes; retrying");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => return,
                }
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        retry = Duration::from_millis(100);
        // Whatever committed while nobody listened is in the log.
        feed.announce_all();
        let mut moved = tokio::time::interval(crate::db::follow::CHECK_EVERY);
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => match notification.payload().parse::<i64>() {
                        Ok(user) => feed.announce(user, None),
                        Err(_) => tracing::warn!("a note_changes notification without a user id"),
                    },
                    // The connection was lost: listen again (and read the log for every stream).
                    Ok(None) | Err(_) => break,
                },
                _ = moved.tick() => if !Arc::ptr_eq(&options, &requests.connect_options()) {
                    tracing::warn!("the database host changed: listening for note changes there");
                    break;
                },
                _ = stop.changed() => return,
            }
        }
    }
}

/// One try at listening: a connection of its own to the host `options` name, and `LISTEN` on it,
/// within twice the requests' `acquire_timeout`.
async fn listen_on(
    options: &PgConnectOptions,
    acquire_timeout: Duration,
) -> Result<PgListener, String> {
    // A pool of one connection, new for each try: the listener's connection is not one of the
    // requests' (`DB_POOL_MAX` stays theirs, and the pool's gauges count only theirs), and a
    // connection kept from a host the requests have left is never reused.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options.clone());
    let listening = async {
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection is ours to replace (on the host the requests use by then).
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        Ok::<_, sea_orm::sqlx::Error>(listener)
    };
    match tokio::time::timeout(acquire_timeout * 2, listening).await {
        Ok(listening) => listening.map_err(|error| error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// MariaDB and SQLite: every [`POLL`], one query reads the counters of the users with open
/// streams here (none when there are no streams).
async fn poll(feed: Arc<Feed>, db: DatabaseConnection, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let users = feed.watched();
        if !users.is_empty() {
            let counters = change_counter::Entity::find()
                .filter(change_counter::Column::UserId.is_in(users))
                .all(&db)
                .await;
            match counters {
                Ok(counters) => {
                    for counter in counters {
                        feed.announce(counter.user_id, Some(counter.last_seq));
                    }
                }
                Err(error) => tracing::debug!(%error, "reading the change counters failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_user_and_per_instance() {
        let feed = Feed::new(2, 3);
        let a1 = feed.subscribe(1, "a").unwrap();
        let _a2 = feed.subscribe(1, "a").unwrap();
        assert_eq!(feed.subscribe(1, "a").err(), Some(Refused::UserFull));
        let _b = feed.subscribe(2, "b").unwrap();
        assert_eq!(feed.subscribe(3, "c").err(), Some(Refused::InstanceFull));
        drop(a1);
        assert!(
            feed.subscribe(3, "c").is_ok(),
            "a closed stream frees its place"
        );
    }

    #[test]
    fn a_change_pokes_its_users_streams_once() {
        let feed = Feed::new(5, 10);
        let mut mine = feed.subscribe(1, "a").unwrap();
        let mut theirs = feed.subscribe(2, "b").unwrap();
        feed.announce(1, Some(4));
        feed.announce(1, Some(4)); // heard twice (the poll): not news
        feed.announce(3, Some(9)); // nobody here
        assert!(mine.poked.has_changed().unwrap());
        assert_eq!(*mine.poked.borrow_and_update(), 1);
        assert!(!theirs.poked.has_changed().unwrap());
        feed.close();
        assert!(*theirs.closing.borrow_and_update());
        assert_eq!(feed.subscribe(4, "d").err(), Some(Refused::Closing));
    }

    #[test]
    fn a_revoked_token_ends_its_streams_only() {
        let feed = Feed::new(5, 10);
        let phone = feed.subscribe(1, "phone").unwrap();
        let laptop = feed.subscribe(1, "laptop").unwrap();
        feed.revoke(1, "phone");
        assert!(phone.revoked());
        assert!(phone.poked.has_changed().unwrap(), "woken to end");
        assert!(!laptop.revoked());
        drop(phone);
        let again = feed.subscribe(1, "phone").unwrap();
        assert!(
            !again.revoked(),
            "a token signed in again is not held against it"
        );
    }
}
