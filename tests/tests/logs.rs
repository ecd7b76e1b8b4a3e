//! Logs: request ids on every line of a request, never a password or a hash.
//!
//! A test binary of its own: the capturing subscriber is the process's global one, so no
//! other test's thread can race with it.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use actix_web::http::{Method, StatusCode};
use api::{config::LogFormat, telemetry};
use serde_json::{Value, json};
use tests::{
    Backend, TestDb,
    http::{get, json_request, send},
};

/// A `MakeWriter` that appends to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
    type Writer = Captured;
    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

/// Every log line of a request carries its id (500s included), and no log line — at any
/// level — shows a password or a password hash.
#[actix_web::test]
async fn logs_carry_request_ids_and_never_passwords() {
    let captured = Captured::default();
    let filter = tracing_subscriber::EnvFilter::new("trace");
    tracing::subscriber::set_global_default(telemetry::subscriber(
        LogFormat::Json,
        filter,
        captured.clone(),
    ))
    .expect("the only subscriber of this test binary");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend.enabled() {
            exercise_users_and_a_panic(backend).await;
        }
    }

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!text.is_empty());
    assert!(!text.contains("Tr0ub4dor"), "a password was logged");
    assert!(!text.contains("argon2"), "a password hash was logged");
    let request_lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|log: &Value| log["span"]["name"] == "request")
        .collect();
    assert!(request_lines.len() >= 4, "{text}");
    for log in &request_lines {
        assert!(log["span"]["request_id"].is_string(), "{log}");
    }
    let failure = request_lines
        .iter()
        .find(|log| log["level"] == "ERROR")
        .unwrap_or_else(|| panic!("the 500 is logged as an error: {text}"));
    assert_eq!(failure["span"]["request_id"], "trace-me-500");
}

/// Sign up, change the password, fail validation with a password, and panic.
async fn exercise_users_and_a_panic(backend: Backend) {
    let db = TestDb::rollback(backend).await;
    let app = db.app().await;
    let password = "Tr0ub4dor&3-very-secret";
    let sign_up = json!({"email": "logs@example.com", "password": password});
    let created = send(&app, json_request(Method::POST, "/users", &sign_up)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["id"].as_i64().unwrap();
    let change = json!({"password": format!("{password}-2")});
    let patch = json_request(Method::PATCH, &format!("/users/{id}"), &change);
    assert_eq!(send(&app, patch).await.status, StatusCode::OK);
    let too_short = json!({"email": "x@example.com", "password": "short"});
    send(&app, json_request(Method::POST, "/users", &too_short)).await;
    let panic = get("/__test/panic").insert_header(("x-request-id", "trace-me-500"));
    assert_eq!(
        send(&app, panic).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    drop(app);
    db.finish().await;
}
