//! A note as the API shows it.

use chrono::{DateTime, Utc};
use entity::note;
use serde::Serialize;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr, Schema,
        schema::{AnyOfBuilder, ArrayBuilder, Ref},
    },
};

use super::FoundNote;

/// A note as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Note)]
pub struct NoteView {
    /// Positive, assigned by the server.
    pub id: i64,
    /// The owner: the user who created the note.
    pub user_id: i64,
    pub text: String,
    pub completed: bool,
    /// When the note was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When the note last changed (RFC 3339, UTC); advances on every change.
    pub updated_at: DateTime<Utc>,
}

impl From<note::Model> for NoteView {
    fn from(note: note::Model) -> Self {
        note::Listed::from(note).into()
    }
}

/// A note as lists and exports read it (every column but `version`).
impl From<note::Listed> for NoteView {
    fn from(note: note::Listed) -> Self {
        Self {
            id: note.id,
            user_id: note.user_id,
            text: note.text,
            completed: note.completed,
            created_at: note.created_at,
            updated_at: note.updated_at,
        }
    }
}

/// What `GET /notes` answers: notes in id order, or, with `q`, search results best first.
/// Described as `anyOf` (not `oneOf`): an empty page, or a page of results — which are notes
/// too — fits both.
pub struct NotesPage;

impl utoipa::PartialSchema for NotesPage {
    fn schema() -> RefOr<Schema> {
        let page_of = |item: &str| ArrayBuilder::new().items(Ref::from_schema_name(item));
        AnyOfBuilder::new()
            .item(page_of("Note"))
            .item(page_of("FoundNote"))
            .description(Some(
                "notes in id order, or, with `q`, search results best first",
            ))
            .into()
    }
}

impl ToSchema for NotesPage {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((NoteView::name().into(), NoteView::schema()));
        <NoteView as ToSchema>::schemas(schemas);
        schemas.push((FoundNote::name().into(), FoundNote::schema()));
        <FoundNote as ToSchema>::schemas(schemas);
    }
}
