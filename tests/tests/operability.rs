//! Operability: the OpenAPI document against the served routes, metrics, readiness, logs,
//! limits.

use std::collections::BTreeSet;

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use entity::account_token::{self, Purpose};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::{Value, json};
use tests::{
    Backend, TEST_PASSWORD, TestApp, assert_problem, backends,
    fixtures::{
        Operation, PUBLIC_ROUTES, create_note, id_of, openapi_document, operation, operations,
    },
    http::{assert_case_problem, json_request},
};

/// Every route of the contract that needs a signed-in caller, as `METHOD path`; the others
/// are the [`PUBLIC_ROUTES`].
const SIGNED_IN_ROUTES: [&str; 16] = [
    "GET /notes",
    "POST /notes",
    "GET /notes/changes",
    "GET /notes/events",
    "GET /notes/{id}",
    "PATCH /notes/{id}",
    "DELETE /notes/{id}",
    "POST /notes/bulk",
    "GET /notes/export",
    "DELETE /sessions/current",
    "GET /users/me",
    "GET /users",
    "GET /users/{id}",
    "PATCH /users/{id}",
    "DELETE /users/{id}",
    "POST /email-verifications",
];

fn documented_routes(doc: &Value) -> BTreeSet<String> {
    operations(doc).iter().map(Operation::route).collect()
}

/// What the valid requests name: rows that exist, and a user's credentials.
struct Existing {
    /// A note of the caller's.
    note: i64,
    /// A user the caller (an admin) may read, change and delete.
    user: i64,
    user_email: String,
    /// A token of that user's, for `DELETE /sessions/current` to end.
    spare_token: String,
}

/// The tokens a mail would carry for [`Existing::user`], stored as the server stores them.
const RESET_TOKEN: &str = "a-reset-token-of-the-test";
const VERIFICATION_TOKEN: &str = "a-verification-token-of-the-test";

async fn store_token(app: &TestApp, user: i64, email: &str, purpose: Purpose, token: &str) {
    let now = entity::now();
    account_token::Entity::insert(account_token::ActiveModel {
        user_id: Set(user),
        purpose: Set(purpose.as_str().to_owned()),
        token_digest: Set(entity::session::digest(token)),
        email: Set(email.to_owned()),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::hours(1)),
        used_at: Set(None),
        ..Default::default()
    })
    .exec(app.conn())
    .await
    .unwrap();
}

/// A valid request for a documented route, with `{id}` naming an existing row. Sent with
/// the caller's token unless it carries its own.
fn valid_request(method: &str, path: &str, existing: &Existing) -> TestRequest {
    let id = if path.starts_with("/users") {
        existing.user
    } else {
        existing.note
    };
    let uri = path.replace("{id}", &id.to_string());
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let body = match (method.as_str(), path) {
        ("POST", "/notes") => json!({"text": "documented"}),
        ("POST", "/notes/bulk") => json!([{"text": "documented"}]),
        ("POST", "/users") => json!({"email": "documented@example.com", "password": "long enough"}),
        ("POST", "/sessions") => {
            json!({"email": existing.user_email, "password": TEST_PASSWORD})
        }
        ("PATCH", _) => json!({}),
        // An address without an account: the same 202, and the stored token stays usable.
        ("POST", "/password-resets") => json!({"email": "nobody-documented@example.com"}),
        ("POST", "/password-resets/confirm") => {
            json!({"token": RESET_TOKEN, "password": "a new password"})
        }
        ("POST", "/email-verifications/confirm") => json!({"token": VERIFICATION_TOKEN}),
        ("DELETE", "/sessions/current") => {
            return TestRequest::default()
                .method(method)
                .uri(&uri)
                .insert_header(("authorization", format!("Bearer {}", existing.spare_token)));
        }
        _ => return TestRequest::default().method(method).uri(&uri),
    };
    json_request(method, &uri, &body)
}

/// The document lists exactly the contract's routes, each answers a valid request (no 404 or
/// 405), and every other method on a documented path is 405: documentation and routing
/// cannot drift apart.
#[backends(sqlite, postgres, mysql)]
async fn openapi_document_matches_the_served_routes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = openapi_document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let documented = documented_routes(&doc);
    let contract: BTreeSet<String> = SIGNED_IN_ROUTES
        .iter()
        .chain(&PUBLIC_ROUTES)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(documented, contract);

    // An admin may call every route, on their own notes and on any user.
    let admin = app.admin().await;
    let note = create_note(&app, Some(&admin.token), &json!({"text": "n"})).await;
    let user = app.sign_up_and_in("documented-user").await;
    for (purpose, token) in [
        (Purpose::PasswordReset, RESET_TOKEN),
        (Purpose::EmailVerification, VERIFICATION_TOKEN),
    ] {
        store_token(&app, user.id, &user.email, purpose, token).await;
    }
    let existing = Existing {
        note: id_of(&note.json()),
        user: user.id,
        spare_token: app.sign_in(&user.email, TEST_PASSWORD).await,
        user_email: user.email,
    };

    // DELETE last, so the other routes still find the rows (and `DELETE /sessions/current`
    // ends the spare session only); the reset, which ends the user's sessions, after that;
    // the user's deletion at the very end.
    let mut routes: Vec<&String> = documented.iter().collect();
    routes.sort_by_key(|r| match r.as_str() {
        "DELETE /users/{id}" => 3,
        "POST /password-resets/confirm" => 2,
        r if r.starts_with("DELETE") => 1,
        _ => 0,
    });
    for route in routes {
        let (method, path) = route.split_once(' ').unwrap();
        if route == "GET /notes/events" {
            // A stream that does not end (read in full here, it would never answer): its
            // answers are tested on a real server in tests/tests/events.rs.
            continue;
        }
        let reply = app
            .send_as(&admin.token, valid_request(method, path, &existing))
            .await;
        assert!(
            reply.status.is_success(),
            "{route} answered {}: {:?}",
            reply.status,
            reply.body
        );
    }

    let paths: BTreeSet<&str> = documented
        .iter()
        .map(|r| r.split_once(' ').unwrap().1)
        .collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(&format!("{method} {path}")) {
                continue;
            }
            let uri = path.replace("{id}", "1");
            let req = TestRequest::default()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&uri);
            let reply = app.send_as(&admin.token, req).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let mut allowed: BTreeSet<&str> = documented
                .iter()
                .filter_map(|r| r.split_once(' '))
                .filter(|(_, p)| *p == path)
                .map(|(m, _)| m)
                .collect();
            // Every GET route answers HEAD too.
            if allowed.contains("GET") {
                allowed.insert("HEAD");
            }
            let allow = reply.header("allow").unwrap_or_default();
            let listed: BTreeSet<&str> = allow.split(", ").collect();
            assert_eq!(listed, allowed, "Allow header of {method} {path}");
        }
    }
    app.finish().await;
}

/// Every documented operation lists its error responses with a problem schema.
#[backends(sqlite, postgres, mysql)]
async fn openapi_document_describes_bodies_and_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = openapi_document(&app).await;
    let create = &operation(&doc, "post", "/notes").operation;
    assert!(create["requestBody"]["content"]["application/json"].is_object());
    for status in ["201", "400", "413", "415", "422"] {
        assert!(
            create["responses"][status].is_object(),
            "POST /notes {status}"
        );
    }
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "errors"] {
        assert!(problem[field].is_object(), "Problem.{field}");
    }
    let user = &doc["components"]["schemas"]["User"]["properties"];
    assert!(user["email"].is_object());
    assert!(user["is_admin"].is_object(), "User.is_admin");
    let note = &doc["components"]["schemas"]["Note"]["properties"];
    assert!(note["user_id"].is_object(), "Note.user_id");
    assert!(user.get("hashed_password").is_none() && user.get("password").is_none());
    app.finish().await;
}

/// `/metrics` counts requests by route template (never the raw path) and shows the pool.
#[backends(sqlite, postgres, mysql)]
async fn metrics_count_requests_by_route_template(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(backend, &[("DB_POOL_MAX", "3")]).await;
    let missing = format!("/notes/{}", 9_000_000_000i64 + i64::from(rand_u16()));
    for _ in 0..3 {
        assert_eq!(app.get(&missing).await.status, StatusCode::NOT_FOUND);
    }
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(r#"route="/notes/{id}""#)
                && l.contains(r#"status="404""#)
        })
        .unwrap_or_else(|| panic!("no counter for /notes/{{id}} 404:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    assert!(!text.contains(&missing), "raw paths never become labels");
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "latency histogram"
    );
    assert!(
        text.contains(r#"db_pool_connections{state="max"} 3"#),
        "{text}"
    );
    for state in ["idle", "in_use", "open"] {
        assert!(
            text.contains(&format!(r#"db_pool_connections{{state="{state}"}}"#)),
            "{state}"
        );
    }
    app.finish().await;
}

fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}

/// With the database gone, `/readyz` and data routes answer 503 problems; `/healthz` is 200.
#[backends(sqlite, postgres, mysql)]
async fn readiness_follows_the_database(backend: Backend) {
    let (app, _) =
        TestApp::with_settings_signed_in(backend, &[("DB_ACQUIRE_TIMEOUT_MS", "300")]).await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    app.db().pool().close_by_ref().await.unwrap();
    let ready = app.get("/readyz").await;
    assert_problem(&ready, StatusCode::SERVICE_UNAVAILABLE);
    let notes = app.get("/notes").await;
    assert_problem(&notes, StatusCode::SERVICE_UNAVAILABLE);
    assert!(notes.header("retry-after").is_some());
    let write = app.post_json("/notes", &json!({"text": "x"})).await;
    assert_problem(&write, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    app.finish().await;
}

/// Bodies over `BODY_LIMIT_BYTES` are 413 problems whatever their type and route.
#[backends(sqlite, postgres, mysql)]
async fn oversized_bodies_are_413_whatever_their_type(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(backend, &[("BODY_LIMIT_BYTES", "1000")]).await;
    let big_text = "x".repeat(2000);
    let cases = [
        (
            "/notes",
            "application/json",
            json!({"text": big_text}).to_string(),
        ),
        ("/notes", "text/plain", big_text.clone()),
        (
            "/users",
            "application/json",
            json!({"email": big_text}).to_string(),
        ),
        ("/notes/bulk", "application/octet-stream", big_text.clone()),
        ("/healthz", "text/plain", big_text.clone()),
    ];
    for (path, content_type, body) in cases {
        let req = TestRequest::post()
            .uri(path)
            .insert_header(("content-type", content_type))
            .set_payload(body);
        let reply = app.send(req).await;
        assert_case_problem(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("{path} {content_type}"),
        );
    }
    let small = json_request(Method::POST, "/notes", &json!({"text": "fits"}));
    assert_eq!(app.send(small).await.status, StatusCode::CREATED);
    app.finish().await;
}

/// A handler that outlives `REQUEST_TIMEOUT_S` is cut off with a 503, and its write is
/// rolled back.
#[backends(sqlite, postgres, mysql)]
async fn slow_requests_time_out_and_roll_back(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(backend, &[("REQUEST_TIMEOUT_S", "1")]).await;
    let reply = app.post("/__test/hold/3000").await;
    assert_problem(&reply, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.header("retry-after").is_some());
    // The connection came back: the next write goes through.
    create_note(&app, None, &json!({"text": "next"})).await;
    app.finish().await;
}

/// The docs page and its assets come from the server itself.
#[backends(sqlite, postgres, mysql)]
async fn docs_page_is_served_offline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let page = app.get("/docs").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.starts_with("default-src 'self';") && policy.contains("frame-ancestors 'none'"),
        "the docs page allows only this origin: {policy:?}"
    );
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    assert!(
        !html.contains("https://"),
        "no asset from the internet: {html}"
    );
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let reply = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
    }
    let init = app.get("/docs/swagger-initializer.js").await;
    let init = String::from_utf8_lossy(&init.body);
    assert!(
        init.contains("/openapi.json") && init.contains(r#""validatorUrl": "none""#),
        "{init}"
    );
    app.finish().await;
}
