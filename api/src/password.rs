//! A user's password: the length rule and argon2id hashing. No HTTP here, so the seed command
//! and the routes share it.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, SaltString, rand_core::OsRng},
};

/// Fewest characters a password may have.
pub const MIN_CHARS: usize = 8;
/// Most characters a password may have (bounds the hashing work per request).
pub const MAX_CHARS: usize = 256;

/// A password that meets the length rule. Its `Debug` hides it.
pub struct Password(String);

/// Hashing failed (the blocking task died, or argon2 refused its input).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

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

    /// A random password nobody knows (for accounts that must exist but not be used).
    pub fn random() -> Self {
        Self(SaltString::generate(&mut OsRng).to_string())
    }

    /// Hash with argon2id into a PHC string, on a blocking thread: hashing takes tens of
    /// milliseconds of CPU and must not stall an async worker.
    pub async fn hash(self) -> Result<String, HashError> {
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(self.0.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| HashError(e.to_string()))
        })
        .await
        .map_err(|e| HashError(e.to_string()))?
    }
}
