//! A note: a short text that can be marked as completed, owned by one user.

use sea_orm::entity::prelude::*;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, FromQueryResult, QuerySelect, SelectModel, Selector,
};

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

/// A note as lists show it: every column but `version`, which only a single note's `ETag`
/// needs. Select it with [`Listed::select`]: one column fewer to read, and its columns read
/// by position rather than looked up by name (bench/PERFORMANCE.md, "list decoding").
/// Its fields are [`Model`]'s, in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: i64,
    pub user_id: i64,
    pub text: String,
    pub completed: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl Listed {
    /// The columns [`Listed::select`] selects, in this order: the order the fields are read
    /// in by position. Also the first six columns of the entity, so a full `note::Entity`
    /// select decodes into `Listed` too.
    pub const COLUMNS: [Column; 6] = [
        Column::Id,
        Column::UserId,
        Column::Text,
        Column::Completed,
        Column::CreatedAt,
        Column::UpdatedAt,
    ];

    /// `select` with only [`Listed::COLUMNS`] (its filters, order and limit kept), its rows
    /// decoded into `Listed`.
    pub fn select(select: Select<Entity>) -> Selector<SelectModel<Self>> {
        select.select_only().columns(Self::COLUMNS).into_model()
    }
}

/// A stored note as a list shows it (its `version` left out).
impl From<Model> for Listed {
    fn from(note: Model) -> Self {
        Self {
            id: note.id,
            user_id: note.user_id,
            text: note.text,
            completed: note.completed,
            created_at: note.created_at,
            updated_at: note.updated_at,
        }
    }
}

impl FromQueryResult for Listed {
    /// Without a prefix, by position: the row is what [`Listed::select`] selects, its
    /// columns in the order of [`Listed::COLUMNS`] (the unit tests below and
    /// `tests/tests/note_rows.rs` hold the two equal on every backend). With a prefix (the
    /// model is one of several in a row), by name.
    fn from_query_result(row: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        if !pre.is_empty() {
            return Ok(Self {
                id: row.try_get(pre, Column::Id.as_str())?,
                user_id: row.try_get(pre, Column::UserId.as_str())?,
                text: row.try_get(pre, Column::Text.as_str())?,
                completed: row.try_get(pre, Column::Completed.as_str())?,
                created_at: row.try_get(pre, Column::CreatedAt.as_str())?,
                updated_at: row.try_get(pre, Column::UpdatedAt.as_str())?,
            });
        }
        Ok(Self {
            id: row.try_get_by_index(0)?,
            user_id: row.try_get_by_index(1)?,
            text: row.try_get_by_index(2)?,
            completed: row.try_get_by_index(3)?,
            created_at: row.try_get_by_index(4)?,
            updated_at: row.try_get_by_index(5)?,
        })
    }
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

#[cfg(test)]
mod tests {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{
        ActiveModelBehavior, ActiveModelTrait, Database, DbBackend, QueryOrder, QueryTrait,
        Statement,
    };

    use super::*;

    /// [`Listed::COLUMNS`] as each backend quotes them: the order
    /// [`Listed::from_query_result`] reads them in (id 0, user_id 1, text 2, completed 3,
    /// created_at 4, updated_at 5).
    fn read_order(backend: DbBackend) -> String {
        let q = if backend == DbBackend::MySql {
            '`'
        } else {
            '"'
        };
        [
            "id",
            "user_id",
            "text",
            "completed",
            "created_at",
            "updated_at",
        ]
        .map(|column| format!("{q}notes{q}.{q}{column}{q}"))
        .join(", ")
    }

    #[test]
    fn listed_selects_its_columns_in_the_order_it_reads_them_on_every_backend() {
        for backend in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            let select = Entity::find()
                .filter(Column::UserId.eq(7))
                .filter(Column::Id.gt(3))
                .order_by_desc(Column::Id)
                .limit(100);
            let listed = Listed::select(select.clone()).into_statement(backend);
            let sql = listed.sql;
            let list = sql
                .strip_prefix("SELECT ")
                .and_then(|rest| rest.split_once(" FROM "))
                .map(|(list, _)| list);
            assert_eq!(
                list,
                Some(read_order(backend).as_str()),
                "{backend:?}: {sql}"
            );
            // Everything but the column list is the select's own.
            let full = select.build(backend);
            let (_, rest) = full.sql.split_once(" FROM ").unwrap();
            assert!(
                sql.ends_with(&format!(" FROM {rest}")),
                "{backend:?}: {sql}"
            );
            assert_eq!(listed.values, full.values, "{backend:?}");
            // The entity's own select starts with the same columns in the same order.
            assert!(
                full.sql
                    .starts_with(&format!("SELECT {}, ", read_order(backend))),
                "{backend:?}: {}",
                full.sql
            );
        }
    }

    #[tokio::test]
    async fn listed_rows_decode_as_the_stored_rows() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let owner = crate::user::ActiveModel {
            email: sea_orm::ActiveValue::Set("a@example.com".into()),
            hashed_password: sea_orm::ActiveValue::Set("x".into()),
            ..crate::user::ActiveModel::new()
        }
        .insert(&db)
        .await
        .unwrap();
        let mut stored = Vec::new();
        for (text, completed) in [("first", false), ("second", true), ("", false)] {
            let note = ActiveModel {
                user_id: Set(owner.id),
                text: Set(text.into()),
                completed: Set(completed),
                ..ActiveModel::new()
            }
            .insert(&db)
            .await
            .unwrap();
            stored.push(Listed::from(note));
        }
        let find = || Entity::find().order_by_asc(Column::Id);

        // By position: the narrowed select, and the entity's own (whose columns start alike).
        let listed = Listed::select(find()).all(&db).await.unwrap();
        assert_eq!(listed, stored);
        let from_full = find().into_model::<Listed>().all(&db).await.unwrap();
        assert_eq!(from_full, stored);

        // With a prefix, by name: here in another order, after an extra column.
        let mut select = find().select_only().column_as(Column::Version, "n_version");
        for column in Listed::COLUMNS.into_iter().rev() {
            select = select.column_as(column, format!("n_{}", column.as_str()));
        }
        let statement: Statement = select.build(DbBackend::Sqlite);
        let rows = db.query_all_raw(statement).await.unwrap();
        let by_name: Vec<Listed> = rows
            .iter()
            .map(|row| Listed::from_query_result(row, "n_").unwrap())
            .collect();
        assert_eq!(by_name, stored);
    }
}
