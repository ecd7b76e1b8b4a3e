//! `/notes/export` holds its own pooled connection only while the body is being sent: after
//! the last byte, or as soon as the client goes away mid-stream; and it streams every row,
//! every field as stored.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;
use entity::note;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::json;
use tests::{
    Backend, TestApp, backends,
    fixtures::{HANG, client, export_lines, seed_notes, send_over_http, time_of},
};

/// Fill the notes table with `count` notes of `owner`, about 1 kB each.
async fn seed(app: &TestApp, owner: i64, count: usize) {
    let filler = "x".repeat(1000);
    seed_notes(app.conn(), owner, count, |i| {
        format!("export row {i} {filler}")
    })
    .await;
}

/// With a pool of one, a write (signed in with `token`) can only succeed once the export's
/// connection is back.
async fn write_succeeds_within(base: &str, token: &str, limit: Duration) -> bool {
    let client = client(Duration::from_secs(5));
    let started = Instant::now();
    while started.elapsed() < limit {
        let response = client
            .post(format!("{base}/notes"))
            .bearer_auth(token)
            .send_json(&json!({"text": "after export"}))
            .await;
        if response.is_ok_and(|r| r.status() == StatusCode::CREATED) {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[backends(sqlite, postgres, mysql)]
async fn abandoned_export_returns_its_connection(backend: Backend) {
    let (app, me) = TestApp::with_settings_signed_in(
        backend,
        &[
            ("DB_POOL_MAX", "1"),
            ("DB_POOL_MIN", "0"),
            ("DB_ACQUIRE_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    // About 30 MB: more than loopback socket buffers hold, so the client really leaves
    // mid-stream.
    seed(&app, me.id, 30_000).await;
    let server = app.serve().await;
    let address = server.address;
    let token = me.token.clone();

    // A client that reads the start of the export and then goes away.
    let first_bytes = actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET /notes/export HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut buffer = vec![0u8; 16 * 1024];
        let read = stream.read(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    })
    .await
    .unwrap();
    assert!(first_bytes.starts_with("HTTP/1.1 200"), "{first_bytes}");
    assert!(
        first_bytes.contains("application/x-ndjson"),
        "{first_bytes}"
    );

    assert!(
        write_succeeds_within(&server.base_url, &me.token, Duration::from_secs(10)).await,
        "the export's connection never came back to the pool"
    );
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn complete_export_streams_every_row_and_returns_its_connection(backend: Backend) {
    let (app, me) =
        TestApp::with_settings_signed_in(backend, &[("DB_POOL_MAX", "1"), ("DB_POOL_MIN", "0")])
            .await;
    seed(&app, me.id, 6_000).await;
    let server = app.serve().await;
    let request = client(HANG)
        .get(server.url("/notes/export"))
        .bearer_auth(&me.token);
    let reply = send_over_http(request, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let lines = export_lines(&reply);
    let rows = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .all(app.conn())
        .await
        .unwrap();
    assert_eq!(lines.len(), 6_000);
    assert_eq!(rows.len(), 6_000);
    for (line, row) in lines.iter().zip(&rows) {
        assert_eq!(line["id"], row.id, "in id order: {line}");
        assert_eq!(line["user_id"], row.user_id, "{line}");
        assert_eq!(row.user_id, me.id, "the caller's notes: {line}");
        assert_eq!(line["text"], row.text.as_str(), "{line}");
        assert_eq!(line["completed"], row.completed, "{line}");
        assert_eq!(time_of(line, "created_at"), row.created_at, "{line}");
        assert_eq!(time_of(line, "updated_at"), row.updated_at, "{line}");
    }
    assert!(write_succeeds_within(&server.base_url, &me.token, Duration::from_secs(5)).await);
    server.stop().await;
    app.finish().await;
}
