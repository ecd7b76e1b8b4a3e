//! Process-wide limits, without HTTP: the sign-in throttle, the export slots and the
//! `Idempotency-Key`s in flight on this instance.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long failed sign-ins count against a (client address, e-mail) pair.
pub const SIGNIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Pairs tracked at most; beyond, the pairs whose last failure is oldest are forgotten, so a
/// flood of made-up e-mail addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 100_000;

/// Counts failed sign-ins per (client address, e-mail) over a sliding window: after `max`
/// failures within [`SIGNIN_WINDOW`], sign-ins for that pair are refused until the oldest of
/// them is older than the window.
///
/// Written here rather than taken from `governor`: its GCRA limiter replenishes one attempt
/// every window/max (a sixth attempt 3 minutes later), where the API refuses every
/// attempt until the window has passed, and it counts requests, not failures.
#[derive(Debug)]
pub struct SigninThrottle {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<(IpAddr, String), Vec<Instant>>>,
}

impl SigninThrottle {
    pub fn new(max: u32) -> Self {
        Self::with_window(max, SIGNIN_WINDOW)
    }

    pub fn with_window(max: u32, window: Duration) -> Self {
        Self {
            max: max as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when `client` may not try `email` now: it failed `max` times within the
    /// window; `wait` is how long until the oldest of those failures leaves it.
    pub fn check(&self, client: IpAddr, email: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failures = self.lock();
        let Some(times) = failures.get_mut(&(client, email.to_owned())) else {
            return Ok(());
        };
        times.retain(|t| now.duration_since(*t) < self.window);
        if times.len() < self.max {
            return Ok(());
        }
        let oldest = times.iter().min().copied().unwrap_or(now);
        Err(self.window.saturating_sub(now.duration_since(oldest)))
    }

    /// Record a failed sign-in.
    pub fn failed(&self, client: IpAddr, email: &str) {
        let now = Instant::now();
        let mut failures = self.lock();
        if failures.len() >= MAX_TRACKED {
            self.forget_oldest(&mut failures, now);
        }
        let times = failures.entry((client, email.to_owned())).or_default();
        times.retain(|t| now.duration_since(*t) < self.window);
        times.push(now);
        // Only the last `max` failures decide anything.
        if times.len() > self.max {
            times.remove(0);
        }
    }

    /// A successful sign-in clears the pair's failures.
    pub fn succeeded(&self, client: IpAddr, email: &str) {
        self.lock().remove(&(client, email.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, String), Vec<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drop every pair whose failures left the window, then, if still full, the tenth whose
    /// last failure is oldest.
    fn forget_oldest(&self, failures: &mut HashMap<(IpAddr, String), Vec<Instant>>, now: Instant) {
        failures.retain(|_, times| {
            times
                .last()
                .is_some_and(|t| now.duration_since(*t) < self.window)
        });
        if failures.len() < MAX_TRACKED {
            return;
        }
        let mut last: Vec<Instant> = failures
            .values()
            .filter_map(|t| t.last().copied())
            .collect();
        last.sort_unstable();
        let cutoff = last[last.len() / 10];
        failures.retain(|_, times| times.last().is_some_and(|t| *t > cutoff));
    }
}

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

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn throttles_a_pair_after_max_failures_until_the_window_passes() {
        let throttle = SigninThrottle::with_window(3, Duration::from_millis(300));
        for _ in 0..3 {
            assert!(throttle.check(CLIENT, "a@x.io").is_ok());
            throttle.failed(CLIENT, "a@x.io");
        }
        let wait = throttle.check(CLIENT, "a@x.io").unwrap_err();
        assert!(wait <= Duration::from_millis(300) && wait > Duration::ZERO);
        assert!(throttle.check(OTHER, "a@x.io").is_ok(), "another address");
        assert!(throttle.check(CLIENT, "b@x.io").is_ok(), "another e-mail");
        std::thread::sleep(Duration::from_millis(320));
        assert!(
            throttle.check(CLIENT, "a@x.io").is_ok(),
            "the window passed"
        );
    }

    #[test]
    fn success_clears_the_failures() {
        let throttle = SigninThrottle::new(2);
        throttle.failed(CLIENT, "a@x.io");
        throttle.succeeded(CLIENT, "a@x.io");
        throttle.failed(CLIENT, "a@x.io");
        assert!(throttle.check(CLIENT, "a@x.io").is_ok());
    }

    #[test]
    fn tracked_pairs_are_bounded() {
        let throttle = SigninThrottle::new(5);
        for i in 0..MAX_TRACKED + 10 {
            throttle.failed(CLIENT, &format!("{i}@x.io"));
        }
        assert!(throttle.lock().len() <= MAX_TRACKED);
    }

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
