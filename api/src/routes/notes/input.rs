//! What `POST /notes`, `POST /notes/bulk` and `PATCH /notes/{id}` accept, parsed field by
//! field (every bad field named).

use entity::note;
use sea_orm::{ActiveModelBehavior, ActiveValue::Set};
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::{
    error::FieldError,
    input::{Fields, FromJson, join},
};

/// The longest note text, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// The most notes one `POST /notes/bulk` creates.
pub const MAX_BULK_ITEMS: usize = 5000;

/// `POST /notes` body (also each item of `POST /notes/bulk`).
#[derive(Clone, ToSchema)]
pub struct NewNote {
    /// 1 to 10 000 characters.
    pub text: String,
    #[schema(default = false, required = false)]
    pub completed: bool,
}

impl FromJson for NewNote {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let text = fields.required_text("text", 1..=MAX_TEXT_CHARS);
        let completed = fields.optional_bool("completed");
        fields.finish(|| {
            Some(Self {
                text: text?,
                completed: completed.unwrap_or(false),
            })
        })
    }
}

impl NewNote {
    /// The note as one fingerprint part: the same for every JSON that parses to it.
    pub fn canonical(&self) -> String {
        format!("{}:{}", self.completed, self.text)
    }

    pub fn into_active_model(self, owner: i64) -> note::ActiveModel {
        note::ActiveModel {
            user_id: Set(owner),
            text: Set(self.text),
            completed: Set(self.completed),
            ..note::ActiveModel::new()
        }
    }
}

/// `POST /notes/bulk` body: 1..=5000 notes.
#[derive(ToSchema)]
pub struct NewNotes(pub Vec<NewNote>);

impl FromJson for NewNotes {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let Value::Array(items) = value else {
            return Err(vec![FieldError::new(
                "body",
                "must be a JSON array of notes",
            )]);
        };
        if items.is_empty() || items.len() > MAX_BULK_ITEMS {
            return Err(vec![FieldError::new(
                "body",
                format!("must hold 1 to {MAX_BULK_ITEMS} notes"),
            )]);
        }
        let mut notes = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match NewNote::from_json(item, &join(path, &format!("[{i}]"))) {
                Ok(note) => notes.push(note),
                Err(mut item_errors) => errors.append(&mut item_errors),
            }
        }
        if errors.is_empty() {
            Ok(Self(notes))
        } else {
            Err(errors)
        }
    }
}

/// `PATCH /notes/{id}` body: the fields to change.
#[derive(ToSchema)]
pub struct NotePatch {
    #[schema(required = false, nullable = false)]
    pub text: Option<String>,
    #[schema(required = false, nullable = false)]
    pub completed: Option<bool>,
}

impl FromJson for NotePatch {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let text = fields.optional_text("text", 1..=MAX_TEXT_CHARS);
        let completed = fields.optional_bool("completed");
        fields.finish(|| Some(Self { text, completed }))
    }
}
