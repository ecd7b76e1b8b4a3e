//! `/notes`: the query shapes of the original pattern, one per route — fetch-all (list),
//! fetch-one (get), execute (create, update, delete), execute-many ([`bulk`]) and iterate
//! ([`export`]). What the routes accept is in [`input`], what they show in [`view`].
//!
//! Every route takes the caller ([`CurrentUser`], or [`Signed`] when it reads an id or a
//! body) and every statement is scoped to the caller's notes: another user's note is not
//! found (404), whoever asks — admins included.

pub mod bulk;
pub mod changes;
pub mod events;
pub mod export;
pub mod input;
pub mod search;
pub mod view;

use actix_web::{HttpRequest, HttpResponse, web};
use entity::{
    idempotency_key::{self, Scope},
    note,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DbBackend, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, TryIntoModel,
};

pub use input::{MAX_BULK_ITEMS, MAX_TEXT_CHARS, NewNote, NewNotes, NotePatch};
pub use search::FoundNote;
pub use view::{NoteView, NotesPage};

use crate::{
    db::RequestDb,
    http::{
        auth::{CurrentUser, Signed},
        conditional::{self, Changed, Current, IfMatch, IfNoneMatch},
        error::{
            ApiError, BadBody, BadBodyOrNotFound, BadListQuery, Conditional, Idempotent, NotFound,
            SignedIn,
        },
        idempotency::{Answer, Created, IdempotencyKey},
        input::{Json, PathId},
        pagination::ListQuery,
    },
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/notes")
            .route(crate::routes::get().to(list))
            .route(web::post().to(create))
            .default_service(crate::routes::allow("GET, HEAD, POST")),
    )
    .service(
        super::resource("/notes/bulk")
            .route(web::post().to(bulk::bulk_create))
            .default_service(crate::routes::allow("POST")),
    )
    .service(
        super::resource("/notes/changes")
            .route(crate::routes::get().to(changes::changes))
            .default_service(crate::routes::allow("GET, HEAD")),
    )
    .service(
        super::resource("/notes/events")
            .route(crate::routes::get().to(events::events))
            .default_service(crate::routes::allow("GET, HEAD")),
    )
    .service(
        super::resource("/notes/export")
            .route(crate::routes::get().to(export::export))
            .default_service(crate::routes::allow("GET, HEAD")),
    )
    .service(
        super::resource("/notes/{id}")
            .route(crate::routes::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete))
            .default_service(crate::routes::allow("GET, HEAD, PATCH, DELETE")),
    );
}

/// List or search notes
///
/// Without `q`: a page of notes in id order (oldest first, or newest first with
/// `order=desc`), optionally only the completed (or open) ones.
///
/// With `q`: the notes whose text matches the query, best first (the query's words occurring
/// most often; ties: newest first), each with a `snippet` and the `matches` in it. The
/// language: `word` (all words must occur), `"a phrase"` (adjacent, in order), `-word` (left
/// out), `word*` (any word starting so); case-insensitive, punctuation separates words,
/// words shorter than 3 letters are ignored outside phrases.
///
/// A full page carries `Link: <…>; rel="next"`: follow it to the next page (keyset paging,
/// so notes added meanwhile are neither skipped nor repeated).
#[utoipa::path(
    get, path = "/notes", tag = "notes", operation_id = "list_notes",
    params(
        ListQuery,
        ("q" = Option<String>, Query, min_length = 1, max_length = 256, description = "search: only notes matching this query, best first"),
        ("rank" = Option<i64>, Query, minimum = 0, description = "search pages: the rank of the last note seen (set by the `Link` of the previous page, with `after`)"),
        ("completed" = Option<bool>, Query, description = "only notes in this state"),
        ("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "without `q`: `asc` (default: oldest first) or `desc` (newest first; `after` then returns smaller ids)"),
    ),
    responses(
        (status = 200, description = "the page: notes in id order, or search results best first", body = NotesPage),
        BadListQuery,
        SignedIn,
    )
)]
pub async fn list(
    me: CurrentUser,
    req: HttpRequest,
    db: RequestDb,
) -> Result<HttpResponse, ApiError> {
    // Every documented parameter is checked, whichever of the two it applies to.
    let query = ListQuery::parse(req.query_string())?;
    let rank = query.integer_param("rank")?;
    let newest_first = query.newest_first()?;
    if let Some(q) = query.param("q") {
        return search::search(&me, &req, &db, &query, q, rank).await;
    }
    let completed = query.bool_param("completed")?;
    let select = page_of(db.backend(), me.id(), &query, newest_first, completed);
    // Only the columns a page shows, read by position (bench/PERFORMANCE.md, "list decoding").
    let notes: Vec<NoteView> = db
        .all(note::Listed::select(select))
        .await?
        .into_iter()
        .map(NoteView::from)
        .collect();
    Ok(query.respond(&req, &notes, |item| item.id))
}

/// The select of one plain page of `owner`'s notes on `backend`, in id order (newest first
/// when `newest_first`), only those in the `completed` state when given.
pub fn page_of(
    backend: DbBackend,
    owner: i64,
    query: &ListQuery,
    newest_first: bool,
    completed: Option<bool>,
) -> sea_orm::Select<note::Entity> {
    let mine = in_owner_order(owner, backend);
    let mine = if newest_first {
        mine.order_by_desc(note::Column::UserId)
    } else {
        mine.order_by_asc(note::Column::UserId)
    };
    let select = query.page(mine, note::Column::Id, newest_first);
    match completed {
        Some(completed) => select.filter(note::Column::Completed.eq(completed)),
        None => select,
    }
}

/// Create a note
///
/// Answers 201 with the stored note and its `Location`.
#[utoipa::path(
    post, path = "/notes", tag = "notes", operation_id = "create_note",
    params(IdempotencyKey),
    request_body = NewNote,
    responses(
        Created<NoteView>,
        BadBody,
        Idempotent,
        SignedIn,
    )
)]
pub async fn create(
    db: RequestDb,
    Signed(me, (Json(new), key)): Signed<(Json<NewNote>, IdempotencyKey)>,
) -> Result<HttpResponse, ApiError> {
    let fingerprint = || idempotency_key::fingerprint(&["POST /notes", &new.canonical()]);
    key.answer(&db, Scope::User(me.id()), fingerprint, async |db| {
        created(db.insert(new.clone().into_active_model(me.id())).await?)
    })
    .await
}

/// 201 with the note, its `Location` and its `ETag`.
fn created(note: note::Model) -> Result<Answer, ApiError> {
    let version = note.version;
    let view = NoteView::from(note);
    Answer::created(Some(format!("/notes/{}", view.id)), Some(version), &view)
}

/// Get a note
#[utoipa::path(
    get, path = "/notes/{id}", tag = "notes", operation_id = "get_note",
    params(PathId, IfNoneMatch),
    responses(
        Current<NoteView>,
        NotFound,
        SignedIn,
    )
)]
pub async fn get(
    db: RequestDb,
    cached: IfNoneMatch,
    Signed(me, PathId(id)): Signed<PathId>,
) -> Result<HttpResponse, ApiError> {
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
/// Changes the text, the state, or both; `updated_at` and the `ETag` advance, `created_at`
/// stays. A body that changes nothing (no field, or the values the note has) writes nothing:
/// `updated_at` and the `ETag` stay.
#[utoipa::path(
    patch, path = "/notes/{id}", tag = "notes", operation_id = "update_note",
    params(PathId, IfMatch),
    request_body = NotePatch,
    responses(
        Changed<NoteView>,
        BadBodyOrNotFound,
        Conditional,
        SignedIn,
    )
)]
pub async fn update(
    db: RequestDb,
    condition: IfMatch,
    Signed(me, (Json(patch), PathId(id))): Signed<(Json<NotePatch>, PathId)>,
) -> Result<HttpResponse, ApiError> {
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
            note.text.set_if_not_equals(text.clone());
        }
        if let Some(completed) = patch.completed {
            note.completed.set_if_not_equals(completed);
        }
        if !note.is_changed() {
            // Nothing to change: no write, and `updated_at` and the tag stay as they are.
            let current = NoteView::from(note.try_into_model()?);
            return Ok(conditional::tagged(HttpResponse::Ok(), read_at).json(current));
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
    delete, path = "/notes/{id}", tag = "notes", operation_id = "delete_note",
    params(PathId, IfMatch),
    responses(
        (status = 204, description = "deleted"),
        NotFound,
        Conditional,
        SignedIn,
    )
)]
pub async fn delete(
    db: RequestDb,
    condition: IfMatch,
    Signed(me, PathId(id)): Signed<PathId>,
) -> Result<HttpResponse, ApiError> {
    let mine = note::Entity::delete_many()
        .filter(note::Column::Id.eq(id))
        .filter(note::Column::UserId.eq(me.id()));
    let exists = async || Ok(find_owned(&db, &me, id).await?.is_some());
    condition
        .delete(&db, mine, note::Column::Version, exists)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The notes of `owner`, to be read in the `(user_id, id)` index's order (`ORDER BY user_id,
/// id`) on `backend`.
///
/// PostgreSQL is asked for `user_id BETWEEN owner AND owner`: with an equality it treats
/// `ORDER BY user_id` as redundant, and on skewed data (a user owning a tenth of the table, all
/// of it newer than the rest) walks the primary key in id order, expecting to meet the owner's
/// notes early, and filters out everyone else's first; with a range, only the `(user_id, id)`
/// index gives the order without a sort. MariaDB and SQLite are asked for the equality: given
/// the range, MariaDB sorts every note of the owner (a filesort) and SQLite no longer seeks
/// to the page's `id` (docs/search.md, "Plain pages of one user's notes";
/// `tests/tests/search.rs` checks the plans).
fn in_owner_order(owner: i64, backend: DbBackend) -> sea_orm::Select<note::Entity> {
    let mine = match backend {
        DbBackend::Postgres => note::Column::UserId.between(owner, owner),
        _ => note::Column::UserId.eq(owner),
    };
    note::Entity::find().filter(mine)
}
