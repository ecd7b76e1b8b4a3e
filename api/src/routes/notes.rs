//! `/notes`: the query shapes of the original pattern, one per route — fetch-all (list),
//! fetch-one (get), execute (create, update, delete), execute-many (bulk) and iterate (export).
//!
//! Every route takes the [`CurrentUser`] and every statement is scoped to the caller's notes:
//! another user's note is not found (404), whoever asks — admins included.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::{
    idempotency_key::{self, Scope},
    note,
};
use futures_util::StreamExt;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition,
    ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    db::RequestDb,
    http::{
        auth::CurrentUser,
        conditional::{self, IfMatch, IfNoneMatch},
        error::{
            ApiError, BadBody, BadBodyOrNotFound, BadListQuery, Conditional, FieldError,
            Idempotent, NotFound, SignedIn, Throttled, Unavailable,
        },
        input::{Fields, FromJson, Json, PathId, join},
        pagination::ListQuery,
    },
    idempotency::{Answer, IdempotencyKey},
    limits::ExportRefused,
    openapi::{IdempotencyKeyHeader, IfMatchHeader, IfNoneMatchHeader},
    state::AppState,
};

pub const MAX_TEXT_CHARS: usize = 10_000;
pub const MAX_BULK_ITEMS: usize = 5000;
/// Rows per INSERT in a bulk request: 5 binds each keeps every backend far below its limit.
const BULK_BATCH: usize = 500;
/// Export lines are sent in chunks of about this size: one write per row would cost a
/// syscall and a frame each.
const EXPORT_CHUNK_BYTES: usize = 32 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/notes")
            .route(web::get().to(list))
            .route(web::post().to(create))
            .default_service(crate::routes::allow("GET, POST")),
    )
    .service(
        super::resource("/notes/bulk")
            .route(web::post().to(bulk_create))
            .default_service(crate::routes::allow("POST")),
    )
    .service(
        super::resource("/notes/export")
            .route(web::get().to(export))
            .default_service(crate::routes::allow("GET")),
    )
    .service(
        super::resource("/notes/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete))
            .default_service(crate::routes::allow("GET, PATCH, DELETE")),
    );
}

/// A note as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Note)]
pub struct NoteView {
    /// Positive, assigned by the server.
    pub id: i64,
    /// The owner: the user who created the note.
    pub user_id: i64,
    pub text: String,
    pub completed: bool,
    /// When the note was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When the note last changed (RFC 3339, UTC); advances on every change.
    pub updated_at: DateTime<Utc>,
}

impl From<note::Model> for NoteView {
    fn from(note: note::Model) -> Self {
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

/// A note as lists and exports read it (every column but `version`).
impl From<note::Listed> for NoteView {
    fn from(note: note::Listed) -> Self {
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

/// `POST /notes` body (also each item of `POST /notes/bulk`).
#[derive(Clone, ToSchema)]
pub struct NewNote {
    /// 1 to 10 000 characters.
    #[schema(min_length = 1, max_length = 10000)]
    pub text: String,
    #[schema(default = false, required = false)]
    pub completed: bool,
}

impl FromJson for NewNote {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let text = fields.required_string("text");
        let completed = fields.optional_bool("completed");
        if let Some(text) = &text {
            fields.check_text("text", text, 1, MAX_TEXT_CHARS);
        }
        fields.finish(|| {
            Some(Self {
                text: text?,
                completed: completed.unwrap_or(false),
            })
        })
    }
}

impl NewNote {
    /// The note as one fingerprint part: the same for every JSON that parses to it.
    fn canonical(&self) -> String {
        format!("{}:{}", self.completed, self.text)
    }

    fn into_active_model(self, owner: i64) -> note::ActiveModel {
        note::ActiveModel {
            user_id: Set(owner),
            text: Set(self.text),
            completed: Set(self.completed),
            ..note::ActiveModel::new()
        }
    }
}

/// `POST /notes/bulk` body: 1..=5000 notes.
#[derive(ToSchema)]
#[schema(min_items = 1, max_items = 5000)]
pub struct NewNotes(pub Vec<NewNote>);

impl FromJson for NewNotes {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let Value::Array(items) = value else {
            return Err(vec![FieldError::new(
                "body",
                "must be a JSON array of notes",
            )]);
        };
        if items.is_empty() || items.len() > MAX_BULK_ITEMS {
            return Err(vec![FieldError::new(
                "body",
                format!("must hold 1 to {MAX_BULK_ITEMS} notes"),
            )]);
        }
        let mut notes = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match NewNote::from_json(item, &join(path, &format!("[{i}]"))) {
                Ok(note) => notes.push(note),
                Err(mut item_errors) => errors.append(&mut item_errors),
            }
        }
        if errors.is_empty() {
            Ok(Self(notes))
        } else {
            Err(errors)
        }
    }
}

/// `PATCH /notes/{id}` body: the fields to change.
#[derive(ToSchema)]
pub struct NotePatch {
    #[schema(min_length = 1, max_length = 10000, required = false, nullable = false)]
    pub text: Option<String>,
    #[schema(required = false, nullable = false)]
    pub completed: Option<bool>,
}

impl FromJson for NotePatch {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let text = fields.optional_string("text");
        let completed = fields.optional_bool("completed");
        if let Some(text) = &text {
            fields.check_text("text", text, 1, MAX_TEXT_CHARS);
        }
        fields.finish(|| Some(Self { text, completed }))
    }
}

/// List notes
///
/// A page of notes in id order (oldest first, or newest first with `order=desc`),
/// optionally only the completed (or open) ones. A full page
/// carries `Link: <…>; rel="next"`: follow it to the next page (keyset paging, so notes
/// added meanwhile are neither skipped nor repeated).
#[utoipa::path(
    get, path = "/notes", tag = "notes",
    params(
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "page size (default 100)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "return notes with a larger id than this one (the last id of the previous page)"),
        ("completed" = Option<bool>, Query, description = "only notes in this state"),
        ("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "`asc` (default: oldest first) or `desc` (newest first; `after` then returns smaller ids)"),
    ),
    responses(
        (status = 200, description = "the page, in id order", body = [NoteView],
            headers(("link" = String, description = "`<…>; rel=\"next\"` when the page is full"))),
        BadListQuery,
        SignedIn,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    me: CurrentUser,
    req: HttpRequest,
    db: RequestDb,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let completed = query.bool_param("completed")?;
    let newest_first = query.newest_first()?;
    let mut select = owned_by(&me).limit(query.limit);
    select = if newest_first {
        select.order_by_desc(note::Column::Id)
    } else {
        select.order_by_asc(note::Column::Id)
    };
    if let Some(after) = query.after {
        let beyond = if newest_first {
            note::Column::Id.lt(after)
        } else {
            note::Column::Id.gt(after)
        };
        select = select.filter(beyond);
    }
    if let Some(completed) = completed {
        select = select.filter(note::Column::Completed.eq(completed));
    }
    // Only the columns a page shows, read by position (bench/PERFORMANCE.md, "list decoding").
    let notes: Vec<NoteView> = db
        .all(note::Listed::select(select))
        .await?
        .into_iter()
        .map(NoteView::from)
        .collect();
    let last_id = notes.last().map(|n| n.id);
    Ok(query.respond(&req, &notes, last_id))
}

/// Create a note
///
/// Answers 201 with the stored note and its `Location`.
#[utoipa::path(
    post, path = "/notes", tag = "notes",
    params(IdempotencyKeyHeader),
    request_body = NewNote,
    responses(
        (status = 201, description = "created (or, with `Idempotent-Replayed: true`, the answer to the first request with this `Idempotency-Key`)", body = NoteView,
            headers(
                ("location" = String, description = "/notes/{id}"),
                ("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
                ("etag" = String, description = "the note's current tag, for `If-Match`"),
            )),
        BadBody,
        Idempotent,
        SignedIn,
    ),
    security(("bearer" = []))
)]
pub async fn create(
    me: CurrentUser,
    db: RequestDb,
    key: Result<IdempotencyKey, ApiError>,
    new: Result<Json<NewNote>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The body's error comes after the caller's: an anonymous bad body is 401, not 422.
    let Json(new) = new?;
    let fingerprint = || idempotency_key::fingerprint(&["POST /notes", &new.canonical()]);
    let Some(keyed) = key?.enter(Scope::User(me.id()), fingerprint)? else {
        let note = db.insert(new.into_active_model(me.id())).await?;
        return Ok(created(note)?.into_response());
    };
    let model = new.into_active_model(me.id());
    let outcome = keyed
        .run(&db, async |txn| created(model.clone().insert(txn).await?))
        .await?;
    Ok(outcome.into_response())
}

/// 201 with the note, its `Location` and its `ETag`.
fn created(note: note::Model) -> Result<Answer, ApiError> {
    let version = note.version;
    let view = NoteView::from(note);
    Answer::created(Some(format!("/notes/{}", view.id)), Some(version), &view)
}

/// Get a note
#[utoipa::path(
    get, path = "/notes/{id}", tag = "notes",
    params(("id" = i64, Path, minimum = 1, description = "note id"), IfNoneMatchHeader),
    responses(
        (status = 200, description = "the note", body = NoteView,
            headers(("etag" = String, description = "the note's current tag"))),
        (status = 304, description = "not modified: `If-None-Match` has the current tag"),
        NotFound,
        SignedIn,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    me: CurrentUser,
    db: RequestDb,
    cached: IfNoneMatch,
    id: Result<PathId, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // Taken as a `Result` so the caller is checked first: an anonymous bad id is 401.
    let PathId(id) = id?;
    let note = find_owned(&db, &me, id).await?.ok_or(ApiError::NotFound)?;
    Ok(cached.respond(note.version, NoteView::from(note)))
}

/// The caller's note `id`, if there is one.
async fn find_owned(
    db: &RequestDb,
    me: &CurrentUser,
    id: i64,
) -> Result<Option<note::Model>, DbErr> {
    Ok(db
        .find_by_id::<note::Entity>(id)
        .await?
        .filter(|note| note.user_id == me.id()))
}

/// Change a note
///
/// Changes the text, the state, or both; `updated_at` advances, `created_at` stays. A body
/// with neither field changes nothing but `updated_at`.
#[utoipa::path(
    patch, path = "/notes/{id}", tag = "notes",
    params(("id" = i64, Path, minimum = 1, description = "note id"), IfMatchHeader),
    request_body = NotePatch,
    responses(
        (status = 200, description = "the changed note", body = NoteView,
            headers(("etag" = String, description = "the note's new tag"))),
        BadBodyOrNotFound,
        Conditional,
        SignedIn,
    ),
    security(("bearer" = []))
)]
pub async fn update(
    me: CurrentUser,
    db: RequestDb,
    condition: IfMatch,
    patch: Result<Json<NotePatch>, ApiError>,
    id: Result<PathId, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let Json(patch) = patch?;
    // After the body, so a bad body is reported (422) whatever the id.
    let PathId(id) = id?;
    // Read, change, and write back only if the note is still at the version read
    // (compare-and-set): a concurrent change makes the write miss, and the next round
    // reads that change — 404 if it was a delete, 412 if `If-Match` no longer holds,
    // else the patch applies on top of it.
    for _ in 0..UPDATE_ATTEMPTS {
        let current = find_owned(&db, &me, id).await?.ok_or(ApiError::NotFound)?;
        if !condition.holds(current.version) {
            return Err(ApiError::PreconditionFailed);
        }
        let read_at = current.version;
        let mut note = current.into_active_model();
        if let Some(text) = &patch.text {
            note.text = Set(text.clone());
        }
        if let Some(completed) = patch.completed {
            note.completed = Set(completed);
        }
        let unchanged = Condition::all()
            .add(note::Column::Id.eq(id))
            .add(note::Column::UserId.eq(me.id()))
            .add(note::Column::Version.eq(read_at));
        if let Some(saved) = db.update_where(note, unchanged).await? {
            return Ok(
                conditional::tagged(HttpResponse::Ok(), saved.version).json(NoteView::from(saved))
            );
        }
    }
    Err(ApiError::Conflict(
        "the note kept changing while this change was applied; retry".into(),
    ))
}

/// Rounds of read and compare-and-set a `PATCH` tries before answering 409: each round is
/// lost only to a change that committed meanwhile.
const UPDATE_ATTEMPTS: usize = 5;

/// Delete a note
#[utoipa::path(
    delete, path = "/notes/{id}", tag = "notes",
    params(("id" = i64, Path, minimum = 1, description = "note id"), IfMatchHeader),
    responses(
        (status = 204, description = "deleted"),
        NotFound,
        Conditional,
        SignedIn,
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    me: CurrentUser,
    db: RequestDb,
    condition: IfMatch,
    id: Result<PathId, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let PathId(id) = id?;
    let mut delete = note::Entity::delete_many()
        .filter(note::Column::Id.eq(id))
        .filter(note::Column::UserId.eq(me.id()));
    if let Some(versions) = condition.versions() {
        delete = delete.filter(note::Column::Version.is_in(versions.iter().copied()));
    }
    if db.execute(delete).await? == 0 {
        // Nothing deleted: 412 if the note is there at another version, else 404.
        return match condition.versions() {
            Some(_) if find_owned(&db, &me, id).await?.is_some() => {
                Err(ApiError::PreconditionFailed)
            }
            _ => Err(ApiError::NotFound),
        };
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Create notes in bulk
///
/// Creates 1 to 5000 notes at once: all of them, or none when any is invalid (422, with
/// every bad item named by its index, e.g. `[3].text`). Answers the stored notes in the
/// order sent.
#[utoipa::path(
    post, path = "/notes/bulk", tag = "notes",
    params(IdempotencyKeyHeader),
    request_body(content = NewNotes, description = "1 to 5000 notes"),
    responses(
        (status = 201, description = "every note created, in the order sent (or, with `Idempotent-Replayed: true`, the answer to the first request with this `Idempotency-Key`)", body = [NoteView],
            headers(("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"))),
        BadBody,
        Idempotent,
        SignedIn,
    ),
    security(("bearer" = []))
)]
pub async fn bulk_create(
    me: CurrentUser,
    db: RequestDb,
    key: Result<IdempotencyKey, ApiError>,
    notes: Result<Json<NewNotes>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let Json(NewNotes(notes)) = notes?;
    let fingerprint = || {
        let canonical: Vec<String> = notes.iter().map(NewNote::canonical).collect();
        let mut parts = vec!["POST /notes/bulk"];
        parts.extend(canonical.iter().map(String::as_str));
        idempotency_key::fingerprint(&parts)
    };
    if let Some(keyed) = key?.enter(Scope::User(me.id()), fingerprint)? {
        let outcome = keyed
            .run(&db, async |txn| {
                let created = insert_notes(txn, me.id(), notes.clone()).await?;
                let views: Vec<NoteView> = created.into_iter().map(NoteView::from).collect();
                Answer::created(None, None, &views)
            })
            .await?;
        return Ok(outcome.into_response());
    }
    // Scoped: committed (or rolled back) here, before thousands of notes are serialised.
    let created = db
        .scoped(async |txn| insert_notes(txn, me.id(), notes).await)
        .await
        .map_err(|error| ApiError::from_db(&error, "bulk insert"))?;
    let views: Vec<NoteView> = created.into_iter().map(NoteView::from).collect();
    Ok(HttpResponse::Created().json(views))
}

/// Insert `notes` owned by `owner` in batches, returning them in input order with their ids.
///
/// Backends with `INSERT … RETURNING` (PostgreSQL, SQLite) take a batch per statement; MySQL
/// has no RETURNING, so each row is inserted on its own, still inside the one transaction.
pub async fn insert_notes(
    txn: &DatabaseTransaction,
    owner: i64,
    notes: Vec<NewNote>,
) -> Result<Vec<note::Model>, DbErr> {
    let mut models = Vec::with_capacity(notes.len());
    for new in notes {
        models.push(entity::prepare_insert(new.into_active_model(owner), txn).await?);
    }
    if !txn.support_returning() {
        let mut created = Vec::with_capacity(models.len());
        for model in models {
            created.push(model.insert(txn).await?);
        }
        return Ok(created);
    }
    let mut created = Vec::with_capacity(models.len());
    let mut models = models.into_iter().peekable();
    while models.peek().is_some() {
        let batch: Vec<_> = models.by_ref().take(BULK_BATCH).collect();
        let mut rows = note::Entity::insert_many(batch)
            .exec_with_returning(txn)
            .await?;
        rows.sort_by_key(|row| row.id);
        created.append(&mut rows);
    }
    Ok(created)
}

/// Export every note
///
/// Every note of the caller as NDJSON (one JSON object per line), in id order, streamed:
/// memory stays flat whatever the number of notes. A failure before the first byte is a 503
/// problem; one after it cuts the stream short, so a client should check it read every line
/// it expects. One export per user at a time (429), at most `EXPORT_MAX_CONCURRENT` in all
/// (503); a client that reads nothing for `EXPORT_IDLE_TIMEOUT_S` is cut off.
#[utoipa::path(
    get, path = "/notes/export", tag = "notes",
    responses(
        (status = 200, description = "every note, one JSON object per line, in id order",
            body = String, content_type = "application/x-ndjson"),
        Unavailable,
        SignedIn,
        Throttled,
    ),
    security(("bearer" = []))
)]
pub async fn export(
    me: CurrentUser,
    db: RequestDb,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let slot = state
        .exports
        .try_start(me.id())
        .map_err(|refused| match refused {
            ExportRefused::UserBusy => ApiError::TooManyRequests {
                detail: "an export of yours is still running; retry when it has finished".into(),
                retry_after_s: 1,
            },
            ExportRefused::AllBusy => ApiError::Busy("every export slot is busy"),
        })?;
    let notes = db.stream(note::Listed::select(
        owned_by(&me).order_by_asc(note::Column::Id),
    ));
    let mut lines = Box::pin(ndjson_chunks(notes));
    // The first row is fetched before answering, so an exhausted pool or a database that is
    // down answers 503 rather than a 200 that breaks off.
    let first = match lines.next().await {
        Some(Err(error)) => return Err(ApiError::from_db(&error, "export")),
        first => first,
    };
    let lines = futures_util::stream::iter(first).chain(lines);
    let body = cut_when_idle(lines, slot, state.settings.export_idle_timeout);
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body))
}

/// The caller's notes.
fn owned_by(me: &CurrentUser) -> sea_orm::Select<note::Entity> {
    note::Entity::find().filter(note::Column::UserId.eq(me.id()))
}

/// `chunks` as a response body that a client cannot hold open by not reading: a task reads
/// the database and hands each chunk over; when the client has taken nothing for `idle`,
/// the task stops — which drops the database stream (its connection is closed, and the pool
/// opens a replacement) and frees the export `slot` — and the body ends in an error, so the
/// response is cut off rather than ended as if complete.
fn cut_when_idle(
    mut chunks: impl futures_util::Stream<Item = Result<web::Bytes, DbErr>> + Unpin + 'static,
    slot: crate::limits::ExportSlot,
    idle: std::time::Duration,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> + 'static {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<web::Bytes, DbErr>>(1);
    let cut = std::rc::Rc::new(std::cell::Cell::new(false));
    let cut_by_task = std::rc::Rc::clone(&cut);
    actix_web::rt::spawn(async move {
        let _slot = slot;
        while let Some(chunk) = chunks.next().await {
            let failed = chunk.is_err();
            match tokio::time::timeout(idle, sender.send(chunk)).await {
                Ok(Ok(())) if !failed => {}
                // Failed (sent on), or the client went away (the body was dropped).
                Ok(_) => return,
                Err(_) => {
                    tracing::warn!(
                        idle_s = idle.as_secs(),
                        "export cut: the client stopped reading"
                    );
                    cut_by_task.set(true);
                    return;
                }
            }
        }
    });
    async_stream::stream! {
        while let Some(chunk) = receiver.recv().await {
            yield chunk.map_err(|error| {
                tracing::error!(%error, "export stream failed");
                actix_web::error::ErrorInternalServerError("export failed")
            });
        }
        if cut.get() {
            yield Err(actix_web::error::ErrorRequestTimeout("the client stopped reading"));
        }
    }
}

/// `notes` as NDJSON, in chunks of about [`EXPORT_CHUNK_BYTES`].
fn ndjson_chunks(
    mut notes: impl futures_util::Stream<Item = Result<note::Listed, DbErr>> + Unpin + 'static,
) -> impl futures_util::Stream<Item = Result<web::Bytes, DbErr>> + 'static {
    async_stream::try_stream! {
        let mut chunk = Vec::with_capacity(EXPORT_CHUNK_BYTES + 1024);
        while let Some(note) = notes.next().await {
            serde_json::to_writer(&mut chunk, &NoteView::from(note?))
                .map_err(|e| DbErr::Json(e.to_string()))?;
            chunk.push(b'\n');
            if chunk.len() >= EXPORT_CHUNK_BYTES {
                yield web::Bytes::from(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(EXPORT_CHUNK_BYTES + 1024),
                ));
            }
        }
        if !chunk.is_empty() {
            yield web::Bytes::from(chunk);
        }
    }
}
