//! `/notes/export` holds its own pooled connection only while the body is being sent: after
//! the last byte, or as soon as the client goes away mid-stream; and it streams every row,
//! every field as stored.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use entity::note;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::{Value, json};
use tests::{Backend, TestApp, backends};

/// Rows per bulk request while seeding: about 800 KB, under the default body limit.
const SEED_BATCH: usize = 800;

/// Fill the notes table through the bulk route.
async fn seed_notes(app: &TestApp, count: usize) {
    for start in (0..count).step_by(SEED_BATCH) {
        let batch: Vec<Value> = (start..(start + SEED_BATCH).min(count))
            .map(|i| json!({"text": format!("export row {i} {}", "x".repeat(1000))}))
            .collect();
        let reply = app.post_json("/notes/bulk", &json!(batch)).await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
}

/// With a pool of one, a write (signed in with `token`) can only succeed once the export's
/// connection is back.
async fn write_succeeds_within(base: &str, token: &str, limit: Duration) -> bool {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
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
    seed_notes(&app, 30_000).await;
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
    seed_notes(&app, 6_000).await;
    let server = app.serve().await;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut response = client
        .get(server.url("/notes/export"))
        .bearer_auth(&me.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.body().limit(64 << 20).await.unwrap();
    let lines: Vec<Value> = std::str::from_utf8(&body)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let rows = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .all(app.conn())
        .await
        .unwrap();
    assert_eq!(lines.len(), 6_000);
    assert_eq!(rows.len(), 6_000);
    for (line, row) in lines.iter().zip(&rows) {
        let time = |field: &str| {
            DateTime::parse_from_rfc3339(line[field].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(line["id"], row.id, "in id order: {line}");
        assert_eq!(line["user_id"], row.user_id, "{line}");
        assert_eq!(row.user_id, me.id, "the caller's notes: {line}");
        assert_eq!(line["text"], row.text.as_str(), "{line}");
        assert_eq!(line["completed"], row.completed, "{line}");
        assert_eq!(time("created_at"), row.created_at, "{line}");
        assert_eq!(time("updated_at"), row.updated_at, "{line}");
    }
    assert!(write_succeeds_within(&server.base_url, &me.token, Duration::from_secs(5)).await);
    server.stop().await;
    app.finish().await;
}
