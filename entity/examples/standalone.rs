//! Another program using `entity` alone: connect to SQLite, migrate, insert a user and a
//! note they own, and read them back.
//!
//! Run with `cargo run --release -p entity --example standalone`.

use entity::prelude::*;
use entity::{note, user};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, Database, EntityTrait, ModelTrait,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sea_orm::DbErr> {
    let db = Database::connect("sqlite::memory:").await?;
    Migrator::up(&db, None).await?;

    let saved = user::ActiveModel {
        email: Set("  Ada@Example.COM ".to_owned()),
        name: Set(Some("Ada".to_owned())),
        // A real program stores an argon2id PHC string here.
        hashed_password: Set("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into()),
        ..user::ActiveModel::new()
    }
    .insert(&db)
    .await?;
    let read = User::find_by_id(saved.id)
        .one(&db)
        .await?
        .expect("the user");
    assert_eq!(
        read.email, "ada@example.com",
        "e-mail normalised by the entity's rules"
    );
    assert!(read.is_active, "users start active");
    assert!(!read.is_admin, "users start as non-admins");
    println!(
        "user {}: {} (active: {}, admin: {})",
        read.id, read.email, read.is_active, read.is_admin
    );
    let owner = read;

    // Every note has an owner: `user_id` names an existing user.
    let saved = note::ActiveModel {
        user_id: Set(owner.id),
        text: Set("Written by another program".to_owned()),
        ..note::ActiveModel::new()
    }
    .insert(&db)
    .await?;
    let read = Note::find_by_id(saved.id)
        .one(&db)
        .await?
        .expect("the note");
    assert_eq!(read, saved);
    assert!(!read.completed, "notes start not completed");
    assert_eq!(read.user_id, owner.id);
    println!(
        "note {}: {:?} of user {} (created {})",
        read.id, read.text, read.user_id, read.created_at
    );
    let owned = owner.find_related(Note).all(&db).await?;
    assert_eq!(owned, [read], "the user's notes, through the relation");

    db.close().await
}
