//! Tests of the harness itself: private databases equal to migrated ones, dropped when a
//! test finishes and when the process exits; rollback-mode isolation; refusal of leftovers.

use entity::{note, user};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait,
    PaginatorTrait, QueryFilter,
};
use tests::{
    Backend, RunDatabase, TestApp, TestDb, admin_url, backends, check_leftovers, drop_database,
    list_test_databases, parse_owner_pid, schema,
};

/// A private database — a copy of the run's template (a file copy, `CREATE DATABASE …
/// TEMPLATE`, or on MariaDB the template's `SHOW CREATE TABLE` statements) — has exactly the
/// schema and applied migrations of a database the `migration` crate migrated.
#[backends(sqlite, postgres, mysql)]
async fn private_database_equals_a_freshly_migrated_one(backend: Backend) {
    let run = RunDatabase::get(backend);
    let private = TestDb::private(backend, &[]).await;
    let migrated = run.migrated_database().await;
    let fresh = migration::database::connect_for_tool(migrated.url())
        .await
        .unwrap();

    let cloned_schema = schema::fingerprint(private.pool()).await;
    let migrated_schema = schema::fingerprint(&fresh).await;

    assert!(
        cloned_schema
            .iter()
            .any(|line| line.contains("users_email_key")),
        "{cloned_schema:?}"
    );
    assert_eq!(cloned_schema, migrated_schema);
    assert_eq!(
        schema::applied_migrations(private.pool()).await,
        schema::applied_migrations(&fresh).await
    );
    fresh.close().await.unwrap();
    migrated.drop_now().await;
    private.finish().await;
}

/// The app under test runs on the pool, as in production,
/// and its database is dropped when the test finishes.
#[backends(sqlite, postgres, mysql)]
async fn test_app_runs_on_the_pool_and_its_database_is_dropped_at_finish(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app.db().url().to_owned();
    let pooled = app.db().source().pool_status().is_some();

    app.finish().await;

    assert!(pooled, "the app runs on the pool");
    match backend {
        Backend::Sqlite => {
            let file = url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap();
            assert!(!std::path::Path::new(file).exists(), "{file} was removed");
        }
        _ => {
            // Dropped in the background, so that no test waits for a checkpoint.
            let name = database_name(&url);
            let admin = admin_url(&backend.configured_url().unwrap()).unwrap();
            let started = std::time::Instant::now();
            // The listing matches by prefix: `…_c1` also finds spares `…_c11`, `…_c12`.
            let exactly = |mut names: Vec<String>| {
                names.retain(|n| n == &name);
                names
            };
            let mut left = exactly(list_test_databases(&admin, &name).await.unwrap());
            while !left.is_empty() && started.elapsed() < std::time::Duration::from_secs(10) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                left = exactly(list_test_databases(&admin, &name).await.unwrap());
            }
            assert!(left.is_empty(), "{name} was dropped: {left:?}");
        }
    }
}

/// Both tests insert the same unique e-mail with SeaORM; each sees only its own transaction.
#[backends(sqlite, postgres, mysql)]
async fn rollback_isolation_first_insert_of_a_shared_email(backend: Backend) {
    insert_shared_email(backend).await;
}

#[backends(sqlite, postgres, mysql)]
async fn rollback_isolation_second_insert_of_a_shared_email(backend: Backend) {
    insert_shared_email(backend).await;
}

async fn insert_shared_email(backend: Backend) {
    let db = TestDb::rollback(backend).await;
    let user = user::ActiveModel {
        email: Set("shared@example.com".to_owned()),
        hashed_password: Set("$argon2id$placeholder".to_owned()),
        ..ActiveModelBehavior::new()
    };

    let inserted = user.insert(&db.conn()).await;

    assert!(inserted.is_ok(), "{inserted:?}");
    let seen = user::Entity::find()
        .filter(user::Column::Email.eq("shared@example.com"))
        .count(&db.conn())
        .await
        .unwrap();
    assert_eq!(seen, 1, "only this test's row");
    db.finish().await;
}

/// What a rollback-mode test writes is visible to the test, and gone after.
#[backends(sqlite, postgres, mysql)]
async fn rollback_mode_leaves_nothing_behind(backend: Backend) {
    let marker = format!("rollback-marker-{}", uuid::Uuid::new_v4());
    let db = TestDb::rollback(backend).await;
    // A note needs its owner.
    let owner = user::ActiveModel {
        email: Set(format!("{marker}@example.com")),
        hashed_password: Set("$argon2id$placeholder".to_owned()),
        ..ActiveModelBehavior::new()
    }
    .insert(&db.conn())
    .await
    .unwrap();
    note::ActiveModel {
        user_id: Set(owner.id),
        text: Set(marker.clone()),
        ..ActiveModelBehavior::new()
    }
    .insert(&db.conn())
    .await
    .unwrap();
    let seen = note::Entity::find()
        .filter(note::Column::Text.eq(marker.as_str()))
        .count(&db.conn())
        .await
        .unwrap();
    let url = db.url().to_owned();

    db.finish().await;

    assert_eq!(seen, 1, "the test sees what it wrote");
    let fresh = migration::database::connect_for_tool(&url).await.unwrap();
    let left = note::Entity::find()
        .filter(note::Column::Text.eq(marker.as_str()))
        .count(&fresh)
        .await
        .unwrap();
    assert_eq!(left, 0, "the rollback removed the note");
    let owners = user::Entity::find()
        .filter(user::Column::Email.eq(format!("{marker}@example.com")))
        .count(&fresh)
        .await
        .unwrap();
    assert_eq!(owners, 0, "and its owner");
    fresh.close().await.unwrap();
}

/// A `test_…` database of a process that is gone stops the run, named in the error, and is
/// left untouched. (SQLite runs live in a fresh temporary directory per process: no
/// leftover to refuse.)
#[backends(postgres, mysql)]
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

/// A test process drops every database it made (template, shared and private ones) when it
/// exits, whether it panicked or not.
#[backends(sqlite, postgres, mysql)]
async fn exiting_run_drops_its_databases_even_after_a_panic(backend: Backend) {
    for mode in ["panic", "pass"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_harness-probe"))
            .args([backend_arg(backend), mode])
            .output()
            .unwrap();

        assert_eq!(output.status.success(), mode == "pass", "{output:?}");
        let url = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let name = database_name(&url);
        if backend == Backend::Sqlite {
            let dir = std::env::temp_dir().join(&name);
            assert!(!dir.exists(), "{dir:?} was removed ({mode})");
        } else {
            let owner = parse_owner_pid(&name).unwrap();
            let admin = admin_url(&backend.configured_url().unwrap()).unwrap();
            let left: Vec<String> = list_test_databases(&admin, "test_")
                .await
                .unwrap()
                .into_iter()
                .filter(|n| parse_owner_pid(n) == Some(owner))
                .collect();
            assert!(left.is_empty(), "all dropped ({mode}): {left:?}");
        }
    }
}

/// The `test_…` database (or SQLite directory) named in `url`.
fn database_name(url: &str) -> String {
    url.split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .find(|part| part.starts_with("test_"))
        .unwrap_or_else(|| panic!("no test database in {url:?}"))
        .to_owned()
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
