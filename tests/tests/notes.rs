//! The `/notes` routes, as the contract describes them, on every backend.
//!
//! Each test drives the app as production runs it — on the pool, over a database of its own
//! (so the notes table starts empty) — and checks every field of every note it reads back
//! against what it sent and against the row SeaORM reads from the database: a route that
//! decoded columns into the wrong fields fails here.

use std::collections::HashMap;

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use chrono::Utc;
use entity::note;
use sea_orm::{EntityTrait, PaginatorTrait, QueryOrder};
use serde_json::{Value, json};
use tests::{
    Backend, TestApp, assert_problem, backends,
    fixtures::{
        array, create_note, export_lines, id_of, ids, next_link, note_path, signed_in_with_note,
        sorted_keys, time_of,
    },
    http::{Reply, assert_case_problem, assert_common_headers, get, json_request},
};

const MAX_TEXT_CHARS: usize = 10_000;
const MAX_BULK_ITEMS: usize = 5000;

/// Texts that must be stored and shown exactly as sent.
const HOSTILE_TEXTS: &[&str] = &[
    "'; DROP TABLE notes; --",
    "\" OR 1=1 --",
    "1' OR '1'='1",
    "Robert'); DELETE FROM notes WHERE ('1'='1",
    "x'); SELECT SLEEP(5); SELECT pg_sleep(5); --",
    "%s %d {} $1 ? :name @p1",
    "back\\slash \\\\ \\' \\\" \"double\" 'single' `backtick`",
    "😀👍🏽🚀",
    "👨\u{200D}👩\u{200D}👧",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 🀄",
    "\u{202E}reversed\u{202C} \u{200F}عربي\u{200E} עברית",
    "e\u{0301} n\u{0303} a\u{0308}\u{0304}",
    "\u{FEFF}byte order mark",
    "日本語のテキスト",
    "tab\tnewline\ncarriage\rreturn",
    "\u{1}\u{1F}\u{7F} control characters",
    "  leading and trailing spaces  ",
    "<script>alert('x')</script>",
    "null",
    "true",
    "0",
];

// ---------------------------------------------------------------- helpers

async fn post_note(app: &TestApp, body: Value) -> Reply {
    app.post_json("/notes", &body).await
}

/// Create `count` notes in one bulk request, `completed` alternating when `alternate`.
async fn create_notes(app: &TestApp, count: usize, alternate: bool) -> Vec<Value> {
    let items: Vec<Value> = (0..count)
        .map(|i| json!({"text": format!("note {i}"), "completed": alternate && i % 2 == 1}))
        .collect();
    let reply = app.post_json("/notes/bulk", &Value::Array(items)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    array(&reply.json())
}

/// Change `note`'s text through the API (so its `updated_at` differs from its `created_at`)
/// and return it as changed.
async fn edit_note(app: &TestApp, note: &Value) -> Value {
    let path = note_path(note);
    let text = format!("{} (edited)", note["text"].as_str().unwrap());
    let reply = app.patch_json(&path, &json!({"text": text})).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let edited = reply.json();
    assert!(
        time_of(&edited, "updated_at") > time_of(&edited, "created_at"),
        "an edited note's times differ: {edited}"
    );
    edited
}

/// Notes whose every field tells them apart: distinct texts, both `completed` values, and
/// (every other note edited) `updated_at` after `created_at` — so reading any column into
/// the wrong field shows.
async fn create_distinct_notes(app: &TestApp, count: usize) -> Vec<Value> {
    let mut notes = Vec::new();
    for i in 0..count {
        let body = json!({"text": format!("distinct {i} ✓"), "completed": i % 3 == 1});
        let note = create_note(app, None, &body).await.json();
        notes.push(if i % 2 == 0 {
            edit_note(app, &note).await
        } else {
            note
        });
    }
    notes
}

async fn list(app: &TestApp, path: &str) -> Reply {
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {path}: {reply:?}");
    reply
}

/// The notes of a `GET` list answer.
async fn listed(app: &TestApp, path: &str) -> Vec<Value> {
    array(&list(app, path).await.json())
}

/// The app shows no notes: the test's database starts with an empty table.
async fn assert_no_notes(app: &TestApp) {
    assert_eq!(list(app, "/notes").await.json(), json!([]));
}

/// [`TestApp::signed_in`], checked to show no notes yet.
async fn signed_in_with_no_notes(backend: Backend) -> TestApp {
    let (app, _) = TestApp::signed_in(backend).await;
    assert_no_notes(&app).await;
    app
}

fn request(method: Method, path: &str) -> TestRequest {
    TestRequest::default().method(method).uri(path)
}

fn raw_json_request(method: Method, path: &str, body: impl Into<Vec<u8>>) -> TestRequest {
    request(method, path)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.into())
}

/// A note exactly as the contract shows it: these six fields and no other.
fn assert_note_shape(note: &Value) {
    assert_eq!(
        sorted_keys(note),
        [
            "completed",
            "created_at",
            "id",
            "text",
            "updated_at",
            "user_id"
        ],
        "{note}"
    );
    assert!(id_of(note) > 0, "{note}");
    assert!(note["user_id"].as_i64().is_some_and(|id| id > 0), "{note}");
    assert!(note["text"].is_string(), "{note}");
    assert!(note["completed"].is_boolean(), "{note}");
    let created_at = time_of(note, "created_at");
    let updated_at = time_of(note, "updated_at");
    assert!(updated_at >= created_at, "{note}");
}

/// `shown` is `row`, field by field: id, user_id, text, completed, created_at, updated_at.
fn assert_shows_row(shown: &Value, row: &note::Model) {
    assert_note_shape(shown);
    assert_eq!(id_of(shown), row.id, "id of {shown}");
    assert_eq!(shown["user_id"], row.user_id, "user_id of {shown}");
    assert_eq!(shown["text"], row.text.as_str(), "text of {shown}");
    assert_eq!(shown["completed"], row.completed, "completed of {shown}");
    assert_eq!(
        time_of(shown, "created_at"),
        row.created_at,
        "created_at of {shown}"
    );
    assert_eq!(
        time_of(shown, "updated_at"),
        row.updated_at,
        "updated_at of {shown}"
    );
}

/// Every note shown is its row as SeaORM reads it from the database, field by field.
async fn assert_shown_as_stored(app: &TestApp, shown: &[Value]) {
    let rows: HashMap<i64, note::Model> = note::Entity::find()
        .all(app.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    for note in shown {
        let row = rows
            .get(&id_of(note))
            .unwrap_or_else(|| panic!("no row for {note}"));
        assert_shows_row(note, row);
    }
}

/// A 4xx problem (never a 5xx), whichever client error it is.
fn assert_client_problem(reply: &Reply, what: &str) -> Value {
    assert!(
        reply.status.is_client_error(),
        "{what}: expected 4xx, got {reply:?}"
    );
    assert_problem(reply, reply.status)
}

/// The field names of a 422 problem's `errors` list.
fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {problem}"))
        .iter()
        .map(|e| {
            e["field"]
                .as_str()
                .unwrap_or_else(|| panic!("no field: {e}"))
                .to_owned()
        })
        .collect()
}

async fn count_notes(app: &TestApp) -> u64 {
    note::Entity::find().count(app.conn()).await.unwrap()
}

// ---------------------------------------------------------------- create and get

#[backends(sqlite, postgres, mysql)]
async fn notes_table_starts_empty_in_each_test(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    let reply = list(&app, "/notes").await;

    assert_eq!(reply.json(), json!([]));
    assert_eq!(count_notes(&app).await, 0);
    app.finish().await;
}

/// The 201 body is the note as stored and as `GET` then shows it, every field.
#[backends(sqlite, postgres, mysql)]
async fn creates_note_with_exact_shape_and_location(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let before = Utc::now() - chrono::Duration::seconds(5);

    let reply = post_note(&app, json!({"text": "buy milk"})).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_common_headers(&reply);
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "no cache keeps it"
    );
    let note = reply.json();
    assert_note_shape(&note);
    let id = id_of(&note);
    assert_eq!(
        reply.header("location"),
        Some(format!("/notes/{id}").as_str())
    );
    assert_eq!(note["text"], "buy milk");
    assert_eq!(note["user_id"], me.id, "the caller owns the note");
    assert_eq!(note["completed"], false, "completed defaults to false");
    assert_eq!(note["created_at"], note["updated_at"]);
    let created_at = time_of(&note, "created_at");
    let after = Utc::now() + chrono::Duration::seconds(5);
    assert!(before < created_at && created_at < after, "{created_at}");
    let stored = note::Entity::find_by_id(id)
        .one(app.conn())
        .await
        .unwrap()
        .expect("the note is stored");
    assert_shows_row(&note, &stored);
    let fetched = app.get(&format!("/notes/{id}")).await;
    assert_eq!(fetched.json(), note, "GET shows what POST answered");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn creates_completed_note_when_asked(backend: Backend) {
    let body = json!({"text": "done already", "completed": true});

    let (app, created, path) = signed_in_with_note(backend, &body).await;

    let note = created.json();
    assert_eq!(note["text"], "done already");
    assert_eq!(note["completed"], true);
    assert_shown_as_stored(&app, std::slice::from_ref(&note)).await;
    let fetched = app.get(&path).await;
    assert_eq!(fetched.json(), note, "GET shows what POST answered");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn create_ignores_client_supplied_id_and_timestamps(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let body = json!({
        "text": "mine",
        "id": 424242,
        "created_at": "2001-01-01T00:00:00Z",
        "updated_at": "2001-01-01T00:00:00Z",
    });

    let note = create_note(&app, None, &body).await.json();

    assert_note_shape(&note);
    assert_ne!(note["id"], 424242);
    assert!(time_of(&note, "created_at").timestamp() > 978_307_200);
    assert_eq!(app.get("/notes/424242").await.status, StatusCode::NOT_FOUND);
    app.finish().await;
}

/// `GET /notes/{id}` shows every field as stored: notes that differ in every field (some
/// edited, so their two times differ) each come back exactly as created or edited.
#[backends(sqlite, postgres, mysql)]
async fn get_shows_every_field_of_the_note_as_stored(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let notes = create_distinct_notes(&app, 4).await;

    let mut fetched = Vec::new();
    for note in &notes {
        let reply = app.get(&note_path(note)).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_common_headers(&reply);
        fetched.push(reply.json());
    }

    assert_eq!(fetched, notes, "timestamps survive the round trip");
    assert_shown_as_stored(&app, &fetched).await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn get_of_missing_note_is_404_problem(backend: Backend) {
    let (app, created, _) = signed_in_with_note(backend, &json!({"text": "only one"})).await;
    let missing = id_of(&created.json()) + 1000;

    let reply = app.get(&format!("/notes/{missing}")).await;
    let largest = app.get(&format!("/notes/{}", i64::MAX)).await;

    assert_problem(&reply, StatusCode::NOT_FOUND);
    assert_problem(&largest, StatusCode::NOT_FOUND);
    app.finish().await;
}

// ---------------------------------------------------------------- list

#[backends(sqlite, postgres, mysql)]
async fn lists_every_field_of_every_note_in_id_order(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let created = create_distinct_notes(&app, 5).await;

    let reply = list(&app, "/notes").await;

    assert_common_headers(&reply);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("link"), None, "a short page has no next link");
    let listed = array(&reply.json());
    assert_eq!(listed, created);
    assert_shown_as_stored(&app, &listed).await;
    let listed_ids = ids(&listed);
    assert!(listed_ids.windows(2).all(|w| w[0] < w[1]), "{listed_ids:?}");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_defaults_to_100_notes(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let created = create_notes(&app, 101, false).await;

    let reply = list(&app, "/notes").await;

    assert_eq!(array(&reply.json()), created[..100]);
    let next = next_link(&reply).expect("a full page links to the next one");
    assert_eq!(listed(&app, &next).await, created[100..]);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_accepts_limit_from_1_to_1000(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let created = create_distinct_notes(&app, 3).await;

    let one = listed(&app, "/notes?limit=1").await;
    let thousand = listed(&app, "/notes?limit=1000").await;

    assert_eq!(one, created[..1]);
    assert_eq!(thousand, created);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_rejects_limit_out_of_range_with_422(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    for limit in ["0", "1001", "-1", "18446744073709551616"] {
        let reply = app.get(&format!("/notes?limit={limit}")).await;

        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&problem), ["limit"], "limit={limit}");
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_rejects_non_numeric_parameters_with_4xx(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    for query in [
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=%F0%9F%98%80",
        "limit=1%20OR%201=1",
        "limit=+5",
        "limit=5%20",
        "after=abc",
        "after=-1",
        "after=1.5",
        "after=18446744073709551616",
        "after=9223372036854775808",
        "after=+1",
        "after=1;DROP%20TABLE%20notes",
        "completed=yes",
        "completed=1",
        "completed=TRUE",
        "completed=",
    ] {
        let reply = app.get(&format!("/notes?{query}")).await;

        assert!(
            matches!(reply.status.as_u16(), 400 | 422),
            "{query}: {reply:?}"
        );
        assert_client_problem(&reply, query);
    }
    let overlong = format!("/notes?limit=10&pad={}", "x".repeat(4096));
    let reply = app.get(&overlong).await;
    assert_problem(&reply, StatusCode::BAD_REQUEST);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_ignores_unknown_parameters(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let created = create_notes(&app, 2, false).await;

    let shown = listed(&app, "/notes?utm_source=mail&_=12345").await;

    assert_eq!(shown, created);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_after_returns_only_later_notes(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let created = create_distinct_notes(&app, 5).await;
    let second = id_of(&created[1]);
    let last = id_of(&created[4]);

    let later = listed(&app, &format!("/notes?after={second}")).await;
    let none = listed(&app, &format!("/notes?after={last}")).await;
    let all = listed(&app, "/notes?after=0").await;
    let beyond = listed(&app, &format!("/notes?after={}", i64::MAX)).await;

    assert_eq!(later, created[2..]);
    assert_shown_as_stored(&app, &later).await;
    assert_eq!(none, Vec::<Value>::new());
    assert_eq!(all, created);
    assert_eq!(beyond, Vec::<Value>::new());
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_after_with_limit_pages_through_later_notes(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let created = create_distinct_notes(&app, 5).await;
    let first = id_of(&created[0]);

    let page = list(&app, &format!("/notes?after={first}&limit=2")).await;
    let swapped = listed(&app, &format!("/notes?limit=2&after={first}")).await;

    assert_eq!(array(&page.json()), created[1..3]);
    assert_eq!(swapped, created[1..3], "parameter order does not matter");
    let next = next_link(&page).expect("a full page links to the next one");
    let rest = list(&app, &next).await;
    assert_eq!(array(&rest.json()), created[3..5]);
    let last = next_link(&rest).expect("a full page links on, even to an empty one");
    assert_eq!(listed(&app, &last).await, Vec::<Value>::new());
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_filters_by_completed(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let created = create_distinct_notes(&app, 6).await;
    let (done, open): (Vec<Value>, Vec<Value>) = created
        .iter()
        .cloned()
        .partition(|n| n["completed"] == true);

    let completed = listed(&app, "/notes?completed=true").await;
    let not_completed = listed(&app, "/notes?completed=false").await;

    assert_eq!(done.len(), 2);
    assert_eq!(completed, done);
    assert_eq!(not_completed, open);
    assert_shown_as_stored(&app, &completed).await;
    assert_shown_as_stored(&app, &not_completed).await;
    app.finish().await;
}

/// `completed` with `after` and `limit`: the filter, the cursor and the page size all apply,
/// in any order of the parameters.
#[backends(sqlite, postgres, mysql)]
async fn list_filters_by_completed_after_a_cursor_and_within_a_limit(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    // Completed: 1, 4, 7, 10; open: 0, 2, 3, 5, 6, 8, 9, 11.
    let created = create_distinct_notes(&app, 12).await;
    let pick =
        |indexes: &[usize]| -> Vec<Value> { indexes.iter().map(|&i| created[i].clone()).collect() };
    let cursor = id_of(&created[4]);
    let last = id_of(&created[11]);

    let done_after = listed(&app, &format!("/notes?completed=true&after={cursor}")).await;
    let open_page = list(
        &app,
        &format!("/notes?completed=false&after={cursor}&limit=3"),
    )
    .await;
    let reordered = listed(
        &app,
        &format!("/notes?limit=3&after={cursor}&completed=false"),
    )
    .await;
    let first_done = list(&app, "/notes?completed=true&limit=2&after=0").await;
    let none_after_last = listed(&app, &format!("/notes?completed=false&after={last}")).await;

    assert_eq!(done_after, pick(&[7, 10]));
    assert_eq!(array(&open_page.json()), pick(&[5, 6, 8]));
    assert_eq!(reordered, pick(&[5, 6, 8]));
    let next = next_link(&open_page).expect("a full page links to the next one");
    let rest = list(&app, &next).await;
    assert_eq!(array(&rest.json()), pick(&[9, 11]));
    assert_eq!(next_link(&rest), None, "a short page is the last");
    assert_eq!(array(&first_done.json()), pick(&[1, 4]));
    assert!(next_link(&first_done).is_some());
    assert_eq!(none_after_last, Vec::<Value>::new());
    assert_shown_as_stored(&app, &done_after).await;
    assert_shown_as_stored(&app, &array(&rest.json())).await;
    app.finish().await;
}

/// Follow `rel="next"` links from `path`; the notes of every page and the page sizes.
async fn walk(app: &TestApp, path: &str, limit: usize) -> (Vec<Value>, Vec<usize>) {
    let mut path = path.to_owned();
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..100 {
        let reply = list(app, &path).await;
        let page = array(&reply.json());
        pages.push(page.len());
        seen.extend(page.iter().cloned());
        match next_link(&reply) {
            Some(next) => {
                assert_eq!(page.len(), limit, "only a full page links on: {path}");
                assert!(next.starts_with("/notes?"), "{next}");
                path = next;
            }
            None => return (seen, pages),
        }
    }
    panic!("the next links never end: {path}");
}

/// The `Link` walk with a `completed` filter holds every matching note once, in order, with
/// every field, for both values of the filter.
#[backends(sqlite, postgres, mysql)]
async fn next_link_only_on_full_pages_and_walks_every_note(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    // Completed: 1, 4, 7; open: the other seven.
    let created = create_distinct_notes(&app, 10).await;
    let (done, open): (Vec<Value>, Vec<Value>) = created
        .iter()
        .cloned()
        .partition(|n| n["completed"] == true);

    let (done_seen, done_pages) = walk(&app, "/notes?completed=true&limit=2", 2).await;
    let (open_seen, open_pages) = walk(&app, "/notes?completed=false&limit=2", 2).await;
    let (all_seen, all_pages) = walk(&app, "/notes?limit=5", 5).await;

    assert_eq!(done_seen, done, "every completed note once, in order");
    assert_eq!(done_pages, [2, 1]);
    assert_eq!(open_seen, open, "every open note once, in order");
    assert_eq!(open_pages, [2, 2, 2, 1]);
    assert_eq!(all_seen, created);
    assert_eq!(
        all_pages,
        [5, 5, 0],
        "a full last page links to an empty one"
    );
    assert_shown_as_stored(&app, &all_seen).await;
    app.finish().await;
}

/// `order=desc` lists newest first, and its `Link` walk (with a filter) holds every matching
/// note once, in descending id order; a bad `order` is 422 naming it.
#[backends(sqlite, postgres, mysql)]
async fn newest_first_walks_every_note_downwards(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let created = create_distinct_notes(&app, 10).await;
    let mut newest_first = created.clone();
    newest_first.reverse();
    let open_newest_first: Vec<Value> = newest_first
        .iter()
        .filter(|n| n["completed"] == false)
        .cloned()
        .collect();

    let (all_seen, all_pages) = walk(&app, "/notes?order=desc&limit=4", 4).await;
    let (open_seen, open_pages) = walk(&app, "/notes?order=desc&completed=false&limit=3", 3).await;
    let after = id_of(&newest_first[2]);
    let below = listed(&app, &format!("/notes?order=desc&after={after}&limit=2")).await;
    let bad = app.get("/notes?order=newest").await;

    assert_eq!(all_seen, newest_first, "every note once, newest first");
    assert_eq!(all_pages, [4, 4, 2]);
    assert_eq!(open_seen, open_newest_first);
    assert_eq!(open_pages, [3, 3, 1]);
    assert_eq!(below, newest_first[3..5].to_vec(), "after = smaller ids");
    let problem = assert_client_problem(&bad, "a bad order");
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&problem), ["order"]);
    assert_shown_as_stored(&app, &all_seen).await;
    app.finish().await;
}

// ---------------------------------------------------------------- patch

#[backends(sqlite, postgres, mysql)]
async fn patch_changes_text_and_advances_updated_at(backend: Backend) {
    let (app, created, path) =
        signed_in_with_note(backend, &json!({"text": "draft", "completed": true})).await;
    let created = created.json();

    let reply = app.patch_json(&path, &json!({"text": "final"})).await;

    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_common_headers(&reply);
    let patched = reply.json();
    assert_note_shape(&patched);
    assert_eq!(patched["id"], created["id"]);
    assert_eq!(patched["text"], "final");
    assert_eq!(patched["completed"], true, "an absent field is kept");
    assert_eq!(patched["created_at"], created["created_at"]);
    assert!(
        time_of(&patched, "updated_at") > time_of(&created, "updated_at"),
        "updated_at advances: {created} -> {patched}"
    );
    assert_shown_as_stored(&app, std::slice::from_ref(&patched)).await;
    assert_eq!(app.get(&path).await.json(), patched);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_changes_completed_only(backend: Backend) {
    let (app, created, path) =
        signed_in_with_note(backend, &json!({"text": "keep this text"})).await;
    let created = created.json();

    let done = app.patch_json(&path, &json!({"completed": true})).await;
    let undone = app.patch_json(&path, &json!({"completed": false})).await;

    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert_eq!(undone.status, StatusCode::OK, "{undone:?}");
    let (done, undone) = (done.json(), undone.json());
    assert_eq!(done["completed"], true);
    assert_eq!(done["text"], "keep this text");
    assert_eq!(undone["completed"], false);
    assert_eq!(undone["created_at"], created["created_at"]);
    assert!(time_of(&done, "updated_at") > time_of(&created, "updated_at"));
    assert!(time_of(&undone, "updated_at") > time_of(&done, "updated_at"));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_with_no_fields_changes_nothing_not_even_updated_at(backend: Backend) {
    let (app, created, path) =
        signed_in_with_note(backend, &json!({"text": "as is", "completed": true})).await;
    let created = created.json();

    let reply = app
        .patch_json(
            &path,
            &json!({"id": 1, "created_at": "2001-01-01T00:00:00Z"}),
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let patched = reply.json();
    assert_eq!(patched["id"], created["id"]);
    assert_eq!(patched["text"], "as is");
    assert_eq!(patched["completed"], true);
    assert_eq!(patched["created_at"], created["created_at"]);
    assert_eq!(patched["updated_at"], created["updated_at"]);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_of_missing_note_is_404(backend: Backend) {
    let (app, created, _) = signed_in_with_note(backend, &json!({"text": "exists"})).await;
    let missing = format!("/notes/{}", id_of(&created.json()) + 1000);

    let reply = app.patch_json(&missing, &json!({"completed": true})).await;

    assert_problem(&reply, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_rejects_bad_fields_with_422_and_changes_nothing(backend: Backend) {
    let (app, created, path) = signed_in_with_note(backend, &json!({"text": "unchanged"})).await;
    let created = created.json();
    let cases = [
        (json!({"text": ""}), vec!["text"]),
        (json!({"text": null}), vec!["text"]),
        (json!({"text": 5}), vec!["text"]),
        (json!({"text": ["a"]}), vec!["text"]),
        (json!({"completed": "yes"}), vec!["completed"]),
        (json!({"completed": null}), vec!["completed"]),
        (json!({"completed": 1}), vec!["completed"]),
        (
            json!({"text": "é".repeat(MAX_TEXT_CHARS + 1)}),
            vec!["text"],
        ),
        (
            json!({"text": false, "completed": "no"}),
            vec!["text", "completed"],
        ),
    ];

    for (body, fields) in cases {
        let reply = app.patch_json(&path, &body).await;

        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&problem), fields, "{body}");
    }
    assert_eq!(app.get(&path).await.json(), created);
    app.finish().await;
}

// ---------------------------------------------------------------- delete

#[backends(sqlite, postgres, mysql)]
async fn delete_answers_204_then_404(backend: Backend) {
    let (app, kept, _) = signed_in_with_note(backend, &json!({"text": "kept"})).await;
    let doomed = create_note(&app, None, &json!({"text": "doomed"})).await;
    let path = note_path(&doomed.json());

    let deleted = app.delete(&path).await;
    let again = app.delete(&path).await;
    let fetched = app.get(&path).await;
    let patched = app.patch_json(&path, &json!({"text": "revived"})).await;

    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert!(deleted.body.is_empty());
    assert_common_headers(&deleted);
    assert_problem(&again, StatusCode::NOT_FOUND);
    assert_problem(&fetched, StatusCode::NOT_FOUND);
    assert_problem(&patched, StatusCode::NOT_FOUND);
    let stored = note::Entity::find().all(app.conn()).await.unwrap();
    assert_eq!(
        stored.iter().map(|n| n.id).collect::<Vec<_>>(),
        [id_of(&kept.json())]
    );
    app.finish().await;
}

// ---------------------------------------------------------------- bulk

#[backends(sqlite, postgres, mysql)]
async fn bulk_creates_every_note_in_order(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let items = json!([
        {"text": "one"},
        {"text": "two", "completed": true},
        {"text": "three", "completed": false},
    ]);

    let reply = app.post_json("/notes/bulk", &items).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_common_headers(&reply);
    let created = array(&reply.json());
    created.iter().for_each(assert_note_shape);
    let texts: Vec<&Value> = created.iter().map(|n| &n["text"]).collect();
    assert_eq!(texts, [&json!("one"), &json!("two"), &json!("three")]);
    let completed: Vec<&Value> = created.iter().map(|n| &n["completed"]).collect();
    assert_eq!(completed, [&json!(false), &json!(true), &json!(false)]);
    let created_ids = ids(&created);
    assert!(
        created_ids.windows(2).all(|w| w[0] < w[1]),
        "{created_ids:?}"
    );
    assert_shown_as_stored(&app, &created).await;
    assert_eq!(list(&app, "/notes").await.json(), Value::Array(created));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn bulk_accepts_5000_notes(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;

    let created = create_notes(&app, MAX_BULK_ITEMS, false).await;

    assert_eq!(created.len(), MAX_BULK_ITEMS);
    let texts: Vec<String> = created
        .iter()
        .map(|n| n["text"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..MAX_BULK_ITEMS).map(|i| format!("note {i}")).collect();
    assert_eq!(texts, expected, "notes come back in input order");
    let created_ids = ids(&created);
    assert!(created_ids.windows(2).all(|w| w[0] < w[1]));
    let stored: Vec<i64> = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .all(app.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(stored, created_ids);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn bulk_with_one_invalid_item_writes_nothing(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    let items = json!([
        {"text": "valid"},
        {"text": ""},
        {"text": "also valid"},
        {"completed": "no"},
        "not an object",
    ]);

    let reply = app.post_json("/notes/bulk", &items).await;

    let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_fields(&problem),
        ["[1].text", "[3].text", "[3].completed", "[4]"]
    );
    assert_eq!(count_notes(&app).await, 0, "nothing is written");
    assert_no_notes(&app).await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn bulk_rejects_empty_oversized_and_non_array_bodies(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let too_many = Value::Array(vec![json!({"text": "x"}); MAX_BULK_ITEMS + 1]);

    for body in [
        json!([]),
        too_many,
        json!({"text": "not a list"}),
        json!(null),
        json!("str"),
    ] {
        let reply = app.post_json("/notes/bulk", &body).await;

        let what = body.to_string();
        assert!(
            matches!(reply.status.as_u16(), 413 | 422),
            "{}: {reply:?}",
            &what[..what.len().min(40)]
        );
        assert_client_problem(&reply, "bulk");
    }
    assert_eq!(count_notes(&app).await, 0, "nothing is written");
    app.finish().await;
}

// ---------------------------------------------------------------- export

/// The export streams every note, every field as stored, in id order.
#[backends(sqlite, postgres, mysql)]
async fn exports_every_note_as_ndjson_in_id_order(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;
    // About 130 KiB of lines: several of the export's write chunks.
    let mut created = create_notes(&app, 1000, true).await;
    created.push(
        create_note(&app, None, &json!({"text": "line\nbreak \u{2028} 😀"}))
            .await
            .json(),
    );
    created.extend(create_distinct_notes(&app, 4).await);

    let reply = app.get("/notes/export").await;

    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    assert_common_headers(&reply);
    let lines = export_lines(&reply);
    assert_eq!(lines, created);
    assert_shown_as_stored(&app, &lines).await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn export_of_empty_table_is_empty_200(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;

    let reply = app.get("/notes/export").await;

    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    assert_common_headers(&reply);
    assert!(reply.body.is_empty(), "{:?}", reply.body);
    app.finish().await;
}

// ---------------------------------------------------------------- protocol

#[backends(sqlite, postgres, mysql)]
async fn echoes_client_request_id_and_makes_one_otherwise(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    let echoed = app
        .send(get("/notes").insert_header(("x-request-id", "client-id-42")))
        .await;
    let echoed_error = app
        .send(get("/notes/0").insert_header(("x-request-id", "client-id-43")))
        .await;
    let replaced = app
        .send(get("/notes").insert_header(("x-request-id", "x".repeat(500))))
        .await;
    let first = app.get("/notes").await;
    let second = app.get("/notes").await;

    assert_eq!(echoed.header("x-request-id"), Some("client-id-42"));
    assert_eq!(echoed_error.header("x-request-id"), Some("client-id-43"));
    assert_common_headers(&replaced);
    assert_ne!(
        replaced.header("x-request-id"),
        Some("x".repeat(500).as_str())
    );
    assert_common_headers(&first);
    assert_common_headers(&second);
    assert_ne!(
        first.header("x-request-id"),
        second.header("x-request-id"),
        "each request gets its own id"
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn unknown_route_is_404_problem(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    for path in ["/nope", "/notes/1/extra", "/notes/", "/note"] {
        let reply = app.get(path).await;

        assert_problem(&reply, StatusCode::NOT_FOUND);
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn wrong_method_is_405_problem(backend: Backend) {
    let (app, created, one) = signed_in_with_note(backend, &json!({"text": "target"})).await;
    let created = created.json();

    for (method, path) in [
        (Method::PUT, one.as_str()),
        (Method::POST, one.as_str()),
        (Method::PUT, "/notes"),
        (Method::DELETE, "/notes"),
        (Method::PATCH, "/notes"),
        (Method::GET, "/notes/bulk"),
        (Method::DELETE, "/notes/export"),
    ] {
        let reply = app
            .send(raw_json_request(method.clone(), path, r#"{"text": "x"}"#))
            .await;

        let case = format!("{method} {path}");
        assert_case_problem(&reply, StatusCode::METHOD_NOT_ALLOWED, &case);
    }
    assert_eq!(app.get(&one).await.json(), created);
    app.finish().await;
}

// ---------------------------------------------------------------- hostile input

#[backends(sqlite, postgres, mysql)]
async fn hostile_texts_round_trip_unchanged(backend: Backend) {
    let app = signed_in_with_no_notes(backend).await;

    let mut created = Vec::new();
    for text in HOSTILE_TEXTS {
        let note = create_note(&app, None, &json!({"text": text})).await.json();
        assert_eq!(note["text"], *text);
        created.push(note);
    }

    for (note, text) in created.iter().zip(HOSTILE_TEXTS) {
        let fetched = app.get(&note_path(note)).await;
        assert_eq!(fetched.json()["text"], *text);
        let stored = note::Entity::find_by_id(id_of(note))
            .one(app.conn())
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(stored.text, *text, "stored byte for byte");
    }
    assert_eq!(array(&list(&app, "/notes").await.json()), created);
    assert_eq!(export_lines(&app.get("/notes/export").await), created);
    assert_eq!(count_notes(&app).await, HOSTILE_TEXTS.len() as u64);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn hostile_texts_survive_patch_and_bulk(backend: Backend) {
    let (app, _, path) = signed_in_with_note(backend, &json!({"text": "plain"})).await;
    let items: Vec<Value> = HOSTILE_TEXTS.iter().map(|t| json!({"text": t})).collect();

    let bulk = app.post_json("/notes/bulk", &Value::Array(items)).await;
    let mut patched = Vec::new();
    for text in HOSTILE_TEXTS {
        let reply = app.patch_json(&path, &json!({"text": text})).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        patched.push(app.get(&path).await.json()["text"].clone());
    }

    assert_eq!(bulk.status, StatusCode::CREATED, "{bulk:?}");
    let bulk_texts: Vec<Value> = array(&bulk.json())
        .iter()
        .map(|n| n["text"].clone())
        .collect();
    let expected: Vec<Value> = HOSTILE_TEXTS.iter().map(|t| json!(t)).collect();
    assert_eq!(bulk_texts, expected);
    assert_eq!(patched, expected);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn accepts_text_of_exactly_10000_characters(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    // Four bytes each: 40 000 bytes, but 10 000 characters.
    let longest = "😀".repeat(MAX_TEXT_CHARS);
    let combining = "e\u{0301}".repeat(MAX_TEXT_CHARS / 2);

    let note = create_note(&app, None, &json!({"text": longest}))
        .await
        .json();
    let other = create_note(&app, None, &json!({"text": combining}))
        .await
        .json();

    assert_eq!(note["text"], longest);
    assert_eq!(other["text"], combining);
    let stored = note::Entity::find_by_id(id_of(&note))
        .one(app.conn())
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.text, longest);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn rejects_text_of_10001_characters(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let too_long = "😀".repeat(MAX_TEXT_CHARS + 1);
    let ascii_too_long = "a".repeat(MAX_TEXT_CHARS + 1);

    for text in [too_long, ascii_too_long] {
        let reply = post_note(&app, json!({"text": text})).await;

        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&problem), ["text"]);
    }
    assert_eq!(count_notes(&app).await, 0);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn rejects_malformed_ids_with_4xx(backend: Backend) {
    let (app, created, _) = signed_in_with_note(backend, &json!({"text": "survivor"})).await;
    let created = created.json();
    let id = id_of(&created);
    let malformed = [
        "-1".to_owned(),
        "0".to_owned(),
        "18446744073709551616".to_owned(),
        "9223372036854775808".to_owned(),
        "abc".to_owned(),
        "1.5".to_owned(),
        "1e3".to_owned(),
        "0x1".to_owned(),
        "%20".to_owned(),
        "%00".to_owned(),
        "%F0%9F%98%80".to_owned(),
        format!("-{id}"),
        format!("+{id}"),
        format!("{id}.0"),
        format!("{id}%20"),
        format!("%20{id}"),
        format!("{id}%00"),
        format!("{id}%20OR%201=1"),
        format!("{id};DROP%20TABLE%20notes"),
    ];

    for raw in malformed {
        let path = format!("/notes/{raw}");
        let requests = [
            get(&path),
            json_request(Method::PATCH, &path, &json!({"completed": true})),
            request(Method::DELETE, &path),
        ];
        for req in requests {
            let reply = app.send(req).await;

            assert_client_problem(&reply, &path);
        }
    }
    assert_eq!(count_notes(&app).await, 1);
    let survivor = app.get(&format!("/notes/{id}")).await;
    assert_eq!(survivor.json(), created);
    // Percent-encoded digits are the same id: the path is decoded before the id is read.
    let encoded: String = id
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let same = app.get(&format!("/notes/{encoded}")).await;
    assert_eq!(same.status, StatusCode::OK, "/notes/{encoded}");
    assert_eq!(same.json(), created);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn rejects_well_formed_but_wrong_bodies_with_422(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let cases = [
        (json!(null), vec!["body"]),
        (json!([]), vec!["body"]),
        (json!("str"), vec!["body"]),
        (json!(5), vec!["body"]),
        (json!({}), vec!["text"]),
        (json!({"text": null}), vec!["text"]),
        (json!({"text": 5}), vec!["text"]),
        (json!({"text": {"nested": "x"}}), vec!["text"]),
        (json!({"text": ""}), vec!["text"]),
        (json!({"text": "nul \u{0} inside"}), vec!["text"]),
        (
            json!({"text": "ok", "completed": "true"}),
            vec!["completed"],
        ),
        (json!({"text": "ok", "completed": null}), vec!["completed"]),
        (
            json!({"text": 5, "completed": 0}),
            vec!["text", "completed"],
        ),
    ];

    for (body, fields) in cases {
        let reply = post_note(&app, body.clone()).await;

        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&problem), fields, "{body}");
    }
    assert_eq!(count_notes(&app).await, 0, "nothing is written");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn rejects_malformed_json_with_400(backend: Backend) {
    let (app, created, one) = signed_in_with_note(backend, &json!({"text": "target"})).await;
    let created = created.json();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<Vec<u8>> = vec![
        b"{\"text\": \"\xff\xfe invalid utf-8\"}".to_vec(),
        b"\xc3\x28".to_vec(),
        br#"{"text": "truncated"#.to_vec(),
        br#"{"text": "x",}"#.to_vec(),
        br#"{'text': 'single quotes'}"#.to_vec(),
        br#"{"text": "lone surrogate \ud800"}"#.to_vec(),
        br#"{"text": "x"} trailing"#.to_vec(),
        b"".to_vec(),
        deep.into_bytes(),
    ];

    for body in bodies {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        for (method, path) in [
            (Method::POST, "/notes"),
            (Method::POST, "/notes/bulk"),
            (Method::PATCH, one.as_str()),
        ] {
            let reply = app
                .send(raw_json_request(method.clone(), path, body.clone()))
                .await;

            let case = format!("{method} {path} {shown:?}");
            assert_case_problem(&reply, StatusCode::BAD_REQUEST, &case);
        }
    }
    assert_eq!(count_notes(&app).await, 1);
    assert_eq!(app.get(&one).await.json(), created);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn rejects_bodies_that_are_not_json_with_415(backend: Backend) {
    let (app, _, one) = signed_in_with_note(backend, &json!({"text": "target"})).await;
    let body = r#"{"text": "looks like JSON"}"#;

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some("not a mime type"),
    ] {
        for (method, path) in [
            (Method::POST, "/notes"),
            (Method::POST, "/notes/bulk"),
            (Method::PATCH, one.as_str()),
        ] {
            let mut req = request(method.clone(), path).set_payload(body);
            if let Some(content_type) = content_type {
                req = req.insert_header(("content-type", content_type));
            }

            let reply = app.send(req).await;

            let case = format!("{method} {path} {content_type:?}");
            assert_case_problem(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, &case);
        }
    }
    assert_eq!(count_notes(&app).await, 1);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn accepts_json_content_type_with_charset(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    let reply = app
        .send(
            request(Method::POST, "/notes")
                .insert_header(("content-type", "application/json; charset=utf-8"))
                .set_payload(r#"{"text": "with charset"}"#),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(reply.json()["text"], "with charset");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn rejects_body_over_the_limit_with_413(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let huge = json!({"text": "a".repeat(1 << 20)});

    let reply = post_note(&app, huge.clone()).await;
    let bulk = app.post_json("/notes/bulk", &json!([huge])).await;

    assert_problem(&reply, StatusCode::PAYLOAD_TOO_LARGE);
    assert_problem(&bulk, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(count_notes(&app).await, 0);
    app.finish().await;
}
