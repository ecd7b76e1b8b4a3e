//! A note: a short text that can be marked as completed, owned by one user.

use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectionTrait};

/// A row of the `notes` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notes")]
pub struct Model {
    /// Positive, database-assigned identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The user who owns the note; deleting the user deletes the note.
    pub user_id: i64,
    /// The note's text.
    #[sea_orm(column_type = "Text")]
    pub text: String,
    /// Whether the note is done; `false` when not given.
    pub completed: bool,
    /// When the note was inserted (UTC).
    pub created_at: DateTimeUtc,
    /// When the note was last inserted or updated (UTC).
    pub updated_at: DateTimeUtc,
    /// 1 when inserted, one more on every update ([`crate::next_version`]): what an HTTP
    /// `ETag` is made of, and what a conditional update compares.
    pub version: i64,
}

/// A note belongs to its owner.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The owner (`notes.user_id` → `users.id`, cascading on delete).
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

#[async_trait::async_trait]
impl ActiveModelBehavior for ActiveModel {
    /// A new note is not completed unless told otherwise.
    fn new() -> Self {
        Self {
            completed: Set(false),
            ..ActiveModelTrait::default()
        }
    }

    /// Stamps `created_at` on insert and `updated_at` on every save; sets `version` to 1 on
    /// insert and one more on every update.
    async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        let now = crate::now();
        if insert {
            self.created_at = Set(now);
            if self.completed.is_not_set() {
                self.completed = Set(false);
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
