//! `note::Listed` — the note as `GET /notes` and the export read it — decodes its columns by
//! position: on every backend, the columns `Listed::select` selects come back in the order
//! it reads them, and every field equals the stored row's.

use actix_web::http::StatusCode;
use entity::note;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use tests::{Backend, TestApp, backends};

#[backends(sqlite, postgres, mysql)]
async fn listed_notes_are_the_stored_rows_field_by_field(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let items: Vec<Value> = ["first", "", "third 😀 'x'", "fourth"]
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"text": text.to_string() + "!", "completed": i % 2 == 1}))
        .collect();
    let reply = app.post_json("/notes/bulk", &json!(items)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    // One note changed, so its updated_at differs from its created_at.
    let first = reply.json()[0]["id"].as_i64().unwrap();
    let reply = app
        .patch_json(&format!("/notes/{first}"), &json!({"text": "changed"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    let stored: Vec<note::Listed> = note::Entity::find()
        .order_by_desc(note::Column::Id)
        .all(app.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|row| note::Listed {
            id: row.id,
            user_id: row.user_id,
            text: row.text,
            completed: row.completed,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
        .collect();
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().any(|note| note.updated_at != note.created_at));

    // What the list route runs: filtered, ordered, limited, narrowed to the listed columns.
    let listed = note::Listed::select(
        note::Entity::find()
            .filter(note::Column::UserId.eq(me.id))
            .order_by_desc(note::Column::Id)
            .limit(100),
    )
    .all(app.conn())
    .await
    .unwrap();
    assert_eq!(listed, stored);
    // The entity's full select starts with the same columns: it decodes alike.
    let from_full = note::Entity::find()
        .order_by_desc(note::Column::Id)
        .into_model::<note::Listed>()
        .all(app.conn())
        .await
        .unwrap();
    assert_eq!(from_full, stored);
    app.finish().await;
}
