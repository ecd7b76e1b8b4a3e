//! Tests of the harness itself: isolation, cleanup, refusal of leftovers.

use actix_web::http::{Method, StatusCode};
use entity::note;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use tests::{
    Backend, RunDatabase, TestDb, admin_url, check_leftovers, drop_database, each_backend,
    http::{json_request, send},
    list_test_databases, server_backends,
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

/// A `test_…` database of a process that is gone stops the run, named in the error, and is
/// left untouched.
async fn leftover_database_stops_the_run_and_survives(backend: Backend) {
    let admin = admin_url(&backend.configured_url().unwrap()).unwrap();
    // No process has this id (above the kernel's pid_max), so the database is a leftover.
    let leftover = format!("test_harnesscheck_4294967290_{:06x}_r", rand_suffix());
    create_database(&admin, &leftover).await;

    let error = check_leftovers(&admin, "harnesscheck").await.unwrap_err();
    assert!(error.contains(&leftover), "names the leftover: {error}");
    assert!(
        error.contains("clean-test-dbs"),
        "says how to remove it: {error}"
    );
    let still_there = list_test_databases(&admin, &leftover).await.unwrap();
    assert_eq!(
        still_there,
        std::slice::from_ref(&leftover),
        "the leftover is untouched"
    );

    drop_database(&admin, &leftover).await.unwrap();
    assert!(check_leftovers(&admin, "harnesscheck").await.is_ok());
}

/// A test process that panics still drops its databases when it exits.
async fn panicking_run_still_drops_its_database(backend: Backend) {
    for mode in ["panic", "pass"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_harness-probe"))
            .args([backend_arg(backend), mode])
            .output()
            .unwrap();
        assert_eq!(output.status.success(), mode == "pass", "{output:?}");
        let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let name = url
            .split('?')
            .next()
            .unwrap()
            .rsplit('/')
            .find(|part| part.starts_with("test_"))
            .unwrap_or_else(|| panic!("no test database in {url:?}"))
            .to_owned();
        if backend == Backend::Sqlite {
            let dir = std::env::temp_dir().join(&name);
            assert!(!dir.exists(), "{dir:?} was removed ({mode})");
        } else {
            let admin = admin_url(&backend.configured_url().unwrap()).unwrap();
            let left = list_test_databases(&admin, &name).await.unwrap();
            assert!(left.is_empty(), "{name} was dropped ({mode}): {left:?}");
        }
    }
}

each_backend!(
    isolation_first_insert_of_shared_email,
    isolation_second_insert_of_shared_email,
    rollback_mode_leaves_nothing_behind,
    panicking_run_still_drops_its_database,
);

/// SQLite runs live in a fresh temporary directory per process: no leftover to refuse.
mod servers {
    use super::*;
    server_backends!(leftover_database_stops_the_run_and_survives);
}

fn backend_arg(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::MySql => "mysql",
    }
}

fn rand_suffix() -> u128 {
    uuid::Uuid::new_v4().as_u128() & 0xff_ffff
}

async fn create_database(admin: &str, name: &str) {
    let conn = migration::database::connect_for_tool(admin).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(&conn, &format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[test]
fn sqlite_run_database_is_a_migrated_template() {
    let url = RunDatabase::get(Backend::Sqlite).url_for_test();
    assert!(url.starts_with("sqlite://"), "{url}");
}
