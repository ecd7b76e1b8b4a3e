//! A user account: a unique e-mail address, an argon2id password hash, and whether the
//! account is active and an administrator.

use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue, ActiveValue::Set, ConnectionTrait};

/// A row of the `users` table. Its `Debug` leaves the password hash out.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// Positive, database-assigned identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Trimmed, lower-cased e-mail address; unique across users.
    #[sea_orm(unique, column_type = "String(StringLen::N(254))")]
    pub email: String,
    /// Optional display name.
    #[sea_orm(column_type = "String(StringLen::N(200))", nullable)]
    pub name: Option<String>,
    /// The password as an argon2id PHC string (`$argon2id$…`); never the password itself.
    #[sea_orm(column_type = "Text")]
    pub hashed_password: String,
    /// Whether the account may be used; `true` when not given.
    pub is_active: bool,
    /// Whether the user administers accounts; `false` when not given.
    pub is_admin: bool,
    /// Whether the owner of `email` followed a verification link sent to it; `false` when
    /// not given, and again whenever the address changes.
    pub email_verified: bool,
    /// When the user was inserted (UTC).
    pub created_at: DateTimeUtc,
    /// When the user was last inserted or updated (UTC).
    pub updated_at: DateTimeUtc,
    /// 1 when inserted, one more on every update ([`crate::next_version`]): what an HTTP
    /// `ETag` is made of, and what a conditional update compares.
    pub version: i64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("hashed_password", &"***")
            .field("is_active", &self.is_active)
            .field("is_admin", &self.is_admin)
            .field("email_verified", &self.email_verified)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("version", &self.version)
            .finish()
    }
}

/// A user owns notes, sessions and idempotency keys; all go when the user is deleted.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The user's notes.
    #[sea_orm(has_many = "super::note::Entity")]
    Note,
    /// The user's sign-in sessions.
    #[sea_orm(has_many = "super::session::Entity")]
    Session,
    /// The user's idempotency keys.
    #[sea_orm(has_many = "super::idempotency_key::Entity")]
    IdempotencyKey,
}

impl Related<super::note::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Note.def()
    }
}

impl Related<super::session::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Session.def()
    }
}

/// The form in which e-mail addresses are stored and compared: trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[async_trait::async_trait]
impl ActiveModelBehavior for ActiveModel {
    /// A new user is active and not an administrator unless told otherwise.
    fn new() -> Self {
        Self {
            is_active: Set(true),
            is_admin: Set(false),
            email_verified: Set(false),
            ..ActiveModelTrait::default()
        }
    }

    /// Normalises the e-mail address, stamps `created_at` (insert) and `updated_at`, and
    /// advances `version`.
    async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        if let ActiveValue::Set(email) = &self.email {
            let normalized = normalize_email(email);
            if &normalized != email {
                self.email = Set(normalized);
            }
        }
        let now = crate::now();
        if insert {
            self.created_at = Set(now);
            if self.is_active.is_not_set() {
                self.is_active = Set(true);
            }
            if self.is_admin.is_not_set() {
                self.is_admin = Set(false);
            }
            if self.email_verified.is_not_set() {
                self.email_verified = Set(false);
            }
        }
        self.updated_at = Set(if insert {
            now
        } else {
            crate::next_update_time(self.updated_at.try_as_ref().copied())
        });
        self.version = crate::next_version(&self.version, insert);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{Model, normalize_email};

    #[test]
    fn normalize_email_trims_and_lowercases() {
        assert_eq!(
            normalize_email("  John.Doe@Example.COM \n"),
            "john.doe@example.com"
        );
    }

    #[test]
    fn debug_leaves_the_password_hash_out() {
        let now = crate::now();
        let user = Model {
            id: 1,
            email: "a@example.com".into(),
            name: None,
            hashed_password: "$argon2id$v=19$secret-hash".into(),
            is_active: true,
            is_admin: false,
            email_verified: false,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let shown = format!("{user:?}");
        assert!(!shown.contains("secret-hash"), "{shown}");
        assert!(shown.contains("a@example.com"), "{shown}");
    }
}
