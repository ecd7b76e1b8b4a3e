//! The migrations against the entities, on every backend.

use chrono::{DateTime, Utc};
use entity::{account_token, idempotency_key, job, note, session, user};
use migration::{EARLIER_NOTES_EMAIL, Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, Iterable,
    PaginatorTrait, QueryFilter, QueryOrder, SqlErr, Statement,
    sea_query::{Expr, ExprTrait, Query},
};
use tests::{Backend, TestDb, backends, schema};

/// `error` is a unique constraint's violation: the unique index on `columns` decides.
fn assert_unique_violation(error: &DbErr, columns: &str) {
    assert!(
        matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
        "the unique index on {columns} decides: {error}"
    );
}

/// A user with `email` and a placeholder hash, saved through the entity (its rules apply).
async fn insert_user(db: &DatabaseConnection, email: &str) -> user::Model {
    user::ActiveModel {
        email: Set(email.to_owned()),
        hashed_password: Set("$argon2id$placeholder".to_owned()),
        ..ActiveModelBehavior::new()
    }
    .insert(db)
    .await
    .unwrap()
}

/// A user with `email` on a schema of before `email_verified`, written without the entity;
/// their id.
async fn insert_user_row(db: &DatabaseConnection, email: &str) -> i64 {
    use sea_orm::sea_query::{Alias, Query};
    let now = entity::now();
    let insert = Query::insert()
        .into_table(Alias::new("users"))
        .columns(
            [
                "email",
                "hashed_password",
                "is_active",
                "is_admin",
                "created_at",
                "updated_at",
            ]
            .map(Alias::new),
        )
        .values_panic([
            email.into(),
            "$argon2id$placeholder".into(),
            true.into(),
            false.into(),
            now.into(),
            now.into(),
        ])
        .to_owned();
    db.execute(&insert).await.unwrap();
    let select = Query::select()
        .column(Alias::new("id"))
        .from(Alias::new("users"))
        .and_where(sea_orm::sea_query::Expr::col(Alias::new("email")).eq(email))
        .to_owned();
    db.query_one(&select)
        .await
        .unwrap()
        .expect("the user just inserted")
        .try_get_by_index(0)
        .unwrap()
}

/// Migrations applied before `m20261201_000003_add_ownership`.
const BEFORE_OWNERSHIP: usize = 2;

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
    for name in [
        "users_email_key",
        "notes_user_id_id_idx",
        "sessions_token_digest_key",
        "sessions_user_id_idx",
        "sessions_expires_at_idx",
        "idempotency_keys_scope_key_key",
        "idempotency_keys_expires_at_idx",
    ] {
        assert!(
            migrated.iter().any(|line| line.contains(name)),
            "{name}: {migrated:?}"
        );
    }

    Migrator::down(conn, None).await.unwrap();
    assert!(
        schema::fingerprint(conn).await.is_empty(),
        "down to zero removes everything"
    );
    assert_eq!(
        Migrator::get_pending_migrations(conn).await.unwrap().len(),
        Migrator::migrations().len()
    );

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
    // The search index's generated column (PostgreSQL, MariaDB) is the database's own,
    // kept out of the entity.
    let mut notes_columns = database_columns(conn, "notes").await;
    notes_columns.retain(|name| name != "search" && name != "search_text");
    assert_eq!(notes_columns, entity_columns::<note::Column>());
    assert_eq!(
        database_columns(conn, "users").await,
        entity_columns::<user::Column>()
    );
    assert_eq!(
        database_columns(conn, "sessions").await,
        entity_columns::<session::Column>()
    );
    assert_eq!(
        database_columns(conn, "idempotency_keys").await,
        entity_columns::<idempotency_key::Column>()
    );
    assert_eq!(
        database_columns(conn, "account_tokens").await,
        entity_columns::<account_token::Column>()
    );
    assert_eq!(
        database_columns(conn, "jobs").await,
        entity_columns::<job::Column>()
    );
    assert_eq!(
        database_columns(conn, "throttle_events").await,
        entity_columns::<entity::throttle_event::Column>()
    );

    let when = "2030-01-02T03:04:05.123456Z".parse().unwrap();
    let owner = user::ActiveModel {
        id: Set(40),
        email: Set("owner@example.com".to_owned()),
        name: Set(None),
        hashed_password: Set("$argon2id$placeholder".to_owned()),
        is_active: Set(true),
        is_admin: Set(true),
        email_verified: Set(true),
        created_at: Set(when),
        updated_at: Set(when),
        version: Set(3),
    };
    let owner = user::Entity::insert(owner)
        .exec_with_returning(conn)
        .await
        .unwrap();
    assert!(owner.is_admin);
    let note = note::ActiveModel {
        id: Set(41),
        user_id: Set(owner.id),
        text: Set("every column".to_owned()),
        completed: Set(true),
        created_at: Set(when),
        updated_at: Set(when),
        version: Set(3),
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
        is_admin: Set(false),
        email_verified: Set(false),
        created_at: Set(when),
        updated_at: Set(when),
        version: Set(3),
    };
    user::Entity::insert(user).exec(conn).await.unwrap();
    let read = user::Entity::find_by_id(42)
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.name.as_deref(), Some("Ünïcødé ✓"));
    assert_eq!(
        (read.is_active, read.is_admin, read.updated_at),
        (false, false, when)
    );

    let expires = "2030-01-16T03:04:05.654321Z".parse().unwrap();
    let digest = session::digest("drift-token");
    let session = session::ActiveModel {
        id: Set(43),
        user_id: Set(owner.id),
        token_digest: Set(digest.clone()),
        created_at: Set(when),
        expires_at: Set(expires),
    };
    let inserted = session::Entity::insert(session)
        .exec_with_returning(conn)
        .await
        .unwrap();
    let read = session::Entity::find_by_id(43)
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, inserted);
    assert_eq!(
        (read.token_digest.as_str(), read.expires_at),
        (digest.as_str(), expires)
    );
    let same_token = session::ActiveModel {
        user_id: Set(42),
        token_digest: Set(digest),
        created_at: Set(when),
        expires_at: Set(expires),
        ..Default::default()
    };
    let error = session::Entity::insert(same_token)
        .exec(conn)
        .await
        .unwrap_err();
    assert_unique_violation(&error, "token_digest");

    let orphan = note::ActiveModel {
        user_id: Set(999_999),
        text: Set("nobody's".to_owned()),
        completed: Set(false),
        created_at: Set(when),
        updated_at: Set(when),
        ..Default::default()
    };
    let error = note::Entity::insert(orphan).exec(conn).await.unwrap_err();
    assert!(
        matches!(
            error.sql_err(),
            Some(SqlErr::ForeignKeyConstraintViolation(_))
        ),
        "a note's owner must exist: {error}"
    );

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
    assert_unique_violation(&error, "email");

    // An idempotency key keeps an answer larger than MySQL's TEXT (64 KiB), and one key per
    // scope.
    let answer = "x".repeat(200_000);
    let key = idempotency_key::ActiveModel {
        scope: Set(idempotency_key::Scope::User(owner.id).as_str()),
        user_id: Set(Some(owner.id)),
        key: Set("k".repeat(255)),
        fingerprint: Set(idempotency_key::fingerprint(&["drift"])),
        status: Set(201),
        location: Set(Some("/notes/41".to_owned())),
        etag: Set(Some("\"1\"".to_owned())),
        body: Set(answer.clone()),
        password_hash: Set(Some("$argon2id$placeholder".to_owned())),
        created_at: Set(when),
        expires_at: Set(expires),
        ..Default::default()
    };
    let inserted = idempotency_key::Entity::insert(key.clone())
        .exec_with_returning(conn)
        .await
        .unwrap();
    let read = idempotency_key::find(idempotency_key::Scope::User(owner.id), &"k".repeat(255))
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, inserted);
    assert_eq!(read.body, answer);
    let error = idempotency_key::Entity::insert(key)
        .exec(conn)
        .await
        .unwrap_err();
    assert_unique_violation(&error, "(scope, key)");
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

/// Apply or roll back migrations until exactly `count` are applied.
async fn migrate_to(db: &DatabaseConnection, count: usize) {
    let applied = Migrator::get_applied_migrations(db).await.unwrap().len();
    if count > applied {
        Migrator::up(db, Some((count - applied) as u32))
            .await
            .unwrap();
    } else if count < applied {
        Migrator::down(db, Some((applied - count) as u32))
            .await
            .unwrap();
    }
    assert_eq!(
        Migrator::get_applied_migrations(db).await.unwrap().len(),
        count
    );
}

/// A note as the table had it before notes had owners: id, text, completed, created_at,
/// updated_at.
type EarlierNote = (i64, String, bool, DateTime<Utc>, DateTime<Utc>);

/// Insert a note without an owner (the schema before `m20261201_000003_add_ownership`).
async fn insert_earlier_note(db: &DatabaseConnection, text: &str, completed: bool, at: &str) {
    let at: DateTime<Utc> = at.parse().unwrap();
    let insert = Query::insert()
        .into_table("notes")
        .columns(["text", "completed", "created_at", "updated_at"])
        .values_panic([text.into(), completed.into(), at.into(), at.into()])
        .to_owned();
    db.execute(&insert).await.unwrap();
}

/// Insert a user with the columns the table had before `is_admin`.
async fn insert_earlier_user(db: &DatabaseConnection, email: &str) {
    let at = Utc::now();
    let insert = Query::insert()
        .into_table("users")
        .columns([
            "email",
            "hashed_password",
            "is_active",
            "created_at",
            "updated_at",
        ])
        .values_panic([
            email.into(),
            "$argon2id$placeholder".into(),
            true.into(),
            at.into(),
            at.into(),
        ])
        .to_owned();
    db.execute(&insert).await.unwrap();
}

/// Every note's columns but the owner, by id (works with and without `user_id`).
async fn notes_without_owner(db: &DatabaseConnection) -> Vec<EarlierNote> {
    let select = Query::select()
        .columns(["id", "text", "completed", "created_at", "updated_at"])
        .from("notes")
        .order_by("id", sea_orm::Order::Asc)
        .to_owned();
    db.query_all(&select)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.try_get("", "id").unwrap(),
                row.try_get("", "text").unwrap(),
                row.try_get("", "completed").unwrap(),
                row.try_get("", "created_at").unwrap(),
                row.try_get("", "updated_at").unwrap(),
            )
        })
        .collect()
}

/// Every note's columns but the owner, by id, each checked to be `owner`'s.
async fn notes_owned_by(db: &DatabaseConnection, owner: i64) -> Vec<EarlierNote> {
    let notes = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .all(db)
        .await
        .unwrap();
    assert!(notes.iter().all(|n| n.user_id == owner), "{notes:?}");
    notes
        .into_iter()
        .map(|n| (n.id, n.text, n.completed, n.created_at, n.updated_at))
        .collect()
}

/// The placeholder owner of the notes from before accounts, if it exists.
async fn earlier_notes_owner(db: &DatabaseConnection) -> Option<user::Model> {
    user::Entity::find()
        .filter(user::Column::Email.eq(EARLIER_NOTES_EMAIL))
        .one(db)
        .await
        .unwrap()
}

/// Notes written before accounts existed survive the ownership migration — same ids, texts,
/// flags and times, owned by an inactive placeholder account — and its `down`, and another
/// `up`; the schema each time is the one a fresh migration makes.
#[backends(sqlite, postgres, mysql)]
async fn ownership_migration_keeps_earlier_notes_through_up_down_up(backend: Backend) {
    let db = TestDb::private(backend, &[]).await;
    let conn = db.pool();
    let latest = Migrator::migrations().len();
    let latest_schema = schema::fingerprint(conn).await;
    migrate_to(conn, BEFORE_OWNERSHIP).await;
    let earlier_schema = schema::fingerprint(conn).await;
    assert!(
        !database_columns(conn, "notes")
            .await
            .contains(&"user_id".to_owned())
    );

    // An account from before: it gets none of the notes, and is not an admin afterwards.
    insert_earlier_user(conn, "alice@example.com").await;
    insert_earlier_note(conn, "first", false, "2025-06-01T10:20:30.123456Z").await;
    insert_earlier_note(conn, "second ✓ ünïcødé", true, "2025-06-02T00:00:00Z").await;
    insert_earlier_note(conn, "third", false, "2025-06-03T23:59:59.999999Z").await;
    insert_earlier_note(conn, "deleted", false, "2025-06-04T12:00:00Z").await;
    let deleted = notes_without_owner(conn).await.last().unwrap().0;
    let delete = Query::delete()
        .from_table("notes")
        .and_where(Expr::col("id").eq(deleted))
        .to_owned();
    conn.execute(&delete).await.unwrap();
    let earlier = notes_without_owner(conn).await;
    assert_eq!(earlier.len(), 3);

    migrate_to(conn, latest).await;

    assert_eq!(
        schema::fingerprint(conn).await,
        latest_schema,
        "the schema a fresh migration makes"
    );
    let owner = earlier_notes_owner(conn)
        .await
        .expect("the placeholder owner");
    assert_eq!(owner.name.as_deref(), Some("Notes from before accounts"));
    assert_eq!(owner.hashed_password, "!", "no password verifies");
    assert!(!owner.is_active && !owner.is_admin, "{owner:?}");
    assert_eq!(
        notes_owned_by(conn, owner.id).await,
        earlier,
        "every note kept as it was"
    );
    let alice = user::Entity::find()
        .filter(user::Column::Email.eq("alice@example.com"))
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    assert!(alice.is_active && !alice.is_admin, "{alice:?}");
    assert_eq!(user::Entity::find().count(conn).await.unwrap(), 2);
    // Ids go on after the largest ever given, a deleted note's included.
    let after = note::ActiveModel {
        user_id: Set(alice.id),
        text: Set("after accounts".to_owned()),
        ..ActiveModelBehavior::new()
    }
    .insert(conn)
    .await
    .unwrap();
    assert!(after.id > deleted, "{} > {deleted}", after.id);

    migrate_to(conn, BEFORE_OWNERSHIP).await;

    assert_eq!(
        schema::fingerprint(conn).await,
        earlier_schema,
        "down restores the schema before ownership"
    );
    let mut expected = earlier.clone();
    expected.push((
        after.id,
        after.text.clone(),
        after.completed,
        after.created_at,
        after.updated_at,
    ));
    assert_eq!(
        notes_without_owner(conn).await,
        expected,
        "down keeps every note"
    );

    migrate_to(conn, latest).await;

    assert_eq!(schema::fingerprint(conn).await, latest_schema);
    let again = earlier_notes_owner(conn).await.unwrap();
    assert_eq!(again.id, owner.id, "the placeholder owner is reused");
    assert_eq!(user::Entity::find().count(conn).await.unwrap(), 2);
    assert_eq!(notes_owned_by(conn, owner.id).await, expected);
    db.finish().await;
}

/// With no notes to own, the ownership migration makes no placeholder account — on a fresh
/// database, and on one that had users but no notes.
#[backends(sqlite, postgres, mysql)]
async fn ownership_migration_without_notes_makes_no_placeholder_user(backend: Backend) {
    let db = TestDb::private(backend, &[]).await;
    let conn = db.pool();
    assert!(earlier_notes_owner(conn).await.is_none(), "fresh database");
    assert_eq!(user::Entity::find().count(conn).await.unwrap(), 0);

    migrate_to(conn, BEFORE_OWNERSHIP).await;
    insert_earlier_user(conn, "bob@example.com").await;
    migrate_to(conn, Migrator::migrations().len()).await;

    assert!(
        earlier_notes_owner(conn).await.is_none(),
        "users but no notes"
    );
    assert_eq!(user::Entity::find().count(conn).await.unwrap(), 1);
    db.finish().await;
}

/// Deleting a user deletes their notes and sessions (the foreign keys cascade), and nobody
/// else's.
#[backends(sqlite, postgres, mysql)]
async fn deleting_a_user_deletes_their_notes_and_sessions(backend: Backend) {
    let db = TestDb::private(backend, &[]).await;
    let conn = db.pool();
    let mut users = Vec::new();
    for email in ["gone@example.com", "stays@example.com"] {
        let user = insert_user(conn, email).await;
        for n in 0..2 {
            note::ActiveModel {
                user_id: Set(user.id),
                text: Set(format!("{email} {n}")),
                ..ActiveModelBehavior::new()
            }
            .insert(conn)
            .await
            .unwrap();
            let now = Utc::now();
            session::ActiveModel {
                user_id: Set(user.id),
                token_digest: Set(session::digest(&format!("{email} token {n}"))),
                created_at: Set(now),
                expires_at: Set(now + chrono::Duration::days(14)),
                ..Default::default()
            }
            .insert(conn)
            .await
            .unwrap();
        }
        users.push(user);
    }
    let (gone, stays) = (&users[0], &users[1]);

    let deleted = user::Entity::delete_by_id(gone.id)
        .exec(conn)
        .await
        .unwrap();

    assert_eq!(deleted.rows_affected, 1);
    let notes_of = |id: i64| {
        note::Entity::find()
            .filter(note::Column::UserId.eq(id))
            .count(conn)
    };
    let sessions_of = |id: i64| {
        session::Entity::find()
            .filter(session::Column::UserId.eq(id))
            .count(conn)
    };
    assert_eq!(notes_of(gone.id).await.unwrap(), 0, "their notes are gone");
    assert_eq!(
        sessions_of(gone.id).await.unwrap(),
        0,
        "their sessions are gone"
    );
    assert_eq!(notes_of(stays.id).await.unwrap(), 2, "others' notes stay");
    assert_eq!(
        sessions_of(stays.id).await.unwrap(),
        2,
        "others' sessions stay"
    );
    assert_eq!(note::Entity::find().count(conn).await.unwrap(), 2);
    assert_eq!(session::Entity::find().count(conn).await.unwrap(), 2);
    db.finish().await;
}

/// The search migrations index the notes already there, `down` keeps every note, and `up`
/// again indexes them again — what `GET /notes?q=` then finds, through the statement the
/// server runs.
#[backends(sqlite, postgres, mysql)]
async fn search_migration_indexes_existing_notes_through_up_down_up(backend: Backend) {
    let db = TestDb::private(backend, &[]).await;
    let conn = db.pool();
    let latest = Migrator::migrations().len();
    let before_search = Migrator::migrations()
        .iter()
        .position(|migration| migration.name() == "m20261206_000008_search_notes")
        .unwrap();
    migrate_to(conn, before_search).await;
    // Written by hand: the entity knows columns this older schema has not got yet.
    let owner = insert_user_row(conn, "searcher@example.com").await;
    let mut ids = Vec::new();
    for text in ["an older walrus", "walrus and WITH", "nothing here"] {
        let note = note::ActiveModel {
            user_id: Set(owner),
            text: Set(text.to_owned()),
            ..note::ActiveModel::new()
        }
        .insert(conn)
        .await
        .unwrap();
        ids.push(note.id);
    }
    // Every batch of candidates, tier after tier, as `GET /notes?q=` reads them.
    let found = async |query: &str| -> Vec<i64> {
        let query = api::search::Query::parse(query).unwrap();
        let mut page = api::search::sql::Page {
            owner,
            completed: None,
            after: None,
            limit: 10,
            widen: false,
        };
        let mut ids = Vec::new();
        loop {
            let batch = api::search::sql::batch(&query, &page, conn.get_database_backend());
            let rows = conn.query_all_raw(batch.statement).await.unwrap();
            for row in &rows {
                ids.push(row.try_get_by_index::<i64>(0).unwrap());
                page.after = Some((row.try_get_by_index(6).unwrap(), *ids.last().unwrap()));
            }
            if rows.len() < 10 {
                match batch.then {
                    Some(next) => page.after = Some(next),
                    None => break,
                }
            }
        }
        ids.sort();
        ids
    };

    migrate_to(conn, latest).await;
    assert_eq!(found("walrus").await, [ids[0], ids[1]]);
    assert_eq!(found("with").await, [ids[1]], "no stop words");
    migrate_to(conn, before_search).await;
    assert_eq!(
        note::Entity::find().count(conn).await.unwrap(),
        3,
        "down keeps the notes"
    );
    migrate_to(conn, latest).await;
    assert_eq!(found("walrus").await, [ids[0], ids[1]]);
    db.finish().await;
}
