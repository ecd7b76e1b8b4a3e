//! Who a bearer token signs in, remembered for a moment: most signed-in requests then make no
//! token lookup at all.
//!
//! The contract lets a revoked token be accepted for up to a second on another instance, so an
//! entry lives [`TTL`] (half of that) after it was read from the database. This process forgets
//! entries itself as soon as it revokes them (sign-out, a password change, deactivation,
//! deletion), so on the instance that made the change a revoked token is refused at once.
//! Entries are bounded in number: a flood of valid tokens cannot grow memory without bound.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use entity::user;

/// How long an entry is trusted after it was read from the database.
pub const TTL: Duration = Duration::from_millis(500);
/// Entries kept at most; beyond, the stale ones go, and if none is stale, all of them.
const MAX_ENTRIES: usize = 10_000;

/// Signed-in users by token digest (see the module documentation).
#[derive(Debug, Default)]
pub struct SessionCache {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    user: Arc<user::Model>,
    read_at: Instant,
}

impl SessionCache {
    /// The user token `digest` signed in less than [`TTL`] ago, if any.
    pub fn get(&self, digest: &str) -> Option<Arc<user::Model>> {
        let entries = self.lock();
        let entry = entries.get(digest)?;
        (entry.read_at.elapsed() < TTL).then(|| Arc::clone(&entry.user))
    }

    /// Remember that `digest` signs in `user`, as read from the database at `read_at`.
    pub fn put(&self, digest: String, user: Arc<user::Model>, read_at: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| entry.read_at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(digest, Entry { user, read_at });
    }

    /// Forget the token `digest` (it was revoked).
    pub fn forget(&self, digest: &str) {
        self.lock().remove(digest);
    }

    /// Forget every token of the user `id` (their sessions were revoked, or the account
    /// changed).
    pub fn forget_user(&self, id: i64) {
        self.lock().retain(|_, entry| entry.user.id != id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> Arc<user::Model> {
        let now = entity::now();
        Arc::new(user::Model {
            id,
            email: format!("{id}@example.com"),
            name: None,
            hashed_password: "!".into(),
            is_active: true,
            is_admin: false,
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }

    #[test]
    fn an_entry_is_trusted_for_the_ttl_only() {
        let cache = SessionCache::default();
        cache.put("fresh".into(), user(1), Instant::now());
        cache.put("stale".into(), user(2), Instant::now() - TTL);

        assert_eq!(cache.get("fresh").map(|u| u.id), Some(1));
        assert!(cache.get("stale").is_none());
        assert!(cache.get("unknown").is_none());
    }

    #[test]
    fn forgetting_a_token_or_a_user_takes_effect_at_once() {
        let cache = SessionCache::default();
        for (digest, id) in [("a", 1), ("b", 1), ("c", 2)] {
            cache.put(digest.into(), user(id), Instant::now());
        }

        cache.forget("c");
        cache.forget_user(1);

        for digest in ["a", "b", "c"] {
            assert!(cache.get(digest).is_none(), "{digest}");
        }
    }

    #[test]
    fn entries_stay_bounded() {
        let cache = SessionCache::default();
        for i in 0..MAX_ENTRIES + 10 {
            cache.put(format!("{i}"), user(1), Instant::now());
        }
        assert!(cache.lock().len() <= MAX_ENTRIES);
        assert!(cache.get(&format!("{}", MAX_ENTRIES + 9)).is_some());
    }
}
