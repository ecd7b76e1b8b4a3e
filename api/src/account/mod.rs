//! The account rules every program shares — the routes, the `api` CLI and the seed: what an
//! e-mail address, a name and a password may be, and the bounded argon2id hashing
//! ([`password`]), and the mails an account receives ([`mails`]). No HTTP and no database
//! here.

pub mod mails;
pub mod password;

use entity::user;
use validator::ValidateEmail;

pub use password::{HashError, Hasher, Password};

/// Most characters an e-mail address may have (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Most characters a user's name may have.
pub const MAX_NAME_CHARS: usize = 200;

/// `raw` as a stored e-mail address (trimmed, lower-cased), or why it is not one.
pub fn parse_email(raw: &str) -> Result<String, String> {
    let email = user::normalize_email(raw);
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(format!("must be at most {MAX_EMAIL_CHARS} characters long"));
    }
    if !email.validate_email() {
        return Err("must be a valid e-mail address".into());
    }
    Ok(email)
}
