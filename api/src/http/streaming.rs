//! Streamed response bodies that a client cannot hold open forever by not reading them.

use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use sea_orm::DbErr;

/// `chunks` as a response body that a client cannot hold open by not reading: a task reads
/// the chunks (from the database) and hands each over; when the client has taken nothing for
/// `idle`, the task stops — which drops `chunks` (a database stream's connection is closed,
/// and the pool opens a replacement) and `held` (an export slot, a stream's place) — and the
/// body ends in an error, so the response is cut off rather than ended as if complete.
pub fn cut_when_idle<H: 'static>(
    mut chunks: impl Stream<Item = Result<Bytes, DbErr>> + Unpin + 'static,
    held: H,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, DbErr>>(1);
    let cut = std::rc::Rc::new(std::cell::Cell::new(false));
    let cut_by_task = std::rc::Rc::clone(&cut);
    actix_web::rt::spawn(async move {
        let _held = held;
        while let Some(chunk) = chunks.next().await {
            let failed = chunk.is_err();
            match tokio::time::timeout(idle, sender.send(chunk)).await {
                Ok(Ok(())) if !failed => {}
                // Failed (sent on), or the client went away (the body was dropped).
                Ok(_) => return,
                Err(_) => {
                    tracing::warn!(
                        idle_s = idle.as_secs(),
                        "response cut: the client stopped reading"
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
                tracing::error!(%error, "streamed response failed");
                actix_web::error::ErrorInternalServerError("stream failed")
            });
        }
        if cut.get() {
            yield Err(actix_web::error::ErrorRequestTimeout("the client stopped reading"));
        }
    }
}
