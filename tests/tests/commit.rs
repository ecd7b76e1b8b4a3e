//! A commit that fails reaches the client as a 503 problem — never as the handler's 2xx for
//! data that was not stored. (The middleware commits before the response head is sent.)

use actix_web::{http::StatusCode, test::TestRequest};
use entity::note;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tests::{Backend, TestDb, http::send, server_backends};

async fn failed_commit_is_a_503_and_nothing_is_stored(backend: Backend) {
    let db = TestDb::committed(backend, &[("DB_POOL_MAX", "2")]).await;
    let app = db.app().await;

    let reply = send(&app, TestRequest::post().uri("/__test/commit-fails")).await;
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
    assert!(reply.header("retry-after").is_some());

    let stored = note::Entity::find()
        .filter(note::Column::Text.eq("commit-fails"))
        .count(db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0, "the write was not stored");
    let health = send(&app, TestRequest::get().uri("/notes")).await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "the pool replaced the lost connection"
    );
    drop(app);
    db.finish().await;
}

server_backends!(failed_commit_is_a_503_and_nothing_is_stored);
