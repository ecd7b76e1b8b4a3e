//! A database that goes away and comes back: data routes answer 503 quickly while it is
//! gone, `/healthz` stays 200, and the server recovers by itself — no restart.
//!
//! The app reaches the database through a TCP proxy the test can cut, which looks to the
//! server exactly like a database that stopped (connections dropped, new ones refused).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::http::{Method, StatusCode};
use api::{startup, state::AppState};
use serde_json::json;
use tests::{
    Backend, TEST_PASSWORD, TestDb, backends,
    http::{get, json_request, send, send_with_token},
    proxy::Proxy,
    test_settings, unique_email,
};

#[backends(postgres, mysql)]
async fn database_outage_answers_503_and_recovers(backend: Backend) {
    let db = TestDb::private(backend, &[]).await;
    let mut url = url::Url::parse(db.url()).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = Proxy::start(target).await;
    url.set_port(Some(proxy.port)).unwrap();
    let overrides = [("DB_ACQUIRE_TIMEOUT_MS", "500"), ("DB_POOL_MIN", "0")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let settings = test_settings(url.as_str(), &overrides);
    let pool = api::db::connect(&settings).await.unwrap();
    let app = actix_web::test::init_service(startup::app(AppState::new(
        api::db::DbSource::pool(pool.clone(), settings.db_acquire_timeout),
        Arc::new(settings),
    )))
    .await;
    let credentials = json!({"email": unique_email("outage"), "password": TEST_PASSWORD});
    let signed_up = send(&app, json_request(Method::POST, "/users", &credentials)).await;
    assert_eq!(signed_up.status, StatusCode::CREATED, "{signed_up:?}");
    let session = send(&app, json_request(Method::POST, "/sessions", &credentials)).await;
    assert_eq!(session.status, StatusCode::CREATED, "{session:?}");
    let token = session.json()["token"].as_str().unwrap().to_owned();

    let created = create_note(&app, &token, "kept").await;
    let path = format!("/notes/{}", created.json()["id"]);

    proxy.cut();
    for request in [
        get(&path),
        get("/notes"),
        json_request(Method::POST, "/notes", &json!({"text": "lost"})),
        get("/readyz"),
    ] {
        let started = Instant::now();
        let reply = send_with_token(&app, request, &token).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{:?}",
            reply.body
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}, not quickly",
            started.elapsed()
        );
    }
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);

    proxy.restore();
    let back = Instant::now();
    loop {
        let reply = send_with_token(&app, get(&path), &token).await;
        if reply.status == StatusCode::OK {
            assert_eq!(
                reply.json()["text"],
                "kept",
                "what got a 201 is still there"
            );
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not recovered 10 s after the database came back: {}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create_note(&app, &token, "after").await;
    drop(app);
    pool.close().await.unwrap();
    drop(proxy);
    db.finish().await;
}

/// `POST /notes` with `text` as the holder of `token`: 201, or the test fails.
async fn create_note<S, B>(app: &S, token: &str, text: &str) -> tests::Reply
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let body = json!({ "text": text });
    let created = send_with_token(app, json_request(Method::POST, "/notes", &body), token).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    created
}
