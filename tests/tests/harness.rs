//! Tests of the harness itself: isolation, cleanup, refusal of leftovers.

use actix_web::http::{Method, StatusCode};
use entity::note;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use tests::{
    Backend, RunDatabase, TestDb, each_backend,
    http::{json_request, send},
};

/// Both tests insert the same unique e-mail; each sees only its own transaction.
async fn isolation_first_insert_of_shared_email(backend: Backend) {
    insert_shared_email(backend).await;
}

async fn isolation_second_insert_of_shared_email(backend: Backend) {
    insert_shared_email(backend).await;
}

async fn insert_shared_email(backend: Backend) {
    let db = TestDb::rollback(backend).await;
    let app = db.app().await;
    let body = json!({"email": "shared@example.com", "password": "correct horse"});
    let reply = send(&app, json_request(Method::POST, "/users", &body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    drop(app);
    db.finish().await;
}

/// What a rollback-mode test writes through the app is visible to the test, and gone after.
async fn rollback_mode_leaves_nothing_behind(backend: Backend) {
    let marker = format!("rollback-marker-{}", uuid::Uuid::new_v4());
    let db = TestDb::rollback(backend).await;
    let app = db.app().await;
    let reply = send(
        &app,
        json_request(Method::POST, "/notes", &json!({"text": marker})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let seen = note::Entity::find()
        .filter(note::Column::Text.eq(marker.as_str()))
        .count(&db.conn())
        .await
        .unwrap();
    assert_eq!(seen, 1, "the test sees what the app wrote");
    let url = db.url().to_owned();
    drop(app);
    db.finish().await;

    let fresh = migration::database::connect_for_tool(&url).await.unwrap();
    let left = note::Entity::find()
        .filter(note::Column::Text.eq(marker.as_str()))
        .count(&fresh)
        .await
        .unwrap();
    assert_eq!(left, 0, "the rollback removed the note");
    fresh.close().await.unwrap();
}

each_backend!(
    isolation_first_insert_of_shared_email,
    isolation_second_insert_of_shared_email,
    rollback_mode_leaves_nothing_behind,
);

#[test]
fn sqlite_run_database_is_a_migrated_template() {
    let url = RunDatabase::get(Backend::Sqlite).url_for_test();
    assert!(url.starts_with("sqlite://"), "{url}");
}
