//! `/notes`: the query shapes of the original pattern, one per route — fetch-all (list),
//! fetch-one (get), execute (create, update, delete), execute-many (bulk) and iterate (export).

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use entity::note;
use futures_util::StreamExt;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait,
    ActiveValue::{NotSet, Set, Unchanged},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    IntoActiveModel, Iterable, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait,
    Statement, TransactionTrait,
    sea_query::Query,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    db::{self, DbSource, RequestDb},
    error::{ApiError, FieldError},
    input::{Fields, FromJson, Json, PathId, join},
    openapi::Problem,
    pagination::ListQuery,
    statements::CachedSql,
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
    pub id: i64,
    pub text: String,
    pub completed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl NoteView {
    /// A note from a row of `note::Entity::find()` or [`insert_returning`] — every column, in
    /// the entity's order — read by position. SeaORM's derived decoder looks each column up
    /// by a name it formats per row, which showed in the benchmark's profile of `GET /notes`
    /// (100 rows a page).
    fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        Ok(Self {
            id: row.try_get_by_index(0)?,
            text: row.try_get_by_index(1)?,
            completed: row.try_get_by_index(2)?,
            created_at: row.try_get_by_index(3)?,
            updated_at: row.try_get_by_index(4)?,
        })
    }
}

impl From<note::Model> for NoteView {
    fn from(note: note::Model) -> Self {
        Self {
            id: note.id,
            text: note.text,
            completed: note.completed,
            created_at: note.created_at,
            updated_at: note.updated_at,
        }
    }
}

/// `POST /notes` body (also each item of `POST /notes/bulk`).
#[derive(ToSchema)]
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
    fn into_active_model(self) -> note::ActiveModel {
        note::ActiveModel {
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

/// Fetch-all: a page of notes in id order, optionally filtered by `completed`.
#[utoipa::path(
    get, path = "/notes", tag = "notes",
    params(
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "page size (default 100)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "the last id seen"),
        ("completed" = Option<bool>, Query, description = "only notes in this state"),
    ),
    responses(
        (status = 200, description = "notes by id; a full page has a Link rel=next header", body = [NoteView],
            headers(("link" = String, description = "<…>; rel=\"next\" when the page is full"))),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(req: HttpRequest, db: RequestDb) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let completed = query.bool_param("completed")?;
    let mut select = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .limit(query.limit);
    if let Some(after) = query.after {
        select = select.filter(note::Column::Id.gt(after));
    }
    if let Some(completed) = completed {
        select = select.filter(note::Column::Completed.eq(completed));
    }
    let rows = db.query_all(select.build(db.backend())).await?;
    let views = rows
        .iter()
        .map(NoteView::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let last_id = views.last().map(|n| n.id);
    Ok(query.respond(&req, &views, last_id))
}

/// Execute: insert one note — a single statement, so it autocommits (see
/// [`RequestDb::single_statement`]).
#[utoipa::path(
    post, path = "/notes", tag = "notes",
    request_body = NewNote,
    responses(
        (status = 201, description = "created", body = NoteView,
            headers(("location" = String, description = "/notes/{id}"))),
        (status = 400, description = "malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid note", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(db: RequestDb, Json(new): Json<NewNote>) -> Result<HttpResponse, ApiError> {
    let write = db.single_statement().await?;
    let backend = db.backend();
    let note = match backend {
        // One `INSERT … RETURNING` built by SeaORM after the entity's rules ran (what
        // `ActiveModel::insert` does), run by `SingleStatement::query_one` on the driver.
        DbBackend::Postgres | DbBackend::Sqlite => {
            let model = entity::prepare_insert(new.into_active_model(), &write.executor()).await?;
            let row = write
                .query_one(insert_returning(model, backend))
                .await?
                .ok_or_else(|| ApiError::Internal("INSERT … RETURNING returned no row".into()))?;
            NoteView::from_row(&row)?
        }
        // MySQL has no RETURNING: SeaORM inserts, then reads the row back by its id.
        _ => NoteView::from(db::cold(new.into_active_model().insert(&write.executor())).await?),
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/notes/{}", note.id)))
        .json(note))
}

/// `INSERT … RETURNING` every column, in the order [`NoteView::from_row`] reads them.
///
/// The insert rules set every column but the id, so the SQL is the same for every
/// `POST /notes`: it is built by SeaORM once per backend and reused with the model's values
/// (in the order SeaORM lists set columns: the entity's; a column added to the entity
/// fails to compile here until it is listed). Building the statement anew cost 9 k of the
/// request's 116 k instructions (callgrind, PostgreSQL). A model with other columns set is
/// built by SeaORM as it is.
fn insert_returning(model: note::ActiveModel, backend: DbBackend) -> Statement {
    static INSERT: CachedSql = CachedSql::new(|backend| {
        let now = entity::now();
        let template = note::ActiveModel {
            text: Set(String::new()),
            completed: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            ..note::ActiveModel::new()
        };
        build_insert_returning(template, backend)
    });
    match model {
        note::ActiveModel {
            id: NotSet,
            text: Set(text) | Unchanged(text),
            completed: Set(completed) | Unchanged(completed),
            created_at: Set(created_at) | Unchanged(created_at),
            updated_at: Set(updated_at) | Unchanged(updated_at),
        } => INSERT.with_values(
            backend,
            [
                text.into(),
                completed.into(),
                created_at.into(),
                updated_at.into(),
            ],
        ),
        model => build_insert_returning(model, backend),
    }
}

fn build_insert_returning(model: note::ActiveModel, backend: DbBackend) -> Statement {
    let mut insert = note::Entity::insert(model);
    QueryTrait::query(&mut insert).returning(Query::returning().columns(note::Column::iter()));
    insert.build(backend)
}

/// Fetch-one.
#[utoipa::path(
    get, path = "/notes/{id}", tag = "notes",
    params(("id" = i64, Path, minimum = 1, description = "note id")),
    responses(
        (status = 200, description = "the note", body = NoteView),
        (status = 404, description = "no such note", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(db: RequestDb, PathId(id): PathId) -> Result<HttpResponse, ApiError> {
    static BY_ID: CachedSql = CachedSql::new(|backend| note::Entity::find_by_id(0).build(backend));
    let row = db
        .query_one(BY_ID.with_values(db.backend(), [id.into()]))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(NoteView::from_row(&row)?))
}

/// Execute: change a note's text or state; `updated_at` advances, `created_at` stays.
#[utoipa::path(
    patch, path = "/notes/{id}", tag = "notes",
    params(("id" = i64, Path, minimum = 1, description = "note id")),
    request_body = NotePatch,
    responses(
        (status = 200, description = "the changed note", body = NoteView),
        (status = 400, description = "malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such note", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid change", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    db: RequestDb,
    Json(patch): Json<NotePatch>,
    // After the body, so a bad body is reported (422) whatever the id.
    PathId(id): PathId,
) -> Result<HttpResponse, ApiError> {
    let txn = db.writer().await?;
    let mut note = note::Entity::find_by_id(id)
        .one(&*txn)
        .await?
        .ok_or(ApiError::NotFound)?
        .into_active_model();
    if let Some(text) = patch.text {
        note.text = Set(text);
    }
    if let Some(completed) = patch.completed {
        note.completed = Set(completed);
    }
    let note = note.update(&*txn).await?;
    Ok(HttpResponse::Ok().json(NoteView::from(note)))
}

/// Execute: delete a note — a single statement, so it autocommits.
#[utoipa::path(
    delete, path = "/notes/{id}", tag = "notes",
    params(("id" = i64, Path, minimum = 1, description = "note id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such note", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(db: RequestDb, PathId(id): PathId) -> Result<HttpResponse, ApiError> {
    let write = db.single_statement().await?;
    let result = db::cold(note::Entity::delete_by_id(id).exec(&write.executor())).await?;
    if result.rows_affected == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Execute-many, in the scoped ("context manager") style: the closure runs inside
/// `transaction(…)` and every row is rolled back if any batch fails.
#[utoipa::path(
    post, path = "/notes/bulk", tag = "notes",
    request_body(content = NewNotes, description = "1 to 5000 notes"),
    responses(
        (status = 201, description = "all notes created, in order", body = [NoteView]),
        (status = 400, description = "malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "an item is invalid or there are more than 5000: nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn bulk_create(
    db: RequestDb,
    Json(NewNotes(notes)): Json<NewNotes>,
) -> Result<HttpResponse, ApiError> {
    let txn = db.writer().await?;
    let created = txn
        .transaction::<_, _, DbErr>(|scoped| Box::pin(insert_notes(scoped, notes)))
        .await
        .map_err(|error| match error {
            sea_orm::TransactionError::Connection(e)
            | sea_orm::TransactionError::Transaction(e) => ApiError::from_db(&e, "bulk insert"),
        })?;
    let views: Vec<NoteView> = created.into_iter().map(NoteView::from).collect();
    Ok(HttpResponse::Created().json(views))
}

/// Insert `notes` in batches, returning them in input order with their ids.
///
/// Backends with `INSERT … RETURNING` (PostgreSQL, SQLite) take a batch per statement; MySQL
/// has no RETURNING, so each row is inserted on its own, still inside the one transaction.
pub async fn insert_notes(
    txn: &DatabaseTransaction,
    notes: Vec<NewNote>,
) -> Result<Vec<note::Model>, DbErr> {
    let mut models = Vec::with_capacity(notes.len());
    for new in notes {
        models.push(entity::prepare_insert(new.into_active_model(), txn).await?);
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

/// Iterate: every note as NDJSON, streamed from a database cursor so memory stays flat
/// whatever the table's size.
///
/// The stream has its own pooled connection, held until the last byte is sent or the client
/// goes away (dropping the body drops the stream, which returns the connection). The first
/// row is fetched before answering, so an exhausted pool or a database that is down answers
/// 503 rather than a 200 that breaks off.
#[utoipa::path(
    get, path = "/notes/export", tag = "notes",
    responses(
        (status = 200, description = "every note, one JSON object per line, in id order",
            body = String, content_type = "application/x-ndjson"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(db: RequestDb) -> Result<HttpResponse, ApiError> {
    let mut lines = Box::pin(ndjson_lines(db.source().clone()));
    let first = match lines.next().await {
        Some(Err(error)) => return Err(ApiError::from_db(&error, "export")),
        first => first,
    };
    let body = futures_util::stream::iter(first).chain(lines).map(|line| {
        line.map_err(|error| {
            tracing::error!(%error, "export stream failed");
            actix_web::error::ErrorInternalServerError("export failed")
        })
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body))
}

fn ndjson_lines(
    source: DbSource,
) -> impl futures_util::Stream<Item = Result<web::Bytes, DbErr>> + 'static {
    async_stream::try_stream! {
        let statement = note::Entity::find()
            .order_by_asc(note::Column::Id)
            .build(source.executor().get_database_backend());
        let mut rows = db::stream_rows(source, statement);
        let mut chunk = Vec::with_capacity(EXPORT_CHUNK_BYTES + 1024);
        while let Some(row) = rows.next().await {
            serde_json::to_writer(&mut chunk, &NoteView::from_row(&row?)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `NoteView::from_row` reads columns by position: the entity's select must list them in
    /// that order.
    #[test]
    fn note_selects_list_columns_in_the_order_from_row_reads() {
        let sql = note::Entity::find().build(sea_orm::DbBackend::Postgres).sql;
        assert!(
            sql.starts_with(
                r#"SELECT "notes"."id", "notes"."text", "notes"."completed", "notes"."created_at", "notes"."updated_at" FROM"#
            ),
            "{sql}"
        );
        let model = note::ActiveModel {
            text: Set("x".into()),
            ..note::ActiveModel::new()
        };
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            let sql = insert_returning(model.clone(), backend).sql;
            assert!(
                sql.ends_with(r#"RETURNING "id", "text", "completed", "created_at", "updated_at""#),
                "{sql}"
            );
        }
    }

    /// The cached `INSERT … RETURNING` is the statement SeaORM builds for the same model, on
    /// every backend; a model with other columns set gets its own statement.
    #[test]
    fn cached_insert_returning_equals_the_one_seaorm_builds() {
        let prepared = note::ActiveModel {
            text: Set("milk".into()),
            completed: Set(true),
            created_at: Set(entity::now()),
            updated_at: Set(entity::now()),
            ..note::ActiveModel::new()
        };
        let with_id = note::ActiveModel {
            id: Set(7),
            ..prepared.clone()
        };
        let text_only = note::ActiveModel {
            text: Set("x".into()),
            ..note::ActiveModel::new()
        };
        for backend in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            for model in [&prepared, &with_id, &text_only] {
                let cached = insert_returning(model.clone(), backend);
                let fresh = build_insert_returning(model.clone(), backend);
                assert_eq!(cached.sql, fresh.sql, "{backend:?}");
                assert_eq!(cached.values, fresh.values, "{backend:?}");
            }
        }
    }
}
