//! `api seed-demo`: the demo user and a few notes, inserted idempotently.

use entity::{note, user};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection,
    EntityTrait, PaginatorTrait, QueryFilter,
};

use crate::{http::error::ApiError, password::Password};

pub const DEMO_EMAIL: &str = "johndoe@example.com";
const DEMO_NOTES: [&str; 3] = [
    "Read the README",
    "Try GET /notes?limit=2",
    "Export everything with GET /notes/export",
];

/// Insert what is missing of the demo data; running it twice changes nothing.
pub async fn seed_demo(db: &DatabaseConnection) -> Result<(), ApiError> {
    let exists = user::Entity::find()
        .filter(user::Column::Email.eq(DEMO_EMAIL))
        .count(db)
        .await?
        > 0;
    if !exists {
        // A random password nobody knows: the demo user exists to be looked at.
        let password = Password::random();
        user::ActiveModel {
            email: Set(DEMO_EMAIL.to_owned()),
            name: Set(Some("John Doe".to_owned())),
            hashed_password: Set(password.hash().await?),
            ..user::ActiveModel::new()
        }
        .insert(db)
        .await?;
    }
    for text in DEMO_NOTES {
        let present = note::Entity::find()
            .filter(note::Column::Text.eq(text))
            .count(db)
            .await?
            > 0;
        if !present {
            note::ActiveModel {
                text: Set(text.to_owned()),
                ..note::ActiveModel::new()
            }
            .insert(db)
            .await?;
        }
    }
    Ok(())
}
