//! The change log of notes: one row per create, update or delete of a note, numbered per user
//! in the order the changes commit (`seq`: 1, 2, 3, … for each user).
//!
//! The database writes it, with triggers on `notes` (migration `m20261207_000013_note_changes`):
//! every program that writes a note logs its change, in the same transaction. A row holds the
//! note as the change left it, or no note for a deletion (a tombstone). Rows older than the
//! retention are purged ([`purge_before`]); [`change_counter::Model::kept_after`] then says
//! which numbers are gone.

use sea_orm::{
    ConnectionTrait, DbErr, QueryOrder, QuerySelect,
    entity::prelude::*,
    sea_query::{Expr, ExprTrait, Query},
};

use crate::{change_counter, note};

/// A row of the `note_changes` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "note_changes")]
pub struct Model {
    /// The owner of the note.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    /// The change's number among the owner's changes.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// The note changed.
    pub note_id: i64,
    /// Whether the change deleted the note (then the note's columns are empty).
    pub deleted: bool,
    #[sea_orm(column_type = "Text", nullable)]
    pub text: Option<String>,
    pub completed: Option<bool>,
    pub created_at: Option<DateTimeUtc>,
    pub updated_at: Option<DateTimeUtc>,
    pub version: Option<i64>,
    /// When the change was written (what the purge goes by).
    pub changed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The note as the change left it; `None` for a deletion.
    pub fn note(&self) -> Option<note::Model> {
        if self.deleted {
            return None;
        }
        Some(note::Model {
            id: self.note_id,
            user_id: self.user_id,
            text: self.text.clone()?,
            completed: self.completed?,
            created_at: self.created_at?,
            updated_at: self.updated_at?,
            version: self.version?,
        })
    }
}

/// `user`'s changes numbered above `since`, oldest first, at most `limit` — on MariaDB, only
/// up to what [`settled`] read.
pub fn after(user: i64, since: i64, limit: u64) -> Select<Entity> {
    Entity::find()
        .filter(Column::UserId.eq(user))
        .filter(Column::Seq.gt(since))
        .order_by_asc(Column::Seq)
        .limit(limit)
}

/// [`after`], only up to `until`.
pub fn after_until(user: i64, since: i64, until: i64, limit: u64) -> Select<Entity> {
    after(user, since, limit).filter(Column::Seq.lte(until))
}

/// MariaDB: `user`'s counter read with a shared lock, which waits for a write of theirs in
/// flight to end: every change numbered up to the `last_seq` it returns has committed, and a
/// read that starts after it sees them all.
///
/// InnoDB makes a committed transaction visible before it releases its locks, but building a
/// read view is not one atomic cut of the transactions committing meanwhile: under load a
/// reader could see change N+1 (committed just after N) and not N, and move past N for good.
/// Reading only up to this settled number rules it out. PostgreSQL's snapshots and SQLite's
/// single writer need no such step (and a PostgreSQL replica would refuse the lock).
pub fn settled(user: i64) -> Select<change_counter::Entity> {
    change_counter::Entity::find_by_id(user).lock_shared()
}

/// Remove the changes written before `before`, first raising each owner's
/// [`kept_after`](change_counter::Model::kept_after) to the highest number removed; the rows
/// removed. In that order a reader between the two statements meets a 410 a moment early,
/// never a missing change.
pub async fn purge_before<C: ConnectionTrait>(db: &C, before: DateTimeUtc) -> Result<u64, DbErr> {
    let old = || {
        Query::select()
            .from(Entity)
            .and_where(
                Expr::col((Entity, Column::UserId))
                    .equals((change_counter::Entity, change_counter::Column::UserId)),
            )
            .and_where(Expr::col((Entity, Column::ChangedAt)).lt(before))
            .to_owned()
    };
    let highest = old()
        .expr(Expr::col((Entity, Column::Seq)).max())
        .to_owned();
    let raise = Query::update()
        .table(change_counter::Entity)
        .value(
            change_counter::Column::KeptAfter,
            Expr::SubQuery(None, Box::new(highest.into())),
        )
        .and_where(Expr::exists(old().expr(Expr::val(1)).to_owned()))
        .to_owned();
    db.execute(&raise).await?;
    let removed = Entity::delete_many()
        .filter(Column::ChangedAt.lt(before))
        .exec(db)
        .await?;
    Ok(removed.rows_affected)
}
