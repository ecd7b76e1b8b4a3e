//! A user's password: the length rule, and argon2id hashing and verification bounded in
//! concurrency. No HTTP here, so the CLI commands and the routes share it.
//!
//! argon2id with the OWASP-recommended parameters (the `argon2` crate's defaults: m = 19 MiB,
//! t = 2, p = 1) holds 19 MiB for each computation in flight. Unbounded, 300 concurrent
//! sign-ups held 5.4 GiB; a [`Hasher`] lets at most `HASH_CONCURRENCY` run at once, and a
//! request that waits longer than its limit for a slot is refused ([`HashError::Busy`]).

use std::{sync::Arc, time::Duration};

use argon2::{
    Argon2, PasswordHash, PasswordVerifier,
    password_hash::{PasswordHasher, SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

/// Fewest characters a password may have.
pub const MIN_CHARS: usize = 8;
/// Most characters a password may have (bounds the hashing work per request).
pub const MAX_CHARS: usize = 256;

/// What a sign-in for an unknown e-mail address verifies against, so that it costs the same
/// work as a wrong password (the parameters are the defaults; a unit test holds them equal).
/// The password behind it was random and thrown away.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$yZ99GrztjXepuvfIAxK84Q$955DB8TwoqTfnOskkqpZTn8chMm2lq2v7zSRk/mW7nw";

/// A password that meets the length rule. Its `Debug` hides it.
pub struct Password(String);

/// Hashing or verifying did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot stayed taken for longer than the wait limit.
    #[error("every password hashing slot is busy")]
    Busy,
    /// The blocking task died, or argon2 refused its input.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// `raw` as a password; the caller checked its length against [`MIN_CHARS`] and
    /// [`MAX_CHARS`] (and reports a violation in its own words).
    pub fn new(raw: String) -> Self {
        Self(raw)
    }

    /// A random password nobody knows until it is shown (22 characters, 128 bits).
    pub fn random() -> Self {
        Self(SaltString::generate(&mut OsRng).to_string())
    }

    /// The password itself, to show it once (`api seed-demo`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Allocations at least this large get memory of their own from the kernel, returned when
/// freed (see [`return_hash_memory_to_the_system`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 4 << 20;

/// Make the 19 MiB an argon2 computation allocates go back to the system when it ends.
///
/// glibc serves a large allocation with its own mapping, unmapped on free — but after the
/// first such free it raises that threshold to the freed size, so later 19 MiB blocks come
/// from its heaps and stay there: 300 sign-ups left 630–820 MiB resident whatever the
/// concurrency (`reliability/run.sh hashing`). A fixed threshold keeps the first behaviour.
/// Call once at start, before any thread hashes.
pub fn return_hash_memory_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes a tuning parameter of the allocator; M_MMAP_THRESHOLD
    // accepts any value up to 32 MiB on 64-bit targets.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// Hashes and verifies passwords, at most `concurrency` at once, process-wide.
#[derive(Clone, Debug)]
pub struct Hasher {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl Hasher {
    /// At most `concurrency` computations at once; a caller waits at most `wait` for a slot.
    pub fn new(concurrency: u32, wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency as usize)),
            wait,
        }
    }

    /// Hash with argon2id into a PHC string.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.0.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches `stored` (a PHC string). With no stored hash (an unknown
    /// user), or one that is not a PHC string (an account nobody may sign in to), it does the
    /// same work against a dummy hash and answers `false`.
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        self.run(move || {
            let parsed = stored.as_deref().and_then(|s| PasswordHash::new(s).ok());
            let (hash, real) = match parsed {
                Some(hash) => (hash, true),
                None => (
                    PasswordHash::new(DUMMY_HASH).map_err(|e| HashError::Failed(e.to_string()))?,
                    false,
                ),
            };
            let matches = Argon2::default()
                .verify_password(password.0.as_bytes(), &hash)
                .is_ok();
            Ok(real && matches)
        })
        .await
    }

    /// Run `work` on a blocking thread (it takes tens of milliseconds of CPU and must not
    /// stall an async worker) once a slot is free; the slot is held until `work` ends, even
    /// if the caller stops waiting.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let slot = tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        Hasher::new(2, Duration::from_secs(10))
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let params = argon2::Params::try_from(&dummy).unwrap();
        let default = argon2::Params::default();
        assert_eq!(dummy.algorithm, argon2::Algorithm::Argon2id.ident());
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
    }

    #[tokio::test]
    async fn verifies_the_right_password_only() {
        let hasher = hasher();
        let hash = hasher
            .hash(Password::new("correct horse".into()))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let right = hasher.verify(Password::new("correct horse".into()), Some(hash.clone()));
        assert!(right.await.unwrap());
        let wrong = hasher.verify(Password::new("wrong horse".into()), Some(hash));
        assert!(!wrong.await.unwrap());
    }

    #[tokio::test]
    async fn unknown_or_unusable_hashes_never_verify() {
        let hasher = hasher();
        assert!(!hasher.verify(Password::random(), None).await.unwrap());
        let unusable = hasher.verify(Password::new("anything".into()), Some("!".into()));
        assert!(!unusable.await.unwrap());
    }

    #[tokio::test]
    async fn a_caller_that_waits_too_long_for_a_slot_is_refused() {
        let hasher = Hasher::new(1, Duration::from_millis(50));
        let _taken = Arc::clone(&hasher.slots).acquire_owned().await.unwrap();
        let refused = hasher.hash(Password::random()).await;
        assert!(matches!(refused, Err(HashError::Busy)), "{refused:?}");
    }
}
