//! A token mailed to a user to reset their password or to verify their address.
//!
//! Like a session, the table keeps only the token's SHA-256 digest
//! ([`crate::session::digest`]); the token itself is in the mail's link, once. A token is
//! good for one [`Purpose`], one address, until `expires_at`, and once: using it sets
//! `used_at`. Tokens go with their user.

use sea_orm::entity::prelude::*;

/// A row of the `account_tokens` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "account_tokens")]
pub struct Model {
    /// Positive, database-assigned identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Whose account the token acts on; deleting the user deletes their tokens.
    pub user_id: i64,
    /// What the token does ([`Purpose::as_str`]).
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub purpose: String,
    /// The token's SHA-256 digest in lower-case hex (64 characters); unique.
    #[sea_orm(unique, column_type = "String(StringLen::N(64))")]
    pub token_digest: String,
    /// The address the token was mailed to: it acts only while the account still has it.
    #[sea_orm(column_type = "String(StringLen::N(254))")]
    pub email: String,
    /// When it was made (UTC).
    pub created_at: DateTimeUtc,
    /// After this instant the token is refused (UTC).
    pub expires_at: DateTimeUtc,
    /// When it was used, or made void by a newer one of the same purpose (UTC).
    pub used_at: Option<DateTimeUtc>,
}

/// A token belongs to its user.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The user (`account_tokens.user_id` → `users.id`, cascading on delete).
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

/// What a token does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Set a new password (`POST /password-resets/confirm`).
    PasswordReset,
    /// Confirm that the account's owner reads mail at its address.
    EmailVerification,
}

impl Purpose {
    /// The value of the `purpose` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }
}

/// The token with `digest` for `purpose`, if it can still be used at `now`: not used, not
/// expired.
pub fn find_usable(digest: &str, purpose: Purpose, now: DateTimeUtc) -> Select<Entity> {
    Entity::find()
        .filter(Column::TokenDigest.eq(digest))
        .filter(Column::Purpose.eq(purpose.as_str()))
        .filter(Column::UsedAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
}

/// Tokens that expired before `now` (run it with `.exec(db)` to purge them).
pub fn delete_expired(now: DateTimeUtc) -> sea_orm::DeleteMany<Entity> {
    Entity::delete_many().filter(Column::ExpiresAt.lte(now))
}
