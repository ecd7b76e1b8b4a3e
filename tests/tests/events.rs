//! `GET /notes/events` on every backend, over real sockets: events from another instance,
//! resuming with `Last-Event-ID`, bad and forgotten positions, the limits, revocation,
//! shutdown, and an idle stream holding no connection.

use std::time::{Duration, Instant};

use actix_web::{http::StatusCode, web::Bytes};
use awc::error::PayloadError;
use entity::change_counter;
use futures_util::StreamExt;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};
use tests::{
    Backend, TestApp, assert_problem, backends,
    fixtures::{client, note_body, pool_in_use, reply_of, send_over_http},
    http::TestServer,
};

const WAIT: Duration = Duration::from_secs(5);

/// An open event stream, read frame by frame.
struct Events {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>>,
    buffer: Vec<u8>,
}

/// One `change` event: its `id` and its data.
#[derive(Debug)]
struct Event {
    id: i64,
    data: Value,
}

enum Frame {
    Event(Event),
    Comment,
    Ended,
}

impl Events {
    /// Open `GET /notes/events` on `server` as `token`, with `Last-Event-ID` when given.
    async fn open(server: &TestServer, token: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client(WAIT)
            .get(server.url("/notes/events"))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.insert_header(("last-event-id", id));
        }
        let response = request.send().await.expect("open the stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        let mut events = Self {
            body: Box::pin(response),
            buffer: Vec::new(),
        };
        assert!(
            matches!(events.frame(WAIT).await, Some(Frame::Comment)),
            "a first comment"
        );
        events
    }

    /// The next frame within `wait` (`None`: nothing came).
    async fn frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buffer.drain(..end + 2).collect()).unwrap();
                if frame.starts_with(':') {
                    return Some(Frame::Comment);
                }
                let mut id = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse().unwrap());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(value).unwrap());
                    } else if !line.is_empty() {
                        assert_eq!(line, "event: change", "{frame}");
                    }
                }
                return Some(Frame::Event(Event {
                    id: id.expect("an id"),
                    data: data.expect("data"),
                }));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.body.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Frame::Ended),
                Ok(Some(Ok(bytes))) => self.buffer.extend_from_slice(&bytes),
            }
        }
    }

    /// The next event within `wait`, skipping comments; panics on anything else.
    async fn event(&mut self, wait: Duration) -> Event {
        loop {
            match self.frame(wait).await {
                Some(Frame::Event(event)) => return event,
                Some(Frame::Comment) => continue,
                Some(Frame::Ended) => panic!("the stream ended"),
                None => panic!("no event within {wait:?}"),
            }
        }
    }

    /// Whether the stream ends within `wait` (events before the end are skipped).
    async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frame(left).await {
                Some(Frame::Ended) => return true,
                None => return false,
                Some(_) => continue,
            }
        }
    }
}

/// `POST /notes` over HTTP on `server` as `token`: the note.
async fn create(server: &TestServer, token: &str, text: &str) -> Value {
    let request = client(WAIT).post(server.url("/notes")).bearer_auth(token);
    let reply = send_over_http(request, Some(&note_body(text, false))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    reply.json()
}

#[backends(sqlite, postgres, mysql)]
async fn a_change_through_another_instance_reaches_the_stream(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let mut here = app.serve().await;
    here.watch_changes();
    let mut there = app.db().spawn_other_server().await;
    there.watch_changes();
    let mut events = Events::open(&here, &me.token, None).await;

    let note = create(&there, &me.token, "written elsewhere").await;
    let event = events.event(WAIT).await;

    assert_eq!(event.id, 1);
    assert_eq!(
        event.data,
        json!({"seq": 1, "id": note["id"], "deleted": false, "note": note})
    );
    let page = app.get("/notes/changes?since=0").await.json();
    assert_eq!(
        page["changes"][0], event.data,
        "the same change as the log lists"
    );
    drop(events);
    here.stop().await;
    there.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_stream_resumes_after_last_event_id_and_otherwise_starts_from_now(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let mut server = app.serve().await;
    server.watch_changes();
    for text in ["one", "two", "three"] {
        create(&server, &me.token, text).await;
    }

    let mut resumed = Events::open(&server, &me.token, Some("1")).await;
    let mut from_now = Events::open(&server, &me.token, None).await;
    let first = resumed.event(WAIT).await;
    let second = resumed.event(WAIT).await;
    create(&server, &me.token, "four").await;

    assert_eq!((first.id, second.id), (2, 3));
    assert_eq!(second.data["note"]["text"], "three");
    assert_eq!(resumed.event(WAIT).await.id, 4);
    let only_new = from_now.event(WAIT).await;
    assert_eq!(
        (only_new.id, &only_new.data["note"]["text"]),
        (4, &json!("four"))
    );
    let by_query = client(WAIT)
        .get(server.url("/notes/events?since=3"))
        .bearer_auth(&me.token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_bad_or_forgotten_position_is_refused(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let mut server = app.serve().await;
    server.watch_changes();
    change_counter::Entity::update_many()
        .col_expr(change_counter::Column::KeptAfter, Expr::value(5))
        .col_expr(change_counter::Column::LastSeq, Expr::value(9))
        .filter(change_counter::Column::UserId.eq(me.id))
        .exec(app.conn())
        .await
        .unwrap();
    let open = |last_event_id: Option<&'static str>, query: &'static str| {
        let mut request = client(WAIT)
            .get(server.url(&format!("/notes/events{query}")))
            .bearer_auth(&me.token);
        if let Some(id) = last_event_id {
            request = request.insert_header(("last-event-id", id));
        }
        async move { reply_of(request.send().await, "events").await }
    };

    for garbage in ["abc", "-1", "1.5", "", "99999999999999999999999"] {
        assert_problem(&open(Some(garbage), "").await, StatusCode::BAD_REQUEST);
    }
    let problem = assert_problem(
        &open(None, "?since=-2").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(problem["errors"][0]["field"], "since");
    assert_problem(&open(Some("4"), "").await, StatusCode::GONE);
    assert_problem(&open(None, "?since=2").await, StatusCode::GONE);
    let anonymous = reply_of(
        client(WAIT).get(server.url("/notes/events")).send().await,
        "anonymous",
    )
    .await;
    assert_problem(&anonymous, StatusCode::UNAUTHORIZED);
    let mut kept = Events::open(&server, &me.token, Some("5")).await;
    assert!(
        kept.frame(Duration::from_millis(300)).await.is_none(),
        "open, nothing yet"
    );
    drop(kept);
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn streams_are_limited_per_user_and_per_instance(backend: Backend) {
    let (app, alice) = TestApp::with_settings_signed_in(
        backend,
        &[("EVENTS_MAX_PER_USER", "2"), ("EVENTS_MAX_CONCURRENT", "3")],
    )
    .await;
    let bob = app.sign_up_and_in("bob").await;
    let carol = app.sign_up_and_in("carol").await;
    let mut server = app.serve().await;
    server.watch_changes();
    let refused = |token: String| {
        let request = client(WAIT)
            .get(server.url("/notes/events"))
            .bearer_auth(token);
        async move { reply_of(request.send().await, "events").await }
    };

    let _a1 = Events::open(&server, &alice.token, None).await;
    let _a2 = Events::open(&server, &alice.token, None).await;
    let third = refused(alice.token.clone()).await;
    let _b = Events::open(&server, &bob.token, None).await;
    let full = refused(carol.token.clone()).await;

    assert_problem(&third, StatusCode::TOO_MANY_REQUESTS);
    assert!(third.header("retry-after").is_some(), "{third:?}");
    assert_problem(&full, StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.header("retry-after").is_some(), "{full:?}");
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_stream_ends_when_its_token_is_revoked_on_any_instance(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let other = app.sign_in(&me.email, &me.password).await;
    let mut here = app.serve().await;
    here.watch_changes();
    let mut there = app.db().spawn_other_server().await;
    there.watch_changes();
    let mut revoked = Events::open(&here, &me.token, None).await;
    let mut kept = Events::open(&here, &other, None).await;

    let signed_out = client(WAIT)
        .delete(there.url("/sessions/current"))
        .bearer_auth(&me.token)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);

    assert!(
        revoked.ends_within(Duration::from_secs(3)).await,
        "the revoked token's stream ended"
    );
    create(&there, &other, "still here").await;
    assert_eq!(kept.event(WAIT).await.data["note"]["text"], "still here");
    here.stop().await;
    there.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn closing_ends_streams_at_once_and_a_resumed_stream_misses_nothing(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let mut server = app.serve().await;
    server.watch_changes();
    let mut events = Events::open(&server, &me.token, None).await;
    create(&server, &me.token, "before").await;
    let seen = events.event(WAIT).await.id;

    let closing = Instant::now();
    server.close_streams();
    assert!(events.ends_within(Duration::from_secs(2)).await);
    let took = closing.elapsed();
    let mut other = app.db().spawn_other_server().await;
    other.watch_changes();
    create(&other, &me.token, "while away").await;
    let mut resumed = Events::open(&other, &me.token, Some(&seen.to_string())).await;

    assert!(took < Duration::from_secs(2), "{took:?}");
    let missed = resumed.event(WAIT).await;
    assert_eq!(
        (missed.id, &missed.data["note"]["text"]),
        (seen + 1, &json!("while away"))
    );
    server.stop().await;
    other.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn an_idle_stream_holds_no_database_connection(backend: Backend) {
    let (app, me) = TestApp::with_settings_signed_in(backend, &[("DB_POOL_MIN", "0")]).await;
    let mut server = app.serve().await;
    server.watch_changes();
    let mut events = Events::open(&server, &me.token, None).await;
    create(&server, &me.token, "one").await;
    events.event(WAIT).await;

    let mut idle = false;
    for _ in 0..50 {
        if pool_in_use(app.db()).0 == 0 {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(
        idle,
        "connections in use while the stream waits: {:?}",
        pool_in_use(app.db())
    );
    drop(events);
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_stream_meets_every_change_once_in_order_under_concurrent_writers(backend: Backend) {
    const WRITERS: usize = 8;
    const EACH: usize = 500;
    let (app, me) = TestApp::signed_in(backend).await;
    let other = app.other_instance().await;
    let mut server = app.serve().await;
    server.watch_changes();
    let mut events = Events::open(&server, &me.token, Some("0")).await;

    let writers = (0..WRITERS).map(|w| {
        let (app, other, token) = (&app, &other, me.token.clone());
        async move {
            for i in 0..EACH {
                let request = tests::http::json_request(
                    actix_web::http::Method::POST,
                    "/notes",
                    &note_body(&format!("writer {w} note {i}"), false),
                )
                .insert_header(("authorization", format!("Bearer {token}")));
                let reply = if (w + i) % 2 == 0 {
                    app.send(request).await
                } else {
                    other.send(request).await
                };
                assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
            }
        }
    });
    let total = (WRITERS * EACH) as i64;
    let reader = async {
        let mut seen = Vec::new();
        while seen.last() != Some(&total) {
            let event = events.event(Duration::from_secs(30)).await;
            assert_eq!(event.data["seq"], event.id, "{:?}", event.data);
            seen.push(event.id);
        }
        seen
    };
    let (_, seen) = tokio::join!(futures_util::future::join_all(writers), reader);

    let expected: Vec<i64> = (1..=total).collect();
    if seen != expected {
        let gaps: Vec<_> = seen
            .windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .take(5)
            .collect();
        panic!(
            "the stream carried {} events (expected {total}), first gaps or repeats: {gaps:?}",
            seen.len()
        );
    }
    drop(events);
    server.stop().await;
    app.finish().await;
}
