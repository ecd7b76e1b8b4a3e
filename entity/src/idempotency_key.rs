//! An idempotency key: the first answer to a request sent with an `Idempotency-Key`, kept so
//! that a retry of the same request gets the same answer instead of doing the work twice.
//!
//! A key is unique within its scope ([`Scope`]): one user's keys never meet another's. A row
//! is written once, with its answer, in the same transaction as the request's own writes — so
//! the answer is stored exactly when the work is, and a request that failed or never finished
//! leaves nothing behind. Two requests with one key cannot both store it: the unique index on
//! `(scope, key)` lets one commit and refuses the other.
//!
//! The request itself is kept only as a [`fingerprint`]: a SHA-256 digest of what was asked,
//! never a password (a sign-up's password is kept as the account keeps it, an argon2id hash).

use sea_orm::entity::prelude::*;
use sha2::{Digest, Sha256};

/// A row of the `idempotency_keys` table. Its `Debug` leaves the password hash out.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// Positive, database-assigned identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Whose key it is ([`Scope::as_str`]); `(scope, key)` is unique.
    #[sea_orm(column_type = "String(StringLen::N(40))")]
    pub scope: String,
    /// The user of a user's scope; deleting the user deletes their keys.
    pub user_id: Option<i64>,
    /// The key as the client sent it (1 to 255 visible ASCII characters).
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub key: String,
    /// [`fingerprint`] of the first request: a repeat must match it.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub fingerprint: String,
    /// The stored answer's HTTP status.
    pub status: i32,
    /// The stored answer's `Location`, if any.
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub location: Option<String>,
    /// The stored answer's `ETag`, if any.
    #[sea_orm(column_type = "String(StringLen::N(64))", nullable)]
    pub etag: Option<String>,
    /// The stored answer's JSON body.
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// For a sign-up, the password as the account's argon2id hash (never the password): a
    /// repeat is the same request only with the same password.
    #[sea_orm(column_type = "Text", nullable)]
    pub password_hash: Option<String>,
    /// When the answer was stored (UTC).
    pub created_at: DateTimeUtc,
    /// After this instant the key is forgotten (UTC).
    pub expires_at: DateTimeUtc,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .field("user_id", &self.user_id)
            .field("key", &self.key)
            .field("fingerprint", &self.fingerprint)
            .field("status", &self.status)
            .field("location", &self.location)
            .field("etag", &self.etag)
            .field("body", &self.body)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A key belongs to its user, if it is a user's.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The user (`idempotency_keys.user_id` → `users.id`, cascading on delete).
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// Whose keys a key is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A signed-in user's requests.
    User(i64),
    /// Sign-ups: nobody is signed in, the key alone identifies the request.
    SignUp,
}

impl Scope {
    /// The scope as stored.
    pub fn as_str(self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::SignUp => "sign-up".to_owned(),
        }
    }

    /// The user the key belongs to, if any.
    pub fn user_id(self) -> Option<i64> {
        match self {
            Self::User(id) => Some(id),
            Self::SignUp => None,
        }
    }
}

/// The key `key` of `scope`, if it is stored.
pub fn find(scope: Scope, key: &str) -> Select<Entity> {
    Entity::find()
        .filter(Column::Scope.eq(scope.as_str()))
        .filter(Column::Key.eq(key))
}

/// The keys that expired before `now` (run it with `.exec(db)` to purge them).
pub fn delete_expired(now: DateTimeUtc) -> sea_orm::DeleteMany<Entity> {
    Entity::delete_many().filter(Column::ExpiresAt.lte(now))
}

/// Whether a stored key no longer holds at `now` (it expired, and awaits the purge).
pub fn is_expired(key: &Model, now: DateTimeUtc) -> bool {
    key.expires_at <= now
}

/// A request's fingerprint: the SHA-256 of its parts (say the method and route, then a
/// canonical form of the body), each length-prefixed so that no two lists of parts meet.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_lists_of_parts_apart() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
        assert_eq!(fingerprint(&[]).len(), 64);
    }

    #[test]
    fn scopes_never_meet() {
        assert_ne!(Scope::User(1).as_str(), Scope::User(11).as_str());
        assert_ne!(Scope::User(1).as_str(), Scope::SignUp.as_str());
        assert_eq!(Scope::SignUp.user_id(), None);
    }

    #[test]
    fn a_key_expires_at_its_instant() {
        let now = crate::now();
        let key = Model {
            id: 1,
            scope: Scope::SignUp.as_str(),
            user_id: None,
            key: "k".into(),
            fingerprint: fingerprint(&["x"]),
            status: 201,
            location: None,
            etag: None,
            body: "{}".into(),
            password_hash: None,
            created_at: now,
            expires_at: now + chrono::Duration::days(1),
        };
        assert!(!is_expired(&key, now));
        assert!(!is_expired(&key, now + chrono::Duration::hours(23)));
        assert!(is_expired(&key, now + chrono::Duration::days(1)));
    }
}
