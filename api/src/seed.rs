//! The accounts and data the CLI commands put in place: `api seed-demo` (the demo user and a
//! few notes) and `api create-admin EMAIL`. Both are idempotent.

use entity::{note, session, user};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, TransactionTrait,
};

use crate::account::{HashError, Hasher, Password};

/// Why seeding or making an admin failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("password hashing: {0}")]
    Hashing(#[from] HashError),
}

pub const DEMO_EMAIL: &str = "johndoe@example.com";
const DEMO_NOTES: [&str; 3] = [
    "Read the README",
    "Try GET /notes?limit=2",
    "Export everything with GET /notes/export",
];

/// Whether an account was made or an existing one changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
}

/// Make sure the user `email` exists with `password` (a new password ends its sessions),
/// active, an admin when `admin` (an existing admin stays one).
async fn put_user(
    db: &DatabaseConnection,
    email: &str,
    name: Option<&str>,
    hashed_password: String,
    admin: bool,
) -> Result<(user::Model, Outcome), SeedError> {
    let txn = db.begin().await?;
    let existing = user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(&txn)
        .await?;
    let (user, outcome) = match existing {
        Some(existing) => {
            let id = existing.id;
            let was_admin = existing.is_admin;
            let mut changed = existing.into_active_model();
            changed.hashed_password = Set(hashed_password);
            changed.is_active = Set(true);
            changed.is_admin = Set(admin || was_admin);
            let user = changed.update(&txn).await?;
            session::Entity::delete_many()
                .filter(session::Column::UserId.eq(id))
                .exec(&txn)
                .await?;
            (user, Outcome::Updated)
        }
        None => {
            let user = user::ActiveModel {
                email: Set(email.to_owned()),
                name: Set(name.map(str::to_owned)),
                hashed_password: Set(hashed_password),
                is_admin: Set(admin),
                ..user::ActiveModel::new()
            }
            .insert(&txn)
            .await?;
            (user, Outcome::Created)
        }
    };
    txn.commit().await?;
    Ok((user, outcome))
}

/// `api create-admin EMAIL`: create the admin `email`, or make the existing user an admin,
/// with `password` (active; its earlier sessions end).
pub async fn create_admin(
    db: &DatabaseConnection,
    hasher: &Hasher,
    email: &str,
    password: Password,
) -> Result<Outcome, SeedError> {
    let hashed = hasher.hash(password).await?;
    let (_, outcome) = put_user(db, email, None, hashed, true).await?;
    Ok(outcome)
}

/// `api seed-demo`: insert what is missing of the demo data (running it twice changes
/// nothing but the password); the demo user gets a new random password, returned to be shown.
pub async fn seed_demo(db: &DatabaseConnection, hasher: &Hasher) -> Result<Password, SeedError> {
    let password = Password::random();
    let hashed = hasher
        .hash(Password::new(password.expose().to_owned()))
        .await?;
    let (demo, _) = put_user(db, DEMO_EMAIL, Some("John Doe"), hashed, false).await?;
    for text in DEMO_NOTES {
        let present = note::Entity::find()
            .filter(note::Column::UserId.eq(demo.id))
            .filter(note::Column::Text.eq(text))
            .count(db)
            .await?
            > 0;
        if !present {
            note::ActiveModel {
                user_id: Set(demo.id),
                text: Set(text.to_owned()),
                ..note::ActiveModel::new()
            }
            .insert(db)
            .await?;
        }
    }
    Ok(password)
}
