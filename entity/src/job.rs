//! Background work any instance may do, kept in the database: a mail to send, the purge of
//! expired rows.
//!
//! A job is inserted in the same transaction as the change that causes it, so it exists
//! exactly when the change does. A worker claims due jobs (`state` pending, `run_at` past,
//! no live lease) by setting `locked_until` — its lease: if the instance dies, the job is
//! claimed again once the lease has passed — and counts `attempts`. A job that succeeds is
//! `done`; one that fails is tried again at a later `run_at`, or `failed` with its
//! `last_error` once it runs out of attempts or cannot succeed. A recurring job has a
//! `unique_key` (one row) and goes back to pending with a later `run_at` each time.

use sea_orm::entity::prelude::*;

/// A row of the `jobs` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    /// Positive, database-assigned identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// What to do (`mail`, `purge`): the worker's handler for it.
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub kind: String,
    /// The handler's input, as JSON.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// [`State::as_str`].
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub state: String,
    /// Not before this instant (UTC).
    pub run_at: DateTimeUtc,
    /// Attempts so far, this one included while it runs.
    pub attempts: i32,
    /// While later than now, an instance holds the job (UTC).
    pub locked_until: Option<DateTimeUtc>,
    /// Which instance holds or last held it.
    #[sea_orm(column_type = "String(StringLen::N(64))", nullable)]
    pub locked_by: Option<String>,
    /// Why the last attempt failed (never a secret).
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// A recurring job's name: one row per name.
    #[sea_orm(unique, column_type = "String(StringLen::N(64))", nullable)]
    pub unique_key: Option<String>,
    /// When it was queued (UTC).
    pub created_at: DateTimeUtc,
    /// When it was done or given up (UTC).
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// To run at `run_at` (or running, while its lease holds).
    Pending,
    /// Ran to completion.
    Done,
    /// Given up; `last_error` says why.
    Failed,
}

impl State {
    /// The value of the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// A new job of `kind` with `payload`, due at `run_at`.
pub fn new(kind: &str, payload: String, run_at: DateTimeUtc) -> ActiveModel {
    use sea_orm::ActiveValue::Set;
    ActiveModel {
        kind: Set(kind.to_owned()),
        payload: Set(payload),
        state: Set(State::Pending.as_str().to_owned()),
        run_at: Set(run_at),
        attempts: Set(0),
        created_at: Set(crate::now()),
        ..Default::default()
    }
}
