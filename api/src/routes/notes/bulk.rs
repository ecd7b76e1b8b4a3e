//! `POST /notes/bulk`: many notes in one transaction, inserted in batches.

use actix_web::HttpResponse;
use entity::{
    idempotency_key::{self, Scope},
    note,
};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait};

use super::{
    NoteView,
    input::{NewNote, NewNotes},
};
use crate::{
    db::RequestDb,
    http::{
        auth::Signed,
        error::{ApiError, BadBody, Idempotent, SignedIn},
        idempotency::{Answer, IdempotencyKey},
        input::Json,
    },
};

/// Rows per INSERT in a bulk request: 5 binds each keeps every backend far below its limit.
const BULK_BATCH: usize = 500;

/// Create notes in bulk
///
/// Creates 1 to 5000 notes at once: all of them, or none when any is invalid (422, with
/// every bad item named by its index, e.g. `[3].text`). Answers the stored notes in the
/// order sent.
#[utoipa::path(
    post, path = "/notes/bulk", tag = "notes",
    params(IdempotencyKey),
    request_body(content = NewNotes, description = "1 to 5000 notes"),
    responses(
        (status = 201, description = "every note created, in the order sent (or, with `Idempotent-Replayed: true`, the answer to the first request with this `Idempotency-Key`)", body = [NoteView]),
        BadBody,
        Idempotent,
        SignedIn,
    )
)]
pub async fn bulk_create(
    db: RequestDb,
    Signed(me, (Json(NewNotes(notes)), key)): Signed<(Json<NewNotes>, IdempotencyKey)>,
) -> Result<HttpResponse, ApiError> {
    let fingerprint = || {
        let canonical: Vec<String> = notes.iter().map(NewNote::canonical).collect();
        let mut parts = vec!["POST /notes/bulk"];
        parts.extend(canonical.iter().map(String::as_str));
        idempotency_key::fingerprint(&parts)
    };
    key.answer(&db, Scope::User(me.id()), fingerprint, async |db| {
        let created = insert_notes(db, me.id(), &notes)
            .await
            .map_err(|error| ApiError::from_db(&error, "bulk insert"))?;
        let views: Vec<NoteView> = created.into_iter().map(NoteView::from).collect();
        Answer::created(None, None, &views)
    })
    .await
}

/// Insert `notes` owned by `owner` in batches, in the request's transaction (every row or
/// none), returning them in input order with their ids.
///
/// Backends with `INSERT … RETURNING` (PostgreSQL, SQLite) take a batch per statement; MySQL
/// has no RETURNING, so each row is inserted on its own, still inside the one transaction.
pub async fn insert_notes(
    db: &RequestDb,
    owner: i64,
    notes: &[NewNote],
) -> Result<Vec<note::Model>, DbErr> {
    let txn = db.transaction().await?;
    let txn = &*txn;
    let mut models = Vec::with_capacity(notes.len());
    for new in notes {
        let model = new.clone().into_active_model(owner);
        models.push(entity::prepare_insert(model, txn).await?);
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
