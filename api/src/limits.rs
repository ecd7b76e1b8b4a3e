//! Process-wide limits, without HTTP: the export slots and the `Idempotency-Key`s in flight
//! on this instance. The throttles every instance shares count in the database
//! (`throttle.rs`, a layer up).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why an export may not start now.
#[derive(Debug, PartialEq, Eq)]
pub enum ExportRefused {
    /// The user already has one running.
    UserBusy,
    /// `EXPORT_MAX_CONCURRENT` are running.
    AllBusy,
}

/// At most `max` exports at once, and one per user, so exports hold at most that many of the
/// pool's connections whatever their clients do.
#[derive(Clone, Debug)]
pub struct ExportSlots {
    overall: Arc<Semaphore>,
    users: Arc<Mutex<HashSet<i64>>>,
}

/// A running export's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ExportSlot {
    _overall: OwnedSemaphorePermit,
    users: Arc<Mutex<HashSet<i64>>>,
    user: i64,
}

impl ExportSlots {
    pub fn new(max: u32) -> Self {
        Self {
            overall: Arc::new(Semaphore::new(max as usize)),
            users: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// A slot for `user`'s export, if one is free; never waits.
    pub fn try_start(&self, user: i64) -> Result<ExportSlot, ExportRefused> {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.contains(&user) {
            return Err(ExportRefused::UserBusy);
        }
        let overall = Arc::clone(&self.overall)
            .try_acquire_owned()
            .map_err(|_| ExportRefused::AllBusy)?;
        users.insert(user);
        Ok(ExportSlot {
            _overall: overall,
            users: Arc::clone(&self.users),
            user,
        })
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_limited_per_user_and_overall() {
        let slots = ExportSlots::new(2);
        let first = slots.try_start(1).unwrap();
        assert_eq!(slots.try_start(1).unwrap_err(), ExportRefused::UserBusy);
        let _second = slots.try_start(2).unwrap();
        assert_eq!(slots.try_start(3).unwrap_err(), ExportRefused::AllBusy);
        drop(first);
        assert!(
            slots.try_start(1).is_ok(),
            "a finished export frees its slots"
        );
    }
}

/// The `Idempotency-Key`s this instance is answering right now, by scope, with their
/// requests' fingerprints: a repeat that arrives while the first runs here is refused at
/// once, before any work.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<(String, String), String>>);

/// Why a key could not be entered.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyTaken {
    /// The same request (same fingerprint) is running here.
    BySameRequest,
    /// Another request with this key is running here.
    ByOtherRequest,
}

impl InFlight {
    /// Enter `key` of `scope` for a request with `fingerprint`, until the returned entry is
    /// dropped.
    pub fn enter(
        self: &Arc<Self>,
        scope: String,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyInFlight, KeyTaken> {
        let id = (scope, key.to_owned());
        let mut keys = self.keys();
        if let Some(running) = keys.get(&id) {
            return Err(if running == fingerprint {
                KeyTaken::BySameRequest
            } else {
                KeyTaken::ByOtherRequest
            });
        }
        keys.insert(id.clone(), fingerprint.to_owned());
        Ok(KeyInFlight {
            keys: Arc::clone(self),
            id,
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A key in flight here; dropped (answered, failed or cancelled), it leaves the set.
pub struct KeyInFlight {
    keys: Arc<InFlight>,
    id: (String, String),
}

impl Drop for KeyInFlight {
    fn drop(&mut self) {
        self.keys.keys().remove(&self.id);
    }
}
