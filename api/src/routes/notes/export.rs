//! `GET /notes/export`: every note of the caller as NDJSON, streamed from a database cursor.

use actix_web::{HttpResponse, web};
use entity::note;
use futures_util::StreamExt;
use sea_orm::{DbErr, QueryOrder};

use super::NoteView;
use crate::{
    db::RequestDb,
    http::{
        auth::CurrentUser,
        error::{ApiError, SignedIn, Throttled, Unavailable},
        streaming::cut_when_idle,
    },
    limits::ExportRefused,
    state::AppState,
};

/// Export lines are sent in chunks of about this size: one write per row would cost a
/// syscall and a frame each.
const EXPORT_CHUNK_BYTES: usize = 32 * 1024;

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
    )
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
        super::in_owner_order(me.id(), db.backend())
            .order_by_asc(note::Column::UserId)
            .order_by_asc(note::Column::Id),
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
