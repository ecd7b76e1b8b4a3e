//! A commit that fails reaches the client as a 503 problem — never as the handler's 2xx for
//! data that was not stored. (The middleware commits before the response head is sent.)

use actix_web::http::StatusCode;
use entity::note;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tests::{Backend, TestApp, assert_problem, backends};

#[backends(postgres, mysql)]
async fn failed_commit_is_a_503_and_nothing_is_stored(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(backend, &[("DB_POOL_MAX", "2")]).await;

    let reply = app.post("/__test/commit-fails").await;
    assert_problem(&reply, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.header("retry-after").is_some());

    let stored = note::Entity::find()
        .filter(note::Column::Text.eq("commit-fails"))
        .count(app.conn())
        .await
        .unwrap();
    assert_eq!(stored, 0, "the write was not stored");
    let health = app.get("/notes").await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "the pool replaced the lost connection"
    );
    app.finish().await;
}
