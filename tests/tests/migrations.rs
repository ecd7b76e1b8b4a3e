//! The migrations against the entities, on every backend.

use entity::{note, user};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, Iterable, SqlErr, Statement,
};
use tests::{Backend, TestDb, backends, schema};

/// The column names of `table` as the database has them.
async fn database_columns(db: &DatabaseConnection, table: &str) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => format!("SELECT name FROM pragma_table_info('{table}') ORDER BY name"),
        DbBackend::Postgres => format!(
            "SELECT column_name AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY 1"
        ),
        _ => format!(
            "SELECT column_name AS name FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY 1"
        ),
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .collect()
}

fn entity_columns<C: Iterable + sea_orm::IdenStatic>() -> Vec<String> {
    let mut names: Vec<String> = C::iter().map(|c| c.as_str().to_owned()).collect();
    names.sort();
    names
}

#[backends(sqlite, postgres, mysql)]
async fn up_down_up_leaves_the_same_schema(backend: Backend) {
    let db = TestDb::private(backend, &[]).await;
    let conn = db.pool();
    let migrated = schema::fingerprint(conn).await;
    assert!(
        migrated.iter().any(|line| line.contains("users_email_key")),
        "{migrated:?}"
    );

    Migrator::down(conn, None).await.unwrap();
    assert!(
        schema::fingerprint(conn).await.is_empty(),
        "down to zero removes everything"
    );
    assert!(Migrator::get_pending_migrations(conn).await.unwrap().len() == 2);

    Migrator::up(conn, None).await.unwrap();
    assert_eq!(schema::fingerprint(conn).await, migrated);
    db.finish().await;
}

/// Drift check: the migrated tables have exactly the entities' columns, and every column
/// round-trips through the entity with its type.
#[backends(sqlite, postgres, mysql)]
async fn migrated_schema_matches_the_entities(backend: Backend) {
    let db = TestDb::private(backend, &[]).await;
    let conn = db.pool();
    assert_eq!(
        database_columns(conn, "notes").await,
        entity_columns::<note::Column>()
    );
    assert_eq!(
        database_columns(conn, "users").await,
        entity_columns::<user::Column>()
    );

    let when = "2030-01-02T03:04:05.123456Z".parse().unwrap();
    let note = note::ActiveModel {
        id: Set(41),
        text: Set("every column".to_owned()),
        completed: Set(true),
        created_at: Set(when),
        updated_at: Set(when),
    };
    let inserted = note::Entity::insert(note)
        .exec_with_returning(conn)
        .await
        .unwrap();
    let read = note::Entity::find_by_id(41)
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, inserted);
    assert_eq!((read.completed, read.created_at), (true, when));

    let user = user::ActiveModel {
        id: Set(42),
        email: Set("drift@example.com".to_owned()),
        name: Set(Some("Ünïcødé ✓".to_owned())),
        hashed_password: Set("$argon2id$placeholder".to_owned()),
        is_active: Set(false),
        created_at: Set(when),
        updated_at: Set(when),
    };
    user::Entity::insert(user).exec(conn).await.unwrap();
    let read = user::Entity::find_by_id(42)
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.name.as_deref(), Some("Ünïcødé ✓"));
    assert_eq!((read.is_active, read.updated_at), (false, when));

    let duplicate = user::ActiveModel {
        email: Set("drift@example.com".to_owned()),
        hashed_password: Set("x".to_owned()),
        is_active: Set(true),
        created_at: Set(when),
        updated_at: Set(when),
        ..Default::default()
    };
    let error = user::Entity::insert(duplicate)
        .exec(conn)
        .await
        .unwrap_err();
    assert!(
        matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
        "the unique index on email decides: {error}"
    );
    db.finish().await;
}

/// The entity rules apply to every program that saves through SeaORM.
#[backends(sqlite, postgres, mysql)]
async fn entity_rules_stamp_times_and_normalise_email(backend: Backend) {
    let db = TestDb::rollback(backend).await;
    let conn = db.conn();
    let saved = user::ActiveModel {
        email: Set("  Mixed.Case@Example.ORG ".to_owned()),
        hashed_password: Set("$argon2id$placeholder".to_owned()),
        ..sea_orm::ActiveModelBehavior::new()
    }
    .insert(&conn)
    .await
    .unwrap();
    assert_eq!(saved.email, "mixed.case@example.org");
    assert!(saved.is_active);
    assert_eq!(saved.created_at, saved.updated_at);

    let mut changed: user::ActiveModel = saved.clone().into();
    changed.name = Set(Some("Changed".to_owned()));
    let updated = changed.update(&conn).await.unwrap();
    assert!(updated.updated_at > saved.updated_at, "updated_at advances");
    assert_eq!(updated.created_at, saved.created_at, "created_at is kept");
    drop(conn);
    db.finish().await;
}
