//! `GET /notes/events`: the caller's note changes as Server-Sent Events.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use entity::change_counter;

use super::changes::{Change, read_after};
use sea_orm::{DatabaseConnection, DbErr, EntityTrait};

use crate::{
    db::RequestDb,
    feed::{Refused, Subscription},
    http::{
        auth::CurrentUser,
        error::{ApiError, BadListQuery, Forgotten, SignedIn},
        pagination::ListQuery,
        streaming::cut_when_idle,
    },
    state::AppState,
};

/// A comment line at least this often keeps proxies from cutting an idle stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Changes read from the log at once.
const PAGE: u64 = 100;

/// Follow one's note changes live
///
/// A `text/event-stream` of the caller's note changes: one event per change (`id:` its
/// number, `event: change`, `data:` the change as `GET /notes/changes` lists it), starting
/// after `Last-Event-ID` (or `?since=N`) when given — 410 when that is older than what is
/// kept — else with the changes from now on. A change committed through any instance arrives
/// within a second; a comment line comes at least every 15 s. At most `EVENTS_MAX_PER_USER`
/// streams per user (429) and `EVENTS_MAX_CONCURRENT` per instance (503). The stream ends when
/// its token is revoked or the server stops; reconnect with `Last-Event-ID` to miss nothing.
#[utoipa::path(
    get, path = "/notes/events", tag = "notes",
    params(
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "the number of the last change received (a reconnecting `EventSource` sends it)"),
        ("since" = Option<i64>, Query, minimum = 0, description = "as `Last-Event-ID`, for clients that cannot send headers"),
    ),
    responses(
        (status = 200, description = "the stream of changes", body = String, content_type = "text/event-stream"),
        (status = 400, description = "`Last-Event-ID` is not a change number", body = crate::http::error::Problem, content_type = "application/problem+json"),
        BadListQuery,
        Forgotten,
        SignedIn,
        crate::http::error::Throttled,
    )
)]
pub async fn events(
    me: CurrentUser,
    req: HttpRequest,
    db: RequestDb,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let since = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(crate::http::input::parse_decimal)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be a change number".into())
                })?,
        ),
        None => query.integer_param("since")?,
    };
    let counter = db
        .all(change_counter::Entity::find_by_id(me.id()))
        .await?
        .pop();
    let (last_seq, kept_after) = counter.map_or((0, 0), |c| (c.last_seq, c.kept_after));
    let position = match since {
        Some(since) if since > 0 && since < kept_after => {
            return Err(ApiError::Gone(
                "changes this old are no longer kept; start over with since=0 and a full list",
            ));
        }
        Some(since) => since,
        None => last_seq,
    };
    if req.method() == actix_web::http::Method::HEAD {
        // The head a stream would have, and no stream (a HEAD must end).
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish());
    }
    let subscription = state
        .feed
        .subscribe(me.id(), &me.token_digest)
        .map_err(|refused| match refused {
            Refused::UserFull => ApiError::TooManyRequests {
                detail: "too many event streams of yours are open; close one first".into(),
                retry_after_s: 5,
            },
            Refused::InstanceFull => ApiError::Busy("every event stream slot is busy"),
            Refused::Closing => ApiError::Busy("the server is stopping"),
        })?;
    let follow = Follow {
        db: state.db.primary().clone(),
        user: me.id(),
        position,
    };
    let body = cut_when_idle(
        Box::pin(follow.run(subscription)),
        (),
        state.settings.export_idle_timeout,
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// One stream's reader of the log.
struct Follow {
    db: DatabaseConnection,
    user: i64,
    position: i64,
}

/// What woke a stream.
enum Woken {
    Poked,
    Heartbeat,
    Closing,
}

impl Follow {
    fn run(
        mut self,
        mut subscription: Subscription,
    ) -> impl futures_util::Stream<Item = Result<web::Bytes, DbErr>> + 'static {
        async_stream::try_stream! {
            // A first comment sends the head at once (the client knows it is connected).
            yield web::Bytes::from_static(b": connected\n\n");
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            heartbeat.reset();
            loop {
                if subscription.revoked() || *subscription.closing.borrow() {
                    break;
                }
                loop {
                    let changes = read_after(&self.db, self.user, self.position, PAGE).await?;
                    let more = changes.len() as u64 == PAGE;
                    if !changes.is_empty() {
                        metrics::counter!("events_sent_total").increment(changes.len() as u64);
                        let mut chunk = Vec::new();
                        let now = chrono::Utc::now();
                        for change in changes {
                            self.position = change.seq;
                            // From the write to its event (catch-up reads count as late).
                            let lag = (now - change.changed_at).num_microseconds().unwrap_or(0);
                            metrics::histogram!("events_lag_seconds")
                                .record(lag.max(0) as f64 / 1e6);
                            write_event(&mut chunk, Change::from(change));
                        }
                        yield web::Bytes::from(chunk);
                    }
                    if !more {
                        break;
                    }
                }
                let woken = tokio::select! {
                    changed = subscription.poked.changed() => match changed {
                        Ok(()) => Woken::Poked,
                        Err(_) => Woken::Closing,
                    },
                    _ = heartbeat.tick() => Woken::Heartbeat,
                    _ = subscription.closing.changed() => Woken::Closing,
                };
                match woken {
                    Woken::Poked => {}
                    Woken::Heartbeat => yield web::Bytes::from_static(b": keep-alive\n\n"),
                    Woken::Closing => break,
                }
            }
        }
    }
}

/// One change as an SSE event: `id`, `event: change`, `data` (JSON holds no raw line break).
fn write_event(chunk: &mut Vec<u8>, change: Change) {
    use std::io::Write;
    let _ = write!(chunk, "id: {}\nevent: change\ndata: ", change.seq);
    let _ = serde_json::to_writer(&mut *chunk, &change);
    chunk.extend_from_slice(b"\n\n");
}
