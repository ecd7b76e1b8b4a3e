//! Each user's change counter: the number of their latest note change (`last_seq`) and the
//! highest number the purge has removed (`kept_after`). The row is made with the user, by a
//! trigger; the triggers that log a change add one to it (see [`crate::note_change`]).

use sea_orm::entity::prelude::*;

/// A row of the `change_counters` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "change_counters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    /// The number of the user's latest change (0: none yet).
    pub last_seq: i64,
    /// Changes numbered up to this one may have been purged: a reader that has seen less
    /// must start over.
    pub kept_after: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
