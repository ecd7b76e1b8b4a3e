//! Who a bearer token signs in, remembered for a moment: most signed-in requests then make no
//! token lookup at all.
//!
//! A revoked token may be accepted for up to a second on another instance (docs/http.md), so an
//! entry lives [`TTL`] (half of that) after it was read from the database. This process forgets
//! entries itself as soon as it revokes them (sign-out, a password change, deactivation,
//! deletion), so on the instance that made the change a revoked token is refused at once.
//! Entries are bounded in number: a flood of valid tokens cannot grow memory without bound.
//! They hold who the caller is and whether they are an admin, nothing of the account else
//! (no password hash).

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// How long an entry is trusted after it was read from the database.
pub const TTL: Duration = Duration::from_millis(500);
/// Entries kept at most; beyond, the stale ones go, and if none is stale, all of them.
const MAX_ENTRIES: usize = 10_000;

/// Who a token signs in: what authorisation needs of the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub id: i64,
    pub is_admin: bool,
}

/// Signed-in callers by token digest (see the module documentation).
#[derive(Debug, Default)]
pub struct SessionCache {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    caller: Caller,
    read_at: Instant,
}

impl SessionCache {
    /// The caller token `digest` signed in less than [`TTL`] ago, if any.
    pub fn get(&self, digest: &str) -> Option<Caller> {
        let entries = self.lock();
        let entry = entries.get(digest)?;
        (entry.read_at.elapsed() < TTL).then_some(entry.caller)
    }

    /// Remember that `digest` signs in `caller`, as read from the database at `read_at`.
    pub fn put(&self, digest: String, caller: Caller, read_at: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| entry.read_at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(digest, Entry { caller, read_at });
    }

    /// Forget the token `digest` (it was revoked).
    pub fn forget(&self, digest: &str) {
        self.lock().remove(digest);
    }

    /// Forget every token of the user `id` (their sessions were revoked, or the account
    /// changed).
    pub fn forget_user(&self, id: i64) {
        self.lock().retain(|_, entry| entry.caller.id != id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> Caller {
        Caller {
            id,
            is_admin: false,
        }
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
