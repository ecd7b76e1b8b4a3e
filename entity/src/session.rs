//! A sign-in session: a bearer token's digest, its owner and its expiry.
//!
//! The token itself is never stored: a [`Token`] is 256 random bits from the operating
//! system's CSPRNG, shown to the client once, and the table keeps its SHA-256 digest
//! ([`digest`]). A random token of that size needs no slow hash: finding a token from its
//! digest is as hard as guessing it. A session is revoked by deleting its row.

use sea_orm::entity::prelude::*;
use sha2::{Digest, Sha256};

/// A row of the `sessions` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// Positive, database-assigned identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The signed-in user; deleting the user deletes their sessions.
    pub user_id: i64,
    /// The token's SHA-256 digest in lower-case hex (64 characters); unique.
    #[sea_orm(unique, column_type = "String(StringLen::N(64))")]
    pub token_digest: String,
    /// When the user signed in (UTC).
    pub created_at: DateTimeUtc,
    /// After this instant the token is refused (UTC).
    pub expires_at: DateTimeUtc,
}

/// A session belongs to its user.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The user (`sessions.user_id` → `users.id`, cascading on delete).
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

/// The user a bearer token signs in, at `now`: the one whose session has the token's
/// `digest` and has not expired, if the account is active. One indexed lookup.
pub fn find_user(digest: &str, now: DateTimeUtc) -> Select<super::user::Entity> {
    super::user::Entity::find()
        .inner_join(Entity)
        .filter(Column::TokenDigest.eq(digest))
        .filter(Column::ExpiresAt.gt(now))
        .filter(super::user::Column::IsActive.eq(true))
}

/// The sessions that expired before `now` (run it with `.exec(db)` to purge them).
pub fn delete_expired(now: DateTimeUtc) -> sea_orm::DeleteMany<Entity> {
    Entity::delete_many().filter(Column::ExpiresAt.lte(now))
}

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A new bearer token: what the client is given, once. Its `Debug` hides it.
pub struct Token(String);

impl Token {
    /// 256 bits from the operating system's CSPRNG, in lower-case hex.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(hex::encode(bytes)))
    }

    /// The token as the client sends it (`Authorization: Bearer <token>`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the `sessions` table stores for this token.
    pub fn digest(&self) -> String {
        digest(&self.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The digest stored for `token`: SHA-256, lower-case hex. Look a token up by its digest
/// (an index lookup), never by comparing tokens.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_as_their_digest() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 2 * TOKEN_BYTES);
        assert_eq!(a.digest().len(), 64);
        assert_ne!(a.digest(), a.expose());
        assert_eq!(a.digest(), digest(a.expose()));
        assert_eq!(format!("{a:?}"), "Token(***)");
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
