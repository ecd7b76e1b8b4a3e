//! `GET /notes/changes`: the caller's note changes after a number, in order — what a client
//! that keeps a copy of its notes asks for to catch up (deletions included, as tombstones).
//!
//! The log is written by the database itself ([`entity::note_change`]); this route only reads
//! it, through the request's read path (so a read after one's own write sees it, on a replica
//! too).

use actix_web::{HttpRequest, HttpResponse};
use entity::{change_counter, note_change};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait};
use serde::Serialize;
use utoipa::ToSchema;

use super::NoteView;
use crate::{
    db::{RequestDb, Rows},
    http::{
        auth::CurrentUser,
        error::{ApiError, BadListQuery, Forgotten, SignedIn},
        pagination::ListQuery,
    },
};

/// One change of a note.
#[derive(Debug, Serialize, ToSchema)]
pub struct Change {
    /// The change's number: increasing per user in the order the changes committed.
    pub seq: i64,
    /// The note changed.
    pub id: i64,
    /// Whether the change deleted the note.
    pub deleted: bool,
    /// The note as the change left it; `null` when deleted.
    pub note: Option<NoteView>,
}

impl From<note_change::Model> for Change {
    fn from(change: note_change::Model) -> Self {
        Self {
            seq: change.seq,
            id: change.note_id,
            deleted: change.deleted,
            note: change.note().map(NoteView::from),
        }
    }
}

/// What `GET /notes/changes` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangesPage {
    /// The changes numbered above `since`, oldest first (each listed, not merged per note).
    pub changes: Vec<Change>,
    /// The `since` to ask with next: the last change's number (`since` itself when none).
    pub next: i64,
    /// Whether more changes follow `next` already.
    pub more: bool,
}

/// Where the log is read: a request's handle, or the primary's pool (an event stream between
/// its events, outside any request).
pub(crate) trait LogSource {
    fn backend(&self) -> DbBackend;
    async fn rows<Q: Rows>(&self, query: Q) -> Result<Vec<Q::Item>, DbErr>;
}

impl LogSource for RequestDb {
    fn backend(&self) -> DbBackend {
        RequestDb::backend(self)
    }

    async fn rows<Q: Rows>(&self, query: Q) -> Result<Vec<Q::Item>, DbErr> {
        self.all(query).await
    }
}

impl LogSource for DatabaseConnection {
    fn backend(&self) -> DbBackend {
        self.get_database_backend()
    }

    async fn rows<Q: Rows>(&self, query: Q) -> Result<Vec<Q::Item>, DbErr> {
        let statement = query.statement(self.get_database_backend());
        self.query_all_raw(statement)
            .await?
            .into_iter()
            .map(Q::decode)
            .collect()
    }
}

/// `user`'s changes after `since`, at most `limit`, in order; on MariaDB only those that have
/// settled (see `note_change::settled`).
pub(crate) async fn read_after(
    db: &impl LogSource,
    user: i64,
    since: i64,
    limit: u64,
) -> Result<Vec<note_change::Model>, DbErr> {
    if db.backend() == DbBackend::MySql {
        let until = db
            .rows(note_change::settled(user))
            .await?
            .first()
            .map_or(0, |counter| counter.last_seq);
        db.rows(note_change::after_until(user, since, until, limit))
            .await
    } else {
        db.rows(note_change::after(user, since, limit)).await
    }
}

/// The caller's changes after `since`, at most `limit`; 410 when some of them are no longer
/// kept.
pub async fn after(
    db: &RequestDb,
    user: i64,
    since: i64,
    limit: u64,
) -> Result<ChangesPage, ApiError> {
    let mut changes = read_after(db, user, since, limit + 1).await?;
    // The horizon is read after the changes: a purge between the two reads makes the answer
    // a 410 a moment early, never a page with a hole.
    if since > 0 {
        let kept_after = db
            .all(change_counter::Entity::find_by_id(user))
            .await?
            .first()
            .map_or(0, |counter| counter.kept_after);
        if since < kept_after {
            return Err(ApiError::Gone(
                "changes this old are no longer kept; start over with since=0 and a full list",
            ));
        }
    }
    let more = changes.len() as u64 > limit;
    changes.truncate(limit as usize);
    let next = changes.last().map_or(since, |change| change.seq);
    Ok(ChangesPage {
        changes: changes.into_iter().map(Change::from).collect(),
        next,
        more,
    })
}

/// Changes of one's notes since a number
///
/// The caller's note changes numbered above `since` (0: from the oldest kept), oldest first,
/// at most `limit`: each create, update and delete, and each note of a bulk create, as
/// `{seq, id, deleted, note}` — `note` as the change left it, `null` for a deletion. Numbers
/// increase per user in the order the changes committed, so a client that asks again with
/// `since=next` never misses one. Deletions are kept `CHANGES_RETENTION_S` (30 days by
/// default); a `since` older than that is 410: start over with `since=0` and a full list.
#[utoipa::path(
    get, path = "/notes/changes", tag = "notes",
    params(
        ("since" = Option<i64>, Query, minimum = 0, description = "the number of the last change seen (0, the default: from the oldest kept)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "at most this many changes (default 100)"),
    ),
    responses(
        (status = 200, description = "the changes after `since`, in order", body = ChangesPage),
        BadListQuery,
        Forgotten,
        SignedIn,
    )
)]
pub async fn changes(
    me: CurrentUser,
    req: HttpRequest,
    db: RequestDb,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let since = query.integer_param("since")?.unwrap_or(0);
    let page = after(&db, me.id(), since, query.limit).await?;
    Ok(HttpResponse::Ok().json(page))
}
