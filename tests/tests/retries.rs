//! Safe retries and concurrent changes, as the contract states them, on every backend:
//! strong `ETag`s on notes and users, `If-None-Match` (304), `If-Match` (412, `*`), races
//! that never answer 5xx, and `Idempotency-Key` (replay, 409 in flight, 422 reused, 400
//! malformed, nothing stored for a 5xx, per user, across instances, expiry).

use std::time::Duration;

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use entity::{idempotency_key, user};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ConnectionTrait, EntityTrait,
    TransactionTrait, sea_query::Expr,
};
use serde_json::{Value, json};
use tests::{
    Backend, Reply, SignedIn, TEST_PASSWORD, TestApp, assert_problem, backends,
    fixtures::{
        HANG, client, create_note, id_of, notes_with_text, openapi_document, operation,
        send_over_http, signed_in_with_note, users_with_email,
    },
    http::{TestServer, json_request},
    unique_email,
};

// ---------------------------------------------------------------------------------------
// Helpers

fn with(request: TestRequest, name: &str, value: &str) -> TestRequest {
    request.insert_header((name.to_owned(), value.to_owned()))
}

fn post(path: &str, body: &Value) -> TestRequest {
    json_request(Method::POST, path, body)
}

fn patch(path: &str, body: &Value) -> TestRequest {
    json_request(Method::PATCH, path, body)
}

fn if_match(request: TestRequest, tag: &str) -> TestRequest {
    with(request, "if-match", tag)
}

/// Send `request` with `If-Match: tag`.
async fn send_if_match(app: &TestApp, request: TestRequest, tag: &str) -> Reply {
    app.send(if_match(request, tag)).await
}

/// `GET path` with `If-None-Match: tag`.
fn get_if_none_match(path: &str, tag: &str) -> TestRequest {
    with(TestRequest::get().uri(path), "if-none-match", tag)
}

fn keyed(request: TestRequest, key: &str) -> TestRequest {
    with(request, "idempotency-key", key)
}

/// The response's `ETag` (panics when it has none).
fn etag(reply: &Reply) -> String {
    reply
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag: {reply:?}"))
        .to_owned()
}

/// `POST /users` with `body` and `Idempotency-Key: key`, anonymously.
async fn keyed_sign_up(app: &TestApp, body: &Value, key: &str) -> Reply {
    app.send_anonymous(keyed(post("/users", body), key)).await
}

/// `POST /notes` of a note with `text` and `Idempotency-Key: key`, as `user`.
async fn keyed_note_as(app: &TestApp, user: &SignedIn, text: &str, key: &str) -> Reply {
    let body = json!({"text": text});
    app.send_as(&user.token, keyed(post("/notes", &body), key))
        .await
}

fn replayed(reply: &Reply) -> bool {
    reply.header("idempotent-replayed") == Some("true")
}

async fn stored_keys(app: &TestApp) -> Vec<idempotency_key::Model> {
    idempotency_key::Entity::find()
        .all(app.conn())
        .await
        .unwrap()
}

/// Move the expiry of every stored key a second into the past.
async fn expire_stored_keys(app: &TestApp) {
    idempotency_key::Entity::update_many()
        .col_expr(
            idempotency_key::Column::ExpiresAt,
            Expr::value(entity::now() - chrono::Duration::seconds(1)),
        )
        .exec(app.conn())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// ETag and If-None-Match

#[backends(sqlite, postgres, mysql)]
async fn a_note_has_a_strong_etag_that_changes_with_it(backend: Backend) {
    let (app, created, path) = signed_in_with_note(backend, &json!({ "text": "tagged" })).await;
    let first = etag(&created);
    assert!(
        first.starts_with('"') && first.ends_with('"') && first.len() > 2,
        "a strong tag: {first}"
    );
    let read = app.get(&path).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(etag(&read), first, "GET tags what POST tagged");
    assert_eq!(etag(&app.get(&path).await), first, "stable while unchanged");

    let changed = app.send(patch(&path, &json!({"completed": true}))).await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    let second = etag(&changed);
    assert_ne!(second, first, "a change changes the tag");
    assert_eq!(etag(&app.get(&path).await), second);

    // A PATCH that sets what is already there changes nothing: the tag stays.
    let again = app.send(patch(&path, &json!({"completed": true}))).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(etag(&again), second);
    assert_eq!(etag(&app.get(&path).await), second);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn if_none_match_with_the_current_tag_is_304_without_a_body(backend: Backend) {
    let (app, created, path) = signed_in_with_note(backend, &json!({ "text": "cached" })).await;
    let tag = etag(&created);

    let fresh = app.send(get_if_none_match(&path, &tag)).await;
    assert_eq!(fresh.status, StatusCode::NOT_MODIFIED, "{fresh:?}");
    assert!(fresh.body.is_empty(), "a 304 has no body: {fresh:?}");
    assert_eq!(etag(&fresh), tag);

    let weak = format!("W/{tag}");
    let listed = format!("\"nope\", {weak}");
    for value in [weak.as_str(), listed.as_str(), "*"] {
        let reply = app.send(get_if_none_match(&path, value)).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{value}: {reply:?}");
    }
    for value in ["\"other\"", "garbage"] {
        let reply = app.send(get_if_none_match(&path, value)).await;
        assert_eq!(reply.status, StatusCode::OK, "{value}: {reply:?}");
        assert_eq!(reply.json()["text"], "cached");
    }

    app.send(patch(&path, &json!({"text": "changed"}))).await;
    let stale = app.send(get_if_none_match(&path, &tag)).await;
    assert_eq!(stale.status, StatusCode::OK, "an old tag gets the new note");
    assert_eq!(stale.json()["text"], "changed");

    // Another user's note stays 404, whatever the tag.
    let other = app.sign_up_and_in("other").await;
    let reply = app
        .send_as(&other.token, get_if_none_match(&path, "*"))
        .await;
    assert_problem(&reply, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_user_has_an_etag_on_every_read_and_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("tagged");
    let body = json!({"email": email, "password": TEST_PASSWORD});
    let created = app.send_anonymous(post("/users", &body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let first = etag(&created);
    let id = id_of(&created.json());
    let token = app.sign_in(&email, TEST_PASSWORD).await;

    let me = app.get_as(&token, "/users/me").await;
    assert_eq!(etag(&me), first);
    let path = format!("/users/{id}");
    let by_id = app.get_as(&token, &path).await;
    assert_eq!(etag(&by_id), first);
    for uri in ["/users/me", path.as_str()] {
        let fresh = app.send_as(&token, get_if_none_match(uri, &first)).await;
        assert_eq!(fresh.status, StatusCode::NOT_MODIFIED, "{uri}: {fresh:?}");
        assert!(fresh.body.is_empty());
    }

    let renamed = app
        .send_as(&token, patch(&path, &json!({"name": "Tag"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:?}");
    let second = etag(&renamed);
    assert_ne!(second, first);
    let me = app.get_as(&token, "/users/me").await;
    assert_eq!(etag(&me), second);
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// If-Match

#[backends(sqlite, postgres, mysql)]
async fn if_match_prevents_a_lost_update_on_a_note(backend: Backend) {
    let (app, _, path) = signed_in_with_note(backend, &json!({ "text": "original" })).await;
    // Two clients read the same version.
    let read = etag(&app.get(&path).await);

    let first = send_if_match(&app, patch(&path, &json!({"text": "first"})), &read).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let second = send_if_match(&app, patch(&path, &json!({"text": "second"})), &read).await;
    let problem = assert_problem(&second, StatusCode::PRECONDITION_FAILED);
    assert!(
        problem["detail"].as_str().unwrap().contains("If-Match"),
        "{problem}"
    );
    let stored = app.get(&path).await;
    assert_eq!(
        stored.json()["text"],
        "first",
        "the lost update did not happen"
    );
    assert_eq!(etag(&stored), etag(&first));

    // With the current tag (one of a list), the change goes through.
    let list = format!("\"0\", {}", etag(&first));
    let third = send_if_match(&app, patch(&path, &json!({"text": "third"})), &list).await;
    assert_eq!(third.status, StatusCode::OK, "{third:?}");
    assert_eq!(third.json()["text"], "third");

    // A weak tag never matches a write.
    let weak = format!("W/{}", etag(&third));
    let reply = send_if_match(&app, patch(&path, &json!({"text": "weak"})), &weak).await;
    assert_problem(&reply, StatusCode::PRECONDITION_FAILED);

    // DELETE: a stale tag is 412 and the note stays; the current one deletes it.
    let reply = send_if_match(&app, TestRequest::delete().uri(&path), &read).await;
    assert_problem(&reply, StatusCode::PRECONDITION_FAILED);
    assert_eq!(app.get(&path).await.status, StatusCode::OK);
    let reply = send_if_match(&app, TestRequest::delete().uri(&path), &etag(&third)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    // Gone: 404 whatever If-Match says.
    let reply = send_if_match(&app, TestRequest::delete().uri(&path), &etag(&third)).await;
    assert_problem(&reply, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn if_match_star_matches_any_existing_note_and_garbage_matches_none(backend: Backend) {
    let (app, _, path) = signed_in_with_note(backend, &json!({ "text": "starred" })).await;

    let reply = send_if_match(&app, patch(&path, &json!({"completed": true})), "*").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    for garbage in ["not-a-tag", "\"x\""] {
        let reply = send_if_match(&app, patch(&path, &json!({"text": "no"})), garbage).await;
        assert_problem(&reply, StatusCode::PRECONDITION_FAILED);
    }
    assert_eq!(app.get(&path).await.json()["text"], "starred");

    let reply = send_if_match(&app, TestRequest::delete().uri(&path), "*").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = send_if_match(&app, patch(&path, &json!({"text": "gone"})), "*").await;
    assert_problem(&reply, StatusCode::NOT_FOUND);

    // Another user's note is 404 with any If-Match, and is not changed.
    let mine = create_note(&app, None, &json!({ "text": "mine" })).await;
    let other = app.sign_up_and_in("other").await;
    let path = format!("/notes/{}", id_of(&mine.json()));
    for request in [
        if_match(patch(&path, &json!({"text": "theirs"})), "*"),
        if_match(TestRequest::delete().uri(&path), &etag(&mine)),
    ] {
        let reply = app.send_as(&other.token, request).await;
        assert_problem(&reply, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.get(&path).await.json()["text"], "mine");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn if_match_prevents_a_lost_update_on_a_user(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let path = format!("/users/{}", user.id);
    let read = etag(&app.get("/users/me").await);

    let first = send_if_match(&app, patch(&path, &json!({"name": "First"})), &read).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let second = send_if_match(&app, patch(&path, &json!({"name": "Second"})), &read).await;
    assert_problem(&second, StatusCode::PRECONDITION_FAILED);
    assert_eq!(app.get("/users/me").await.json()["name"], "First");

    let reply = send_if_match(&app, TestRequest::delete().uri(&path), &read).await;
    assert_problem(&reply, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        app.get("/users/me").await.status,
        StatusCode::OK,
        "not deleted"
    );
    let reply = send_if_match(&app, TestRequest::delete().uri(&path), &etag(&first)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// Races, through a real server

/// Pairs of requests in flight at once (more would only measure the pool's queue).
const WAVE: usize = 25;

/// [`TestApp::signed_in`], and `count` new notes of the user's (one bulk request): their ids.
async fn signed_in_with_notes(
    backend: Backend,
    count: usize,
    prefix: &str,
) -> (TestApp, SignedIn, Vec<i64>) {
    let (app, user) = TestApp::signed_in(backend).await;
    let notes: Vec<Value> = (0..count)
        .map(|i| json!({"text": format!("{prefix} {i}")}))
        .collect();
    let created = app.send(post("/notes/bulk", &Value::Array(notes))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let ids = created
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    (app, user, ids)
}

/// For every id, the two requests `pair(id)` sent at once, [`WAVE`] pairs at a time; the
/// statuses of each pair (the bodies of any 5xx are printed).
async fn race<A, B>(ids: &[i64], pair: impl Fn(i64) -> (A, B)) -> Vec<(u16, u16)>
where
    A: Future<Output = Reply>,
    B: Future<Output = Reply>,
{
    let mut statuses = Vec::with_capacity(ids.len());
    for wave in ids.chunks(WAVE) {
        let racing = wave.iter().map(|&id| {
            let (a, b) = pair(id);
            futures_util::future::join(a, b)
        });
        for (a, b) in futures_util::future::join_all(racing).await {
            for reply in [&a, &b] {
                if reply.status.is_server_error() {
                    eprintln!("{reply:?}");
                }
            }
            statuses.push((a.status.as_u16(), b.status.as_u16()));
        }
    }
    statuses
}

/// For every id, `PATCH {collection}/{id}` with `change` and `DELETE {collection}/{id}` as
/// `token`'s user, raced ([`race`]); the statuses of each pair, every PATCH checked to be 200
/// or 404.
async fn race_patch_and_delete(
    server: &TestServer,
    token: &str,
    collection: &str,
    ids: &[i64],
    change: &Value,
) -> Vec<(u16, u16)> {
    let client = client(HANG);
    let statuses = race(ids, |id| {
        let url = server.url(&format!("{collection}/{id}"));
        (
            send_over_http(client.patch(&url).bearer_auth(token), Some(change)),
            send_over_http(client.delete(&url).bearer_auth(token), None),
        )
    })
    .await;
    let patches = counts(statuses.iter().map(|(patch, _)| *patch));
    eprintln!("{collection}: PATCH {patches:?}");
    assert!(
        patches.keys().all(|s| [200, 404].contains(s)),
        "a PATCH racing a DELETE is 200 or 404: {patches:?}"
    );
    statuses
}

/// How many times each status came.
fn counts(statuses: impl IntoIterator<Item = u16>) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    counts
}

#[backends(sqlite, postgres, mysql)]
async fn racing_patch_and_delete_on_notes_never_answer_5xx(backend: Backend) {
    const PAIRS: usize = 300;
    let (app, user, ids) = signed_in_with_notes(backend, PAIRS, "race").await;
    let server = app.serve().await;
    let change = json!({"text": "patched", "completed": true});
    let statuses = race_patch_and_delete(&server, &user.token, "/notes", &ids, &change).await;
    let deletes = counts(statuses.iter().map(|(_, delete)| *delete));
    eprintln!("{backend:?}: DELETE {deletes:?}");
    assert_eq!(
        deletes.get(&204),
        Some(&PAIRS),
        "every DELETE wins: {deletes:?}"
    );
    assert_eq!(notes_with_text(&app, "patched").await, 0);
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn racing_conditional_patches_let_one_win_and_refuse_the_other(backend: Backend) {
    const PAIRS: usize = 100;
    let (app, user, ids) = signed_in_with_notes(backend, PAIRS, "cas").await;
    // Every note is at its first version: that is the tag both racers send.
    let tag = etag(&app.get(&format!("/notes/{}", ids[0])).await);
    let server = app.serve().await;
    let client = client(HANG);
    let (one, two) = (json!({"text": "one"}), json!({"text": "two"}));
    let conditional = |id: i64, body| {
        let request = client
            .patch(server.url(&format!("/notes/{id}")))
            .bearer_auth(&user.token)
            .insert_header(("if-match", tag.as_str()));
        send_over_http(request, Some(body))
    };
    let statuses = race(&ids, |id| (conditional(id, &one), conditional(id, &two))).await;
    for (a, b) in statuses {
        let mut pair = [a, b];
        pair.sort_unstable();
        assert_eq!(pair, [200, 412], "exactly one conditional PATCH wins");
    }
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn racing_patch_and_delete_on_users_never_answer_5xx(backend: Backend) {
    const PAIRS: usize = 40;
    let (app, admin) = TestApp::with_admin(backend).await;
    let mut ids = Vec::new();
    for i in 0..PAIRS {
        let user = user::ActiveModel {
            email: Set(unique_email(&format!("racer{i}"))),
            hashed_password: Set("!".to_owned()),
            ..sea_orm::ActiveModelBehavior::new()
        }
        .insert(app.conn())
        .await
        .unwrap();
        ids.push(user.id);
    }
    let server = app.serve().await;
    let change = json!({"name": "patched", "is_active": false});
    let statuses = race_patch_and_delete(&server, &admin.token, "/users", &ids, &change).await;
    assert!(
        statuses.iter().all(|(_, delete)| *delete == 204),
        "{statuses:?}"
    );
    server.stop().await;
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// Idempotency-Key

#[backends(sqlite, postgres, mysql)]
async fn a_keyed_create_is_replayed_and_writes_once(backend: Backend) {
    let (app, _user) = TestApp::signed_in(backend).await;
    let body = json!({"text": "exactly once"});
    let first = app.send(keyed(post("/notes", &body), "key-1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert!(!replayed(&first));
    let location = first.header("location").unwrap().to_owned();

    for _ in 0..3 {
        let again = app.send(keyed(post("/notes", &body), "key-1")).await;
        assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
        assert!(replayed(&again), "{again:?}");
        assert_eq!(again.body, first.body, "the same body, byte for byte");
        assert_eq!(again.header("location"), Some(location.as_str()));
        assert_eq!(again.header("etag"), first.header("etag"));
        assert_eq!(again.header("content-type"), Some("application/json"));
    }
    assert_eq!(notes_with_text(&app, "exactly once").await, 1);

    // Another key is another request.
    let other = app.send(keyed(post("/notes", &body), "key-2")).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert!(!replayed(&other));
    assert_ne!(id_of(&other.json()), id_of(&first.json()));
    assert_eq!(notes_with_text(&app, "exactly once").await, 2);

    // Without a key nothing is stored.
    let keys = stored_keys(&app).await.len();
    create_note(&app, None, &json!({ "text": "no key" })).await;
    assert_eq!(stored_keys(&app).await.len(), keys);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn the_same_key_with_another_body_is_422(backend: Backend) {
    let (app, _user) = TestApp::signed_in(backend).await;
    let first = app
        .send(keyed(post("/notes", &json!({"text": "a"})), "reuse"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);

    // The same note, written differently, is the same request.
    let equivalent = app
        .send(keyed(
            TestRequest::post()
                .uri("/notes")
                .insert_header(("content-type", "application/json"))
                .set_payload("{ \"completed\" : false,\n \"text\": \"a\" }"),
            "reuse",
        ))
        .await;
    assert_eq!(equivalent.status, StatusCode::CREATED, "{equivalent:?}");
    assert!(replayed(&equivalent));

    for (path, body) in [
        ("/notes", json!({"text": "b"})),
        ("/notes", json!({"text": "a", "completed": true})),
        ("/notes/bulk", json!([{"text": "a"}])),
    ] {
        let reply = app.send(keyed(post(path, &body), "reuse")).await;
        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            problem["errors"][0]["field"], "Idempotency-Key",
            "{problem}"
        );
    }
    assert_eq!(notes_with_text(&app, "a").await, 1);
    assert_eq!(notes_with_text(&app, "b").await, 0);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_keyed_bulk_create_is_replayed_whole(backend: Backend) {
    let (app, _user) = TestApp::signed_in(backend).await;
    let body = json!([{"text": "bulk 1"}, {"text": "bulk 2", "completed": true}]);
    let first = app.send(keyed(post("/notes/bulk", &body), "bulk")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = app.send(keyed(post("/notes/bulk", &body), "bulk")).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(replayed(&again));
    assert_eq!(again.body, first.body);
    assert_eq!(notes_with_text(&app, "bulk 1").await, 1);
    assert_eq!(notes_with_text(&app, "bulk 2").await, 1);

    // A bad item is 422 and releases the key: the corrected request then goes through.
    let bad = json!([{"text": "ok"}, {"text": ""}]);
    let reply = app.send(keyed(post("/notes/bulk", &bad), "bulk-bad")).await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    let good = json!([{"text": "ok"}, {"text": "fixed"}]);
    let reply = app
        .send(keyed(post("/notes/bulk", &good), "bulk-bad"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert!(!replayed(&reply));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_keyed_sign_up_is_replayed_only_with_the_same_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("keyed");
    let body = json!({"email": email, "password": TEST_PASSWORD, "name": "K"});
    let first = keyed_sign_up(&app, &body, "signup").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = keyed_sign_up(&app, &body, "signup").await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    assert!(replayed(&again));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("location"), first.header("location"));

    let other_password = json!({"email": email, "password": "another password", "name": "K"});
    let reply = keyed_sign_up(&app, &other_password, "signup").await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    let other_name = json!({"email": email, "password": TEST_PASSWORD});
    let reply = keyed_sign_up(&app, &other_name, "signup").await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);

    // The same request after the password changed is still the same request: replayed.
    let token = app.sign_in(&email, TEST_PASSWORD).await;
    let path = format!("/users/{}", id_of(&first.json()));
    let change = json!({"password": "a newer password", "current_password": TEST_PASSWORD});
    let changed = app.send_as(&token, patch(&path, &change)).await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    let later = keyed_sign_up(&app, &body, "signup").await;
    assert_eq!(later.status, StatusCode::CREATED, "{later:?}");
    assert!(replayed(&later));

    assert_eq!(users_with_email(&app, &email).await, 1);
    // The password is in no stored key.
    for key in stored_keys(&app).await {
        let row = format!("{key:?}");
        assert!(!row.contains(TEST_PASSWORD), "{row}");
    }
    // The key goes with the account.
    let reply = app
        .send_as(
            &token,
            TestRequest::delete().uri(&format!("/users/{}", id_of(&first.json()))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(stored_keys(&app).await.is_empty());
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_dozen_racing_retries_with_one_key_write_exactly_one_note(backend: Backend) {
    const RETRIES: usize = 12;
    let (app, user) = TestApp::signed_in(backend).await;
    // Half of them to each of two instances: in flight on one, committed by the other.
    let servers = [app.serve().await, app.serve().await];
    let server = &servers[0];
    let client = client(HANG);
    let body = json!({"text": "raced once"});
    let racing = (0..RETRIES).map(|i| {
        send_over_http(
            client
                .post(servers[i % 2].url("/notes"))
                .bearer_auth(&user.token)
                .insert_header(("idempotency-key", "racing-key")),
            Some(&body),
        )
    });
    let answers = futures_util::future::join_all(racing).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    eprintln!("{backend:?}: {statuses:?}");
    assert!(
        statuses.iter().all(|status| [201, 409].contains(status)),
        "every retry is the answer or 409 in flight: {answers:?}"
    );
    let created: Vec<&actix_web::web::Bytes> = answers
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .map(|r| &r.body)
        .collect();
    assert!(!created.is_empty(), "one of them did the work");
    assert!(created.iter().all(|b| *b == created[0]), "one answer");
    assert_eq!(notes_with_text(&app, "raced once").await, 1);

    // Once settled, a retry gets the stored answer.
    let replay = send_over_http(
        client
            .post(server.url("/notes"))
            .bearer_auth(&user.token)
            .insert_header(("idempotency-key", "racing-key")),
        Some(&body),
    )
    .await;
    assert_eq!((replay.status.as_u16(), &replay.body), (201, created[0]));
    for server in servers {
        server.stop().await;
    }
    app.finish().await;
}

/// SQL that makes inserting a note with the text `poison` fail, and SQL that undoes it.
fn poison(backend: Backend) -> (Vec<&'static str>, &'static str) {
    match backend {
        Backend::Sqlite => (
            vec![
                "CREATE TRIGGER poison BEFORE INSERT ON notes WHEN NEW.text = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            ],
            "DROP TRIGGER poison",
        ),
        Backend::Postgres => (
            vec![
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.text = 'poison' THEN RAISE EXCEPTION 'injected failure'; END IF; \
                 RETURN NEW; END $$",
                "CREATE TRIGGER poison BEFORE INSERT ON notes FOR EACH ROW \
                 EXECUTE FUNCTION poison()",
            ],
            "DROP TRIGGER poison ON notes",
        ),
        Backend::MySql => (
            vec![
                "CREATE TRIGGER poison BEFORE INSERT ON notes FOR EACH ROW BEGIN \
                 IF NEW.text = 'poison' THEN SIGNAL SQLSTATE '45000' \
                 SET MESSAGE_TEXT = 'injected failure'; END IF; END",
            ],
            "DROP TRIGGER poison",
        ),
    }
}

#[backends(sqlite, postgres, mysql)]
async fn a_failed_request_stores_nothing_and_its_retry_succeeds(backend: Backend) {
    let (app, _user) = TestApp::signed_in(backend).await;
    let (inject, undo) = poison(backend);
    for statement in inject {
        app.conn().execute_unprepared(statement).await.unwrap();
    }
    let body = json!({"text": "poison"});
    let failed = app.send(keyed(post("/notes", &body), "retry-me")).await;
    assert_problem(&failed, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(stored_keys(&app).await.is_empty(), "a 5xx stores nothing");
    assert_eq!(notes_with_text(&app, "poison").await, 0);

    app.conn().execute_unprepared(undo).await.unwrap();
    let retry = app.send(keyed(post("/notes", &body), "retry-me")).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(!replayed(&retry), "the retry did the work");
    let replay = app.send(keyed(post("/notes", &body), "retry-me")).await;
    assert!(replayed(&replay));
    assert_eq!(replay.body, retry.body);
    assert_eq!(notes_with_text(&app, "poison").await, 1);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn keys_of_two_users_never_collide(backend: Backend) {
    let (app, alice, bob) = TestApp::alice_and_bob(backend).await;
    let a = keyed_note_as(&app, &alice, "alice's", "shared").await;
    let b = keyed_note_as(&app, &bob, "bob's", "shared").await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert!(!replayed(&b), "bob's key is his own: {b:?}");
    assert_eq!(b.json()["user_id"], bob.id);
    // Each replays their own.
    let again = keyed_note_as(&app, &bob, "bob's", "shared").await;
    assert!(replayed(&again));
    assert_eq!(again.body, b.body);
    // The same body from bob under alice's key and text is still bob's own request.
    let same = keyed_note_as(&app, &bob, "alice's", "shared").await;
    assert_problem(&same, StatusCode::UNPROCESSABLE_ENTITY);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn two_instances_share_keys(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let (one, two) = (app.serve().await, app.serve().await);
    let client = client(HANG);
    let body = json!({"text": "two instances"});
    let request = |server: &TestServer| {
        client
            .post(server.url("/notes"))
            .bearer_auth(&user.token)
            .insert_header(("idempotency-key", "across"))
    };
    let first = send_over_http(request(&one), Some(&body)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = send_over_http(request(&two), Some(&body)).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body)
    );
    assert_eq!(notes_with_text(&app, "two instances").await, 1);
    one.stop().await;
    two.stop().await;
    app.finish().await;
}

/// Status, `Idempotent-Replayed` and body of a keyed `POST` over HTTP.
async fn post_keyed(
    server: &TestServer,
    token: Option<&str>,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, bool, String) {
    let mut request = client(HANG)
        .post(server.url(path))
        .insert_header(("idempotency-key", key.to_owned()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = send_over_http(request, Some(body)).await;
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    if body.contains("in progress") {
        assert!(reply.header("retry-after").is_some(), "{reply:?}");
    }
    (reply.status.as_u16(), replayed(&reply), body)
}

/// Open, on a connection of the test's own, a transaction that holds what a write of `user`'s
/// waits for: the user's row (PostgreSQL, MariaDB: inserting a note or a user with its
/// address checks it), or the database's write lock (SQLite). Roll it back to let them go.
async fn hold_writes(app: &TestApp, user: i64) -> sea_orm::DatabaseTransaction {
    let txn = app.conn().begin().await.unwrap();
    let sql = match app.db().backend() {
        Backend::Sqlite => format!("UPDATE users SET name = name WHERE id = {user}"),
        _ => format!("SELECT id FROM users WHERE id = {user} FOR UPDATE"),
    };
    txn.execute_unprepared(&sql).await.unwrap();
    txn
}

/// Long enough for a request sent just before to be stuck on [`hold_writes`].
const SETTLE: Duration = Duration::from_millis(300);

#[backends(sqlite, postgres, mysql)]
async fn a_key_in_flight_here_is_409_and_another_body_422_until_it_is_answered(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let server = app.serve().await;
    let token = Some(user.token.as_str());
    let body = json!({"text": "in flight"});
    let held = hold_writes(&app, user.id).await;
    let first = post_keyed(&server, token, "/notes", "flight", &body);
    let meanwhile = async {
        tokio::time::sleep(SETTLE).await;
        let again = post_keyed(&server, token, "/notes", "flight", &body).await;
        let other = post_keyed(&server, token, "/notes", "flight", &json!({"text": "else"})).await;
        // Another key is not held up by this one's (only by the database).
        let stored = notes_with_text(&app, "in flight").await;
        held.rollback().await.unwrap();
        (again, other, stored)
    };
    let (first, (again, other, stored)) = futures_util::future::join(first, meanwhile).await;
    assert_eq!((again.0, again.1), (409, false), "{again:?}");
    assert!(again.2.contains("in progress"), "{again:?}");
    assert_eq!(other.0, 422, "{other:?}");
    assert!(other.2.contains("Idempotency-Key"), "{other:?}");
    assert_eq!(stored, 0, "the first was still running");
    assert_eq!((first.0, first.1), (201, false), "{first:?}");

    // Answered, it is replayed.
    let replay = post_keyed(&server, token, "/notes", "flight", &body).await;
    assert_eq!(replay, (201, true, first.2.clone()));
    assert_eq!(notes_with_text(&app, "in flight").await, 1);
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_sign_up_raced_on_two_instances_signs_up_once_and_replays(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let (one, two) = (app.serve().await, app.serve().await);
    let email = unique_email("raced");
    let body = json!({"email": email, "password": TEST_PASSWORD});
    // An uncommitted sign-up with the same address holds both until it is rolled back;
    // then one of them signs up and the other finds the address taken: by its own twin,
    // so it answers the same.
    let held = hold_writes(&app, user.id).await;
    user::ActiveModel {
        email: Set(email.clone()),
        hashed_password: Set("$argon2id$placeholder".to_owned()),
        ..user::ActiveModel::new()
    }
    .insert(&held)
    .await
    .unwrap();
    let racing = futures_util::future::join(
        post_keyed(&one, None, "/users", "twin", &body),
        post_keyed(&two, None, "/users", "twin", &body),
    );
    let release = async {
        tokio::time::sleep(SETTLE * 2).await;
        held.rollback().await.unwrap();
    };
    let ((a, b), ()) = futures_util::future::join(racing, release).await;
    eprintln!("{backend:?}: {a:?} {b:?}");
    assert_eq!(users_with_email(&app, &email).await, 1);
    let (done, other) = if a.1 || a.0 != 201 { (b, a) } else { (a, b) };
    assert_eq!((done.0, done.1), (201, false), "{done:?}");
    // (On MariaDB the loser may first lose a deadlock with its twin: it tries once more.)
    assert_eq!(other, (201, true, done.2.clone()), "the twin is replayed");
    one.stop().await;
    two.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_key_is_kept_for_its_ttl_then_forgotten(backend: Backend) {
    let (app, _user) =
        TestApp::with_settings_signed_in(backend, &[("IDEMPOTENCY_TTL_S", "60")]).await;
    let body = json!({"text": "expiring"});
    let first = app.send(keyed(post("/notes", &body), "ttl")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let key = stored_keys(&app).await.pop().unwrap();
    let ttl = (key.expires_at - key.created_at).num_seconds();
    assert_eq!(ttl, 60, "IDEMPOTENCY_TTL_S");

    expire_stored_keys(&app).await;
    let after = app.send(keyed(post("/notes", &body), "ttl")).await;
    assert_eq!(after.status, StatusCode::CREATED);
    assert!(!replayed(&after), "an expired key is a new request");
    assert_eq!(notes_with_text(&app, "expiring").await, 2);
    // Expired keys are purged.
    expire_stored_keys(&app).await;
    let purged = idempotency_key::delete_expired(entity::now())
        .exec(app.conn())
        .await
        .unwrap();
    assert_eq!(purged.rows_affected, 1);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_malformed_key_is_400_and_an_anonymous_one_401(backend: Backend) {
    let (app, _user) = TestApp::signed_in(backend).await;
    let body = json!({"text": "malformed"});
    let long = "k".repeat(256);
    for key in ["", "has space", "tab\there", long.as_str(), "é"] {
        let request = TestRequest::post()
            .uri("/notes")
            .insert_header(("content-type", "application/json"))
            .insert_header((
                "idempotency-key",
                actix_web::http::header::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
            ))
            .set_payload(body.to_string());
        let reply = app.send(request).await;
        let problem = assert_problem(&reply, StatusCode::BAD_REQUEST);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{key:?}: {problem}"
        );
    }
    let twice = post("/notes", &body)
        .append_header(("idempotency-key", "one"))
        .append_header(("idempotency-key", "two"));
    assert_problem(&app.send(twice).await, StatusCode::BAD_REQUEST);
    let max = "~".repeat(255);
    let reply = app.send(keyed(post("/notes", &body), &max)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "255 characters are fine");
    let sign_up = json!({"email": unique_email("malformed"), "password": TEST_PASSWORD});
    let reply = keyed_sign_up(&app, &sign_up, "has space").await;
    assert_problem(&reply, StatusCode::BAD_REQUEST);

    // Who the caller is comes first.
    let reply = app
        .send_anonymous(keyed(post("/notes", &body), "has space"))
        .await;
    assert_problem(&reply, StatusCode::UNAUTHORIZED);
    assert_eq!(notes_with_text(&app, "malformed").await, 1);
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// The document

#[backends(sqlite)]
async fn the_openapi_document_describes_the_headers_and_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = openapi_document(&app).await;
    let header_params = |operation: &Value| -> Vec<String> {
        operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let keyed_answers = &["400", "409", "422"];
    // Each operation, the one header it takes, and the answers that header brings.
    let cases: [(&str, &str, &str, &[&str]); 10] = [
        ("post", "/notes", "idempotency-key", keyed_answers),
        ("post", "/notes/bulk", "idempotency-key", keyed_answers),
        ("post", "/users", "idempotency-key", keyed_answers),
        ("get", "/notes/{id}", "if-none-match", &["304"]),
        ("get", "/users/{id}", "if-none-match", &["304"]),
        ("get", "/users/me", "if-none-match", &["304"]),
        ("patch", "/notes/{id}", "if-match", &["412"]),
        ("delete", "/notes/{id}", "if-match", &["412"]),
        ("patch", "/users/{id}", "if-match", &["412"]),
        ("delete", "/users/{id}", "if-match", &["412"]),
    ];
    for (method, path, header, statuses) in cases {
        let op = operation(&doc, method, path).operation;
        assert_eq!(header_params(&op), [header], "{method} {path}");
        for status in statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
        if header == "if-none-match" {
            assert!(
                op["responses"]["200"]["headers"]["etag"].is_object(),
                "{method} {path}"
            );
        }
    }
    app.finish().await;
}
