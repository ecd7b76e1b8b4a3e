//! A user account: a unique e-mail address and an argon2id password hash.

use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue, ActiveValue::Set, ConnectionTrait};

/// A row of the `users` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
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
    /// When the user was inserted (UTC).
    pub created_at: DateTimeUtc,
    /// When the user was last inserted or updated (UTC).
    pub updated_at: DateTimeUtc,
}

/// Users have no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

/// The form in which e-mail addresses are stored and compared: trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[async_trait::async_trait]
impl ActiveModelBehavior for ActiveModel {
    /// A new user is active unless told otherwise.
    fn new() -> Self {
        Self {
            is_active: Set(true),
            ..ActiveModelTrait::default()
        }
    }

    /// Normalises the e-mail address and stamps `created_at` (insert) and `updated_at`.
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
        }
        self.updated_at = Set(if insert {
            now
        } else {
            crate::next_update_time(self.updated_at.try_as_ref().copied())
        });
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn normalize_email_trims_and_lowercases() {
        assert_eq!(
            normalize_email("  John.Doe@Example.COM \n"),
            "john.doe@example.com"
        );
    }
}
