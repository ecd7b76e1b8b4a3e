//! Logs: request ids on every line of a request, never a password or a hash.
//!
//! A test binary of its own: the capturing subscriber is the process's global one, shared by
//! this binary's tests only; each test finds its own lines by the request ids it sent.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use actix_web::http::{Method, StatusCode};
use api::{config::LogFormat, telemetry};
use serde_json::{Value, json};
use tests::{
    Backend, TestApp, backends,
    http::{get, json_request},
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

/// Every log line of this process so far, at every level, as the server writes them (JSON).
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let filter = tracing_subscriber::EnvFilter::new("trace");
        tracing::subscriber::set_global_default(telemetry::subscriber(
            LogFormat::Json,
            filter,
            captured.clone(),
        ))
        .expect("the only subscriber of this test binary");
        captured
    })
}

/// Every log line of a request carries its id (500s included), and no log line — at any
/// level — shows a password, a password hash or a bearer token.
#[backends(sqlite, postgres, mysql)]
async fn logs_carry_request_ids_and_never_passwords(backend: Backend) {
    let captured = captured();
    let tag = format!("logs-{backend:?}").to_lowercase();

    let token = exercise_users_and_a_panic(backend, &tag).await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("Tr0ub4dor"), "a password was logged");
    assert!(!text.contains("argon2"), "a password hash was logged");
    assert!(!text.contains(&token), "a bearer token was logged");
    let request_lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|log: &Value| log["span"]["name"] == "request")
        .collect();
    for log in &request_lines {
        assert!(log["span"]["request_id"].is_string(), "{log}");
    }
    let mine: Vec<&Value> = request_lines
        .iter()
        .filter(|log| {
            log["span"]["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&tag))
        })
        .collect();
    assert!(mine.len() >= 4, "{text}");
    let failure = mine
        .iter()
        .find(|log| log["level"] == "ERROR")
        .unwrap_or_else(|| panic!("the 500 is logged as an error: {text}"));
    assert_eq!(failure["span"]["request_id"], format!("{tag}-500"));
}

/// Sign up, sign in (and fail to), change the password, fail validation with a password, and
/// panic, each request with an id starting with `tag`. Returns the token it signed in with.
async fn exercise_users_and_a_panic(backend: Backend, tag: &str) -> String {
    let app = TestApp::spawn(backend).await;
    let id = |n: &str| ("x-request-id", format!("{tag}-{n}"));
    let password = "Tr0ub4dor&3-very-secret";
    let sign_up = json!({"email": "logs@example.com", "password": password});
    let created = app
        .send(json_request(Method::POST, "/users", &sign_up).insert_header(id("sign-up")))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let user = created.json()["id"].as_i64().unwrap();
    let wrong = json!({"email": "logs@example.com", "password": format!("{password}-wrong")});
    let refused = json_request(Method::POST, "/sessions", &wrong).insert_header(id("sign-in-401"));
    assert_eq!(app.send(refused).await.status, StatusCode::UNAUTHORIZED);
    let sign_in = json_request(Method::POST, "/sessions", &sign_up).insert_header(id("sign-in"));
    let session = app.send(sign_in).await;
    assert_eq!(session.status, StatusCode::CREATED);
    let token = session.json()["token"].as_str().unwrap().to_owned();
    let change = json!({"password": format!("{password}-2"), "current_password": password});
    let patch =
        json_request(Method::PATCH, &format!("/users/{user}"), &change).insert_header(id("patch"));
    assert_eq!(app.send_as(&token, patch).await.status, StatusCode::OK);
    let too_short = json!({"email": "x@example.com", "password": "short"});
    let invalid = json_request(Method::POST, "/users", &too_short).insert_header(id("invalid"));
    assert_eq!(
        app.send(invalid).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let panic = get("/__test/panic").insert_header(id("500"));
    assert_eq!(
        app.send(panic).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    app.finish().await;
    token
}
