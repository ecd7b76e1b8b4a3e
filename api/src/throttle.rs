//! Throttles every instance shares: each counted attempt is a row of `throttle_events`
//! ([`entity::throttle_event`]), so N instances behind a load balancer allow the same number
//! of attempts as one.
//!
//! A throttle counts attempts per key — its name and, say, the client address and an e-mail
//! address — over a sliding window: past `max` attempts within it, [`Throttle::check`] says
//! how long to wait until the oldest of them leaves the window. What counts as an attempt is
//! the caller's choice (a failed sign-in; any reset request). Attempts are written outside
//! the request's transaction (in autocommit, before it begins), so a request that fails still
//! counts. Two instances checking at the same moment may each let one more attempt through:
//! the bound is `max` plus the attempts in flight, not `max` per instance.

use std::{net::IpAddr, time::Duration};

use entity::throttle_event;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::db::RequestDb;

/// How long attempts count, for every throttle.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// One throttle: its name (part of every key) and how many attempts a key may make within
/// [`WINDOW`].
#[derive(Clone, Copy, Debug)]
pub struct Throttle {
    name: &'static str,
    max: u32,
    window: Duration,
}

/// What a throttle counts against: the digest of the throttle's name and the key's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(String);

/// What [`Throttle::check`] found for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Attempts within the window (at most the throttle's maximum: no more are read).
    pub attempts: usize,
    /// `Some(wait)` when they used the window up: how long until the oldest that decides
    /// leaves it.
    pub wait: Option<Duration>,
}

impl Throttle {
    /// Failed sign-ins (and failed `current_password` checks, and sign-up replays with
    /// another password) per client address and e-mail.
    pub const fn sign_in(max: u32) -> Self {
        Self::new("sign_in", max)
    }

    /// Password-reset requests per client address and e-mail.
    pub const fn password_reset(max: u32) -> Self {
        Self::new("password_reset", max)
    }

    /// Verification mails asked for, per user.
    pub const fn email_verification(max: u32) -> Self {
        Self::new("email_verification", max)
    }

    const fn new(name: &'static str, max: u32) -> Self {
        Self {
            name,
            max,
            window: WINDOW,
        }
    }

    /// The key of `client` and `email` for this throttle.
    pub fn client_and_email(&self, client: IpAddr, email: &str) -> Key {
        Key(throttle_event::key_digest(&[
            self.name,
            &client.to_string(),
            email,
        ]))
    }

    /// The key of user `id` for this throttle.
    pub fn user(&self, id: i64) -> Key {
        Key(throttle_event::key_digest(&[self.name, &id.to_string()]))
    }

    /// `key`'s attempts within the window, and whether they used it up. One indexed read.
    pub async fn check(&self, db: &RequestDb, key: &Key) -> Result<Standing, DbErr> {
        let now = entity::now();
        let since = now - chrono::Duration::from_std(self.window).expect("minutes");
        let recent: Vec<chrono::DateTime<chrono::Utc>> = db
            .all(
                throttle_event::Entity::find()
                    .select_only()
                    .column(throttle_event::Column::At)
                    .filter(throttle_event::Column::KeyDigest.eq(key.0.as_str()))
                    .filter(throttle_event::Column::At.gt(since))
                    .order_by_desc(throttle_event::Column::At)
                    .limit(u64::from(self.max))
                    .into_tuple(),
            )
            .await?;
        let mut standing = Standing {
            attempts: recent.len(),
            wait: None,
        };
        if recent.len() >= self.max as usize {
            // The max-th newest attempt leaves the window first among those that decide.
            let oldest = recent.last().copied().unwrap_or(now);
            let left = (oldest - since).to_std().unwrap_or_default();
            standing.wait = Some(left.max(Duration::from_secs(1)));
        }
        Ok(standing)
    }

    /// Count an attempt against `key` (in autocommit: call it before the request begins its
    /// transaction).
    pub async fn count(&self, db: &RequestDb, key: &Key) -> Result<(), DbErr> {
        db.insert(throttle_event::ActiveModel {
            key_digest: Set(key.0.clone()),
            at: Set(entity::now()),
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    /// Forget `key`'s attempts (a successful sign-in clears its failures; skip it when
    /// [`Standing::attempts`] was 0).
    pub async fn clear(&self, db: &RequestDb, key: &Key) -> Result<(), DbErr> {
        db.execute(
            throttle_event::Entity::delete_many()
                .filter(throttle_event::Column::KeyDigest.eq(key.0.as_str())),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_throttle_client_and_email() {
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let sign_in = Throttle::sign_in(5);
        let reset = Throttle::password_reset(5);
        let key = sign_in.client_and_email(client, "a@example.com");
        assert_eq!(key, sign_in.client_and_email(client, "a@example.com"));
        assert_ne!(key, reset.client_and_email(client, "a@example.com"));
        assert_ne!(key, sign_in.client_and_email(other, "a@example.com"));
        assert_ne!(key, sign_in.client_and_email(client, "b@example.com"));
        assert_eq!(key.0.len(), 64, "a digest, not the address");
    }
}
