//! Accounts and ownership, as the contract states them, on every backend: signing in for a
//! bearer token, the 401s of every protected route (walked from the OpenAPI document, not a
//! hand list), private notes, revocation (on this instance and on another one within 1 s),
//! the purge of expired sessions, sign-in throttling, and `no-store` on user data.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use chrono::{DateTime, Utc};
use entity::{note, session, user};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
};
use serde_json::{Value, json};
use tests::{
    Backend, Reply, SignedIn, TEST_PASSWORD, TestApp, assert_problem, backends,
    fixtures::{
        Operation, PUBLIC_ROUTES, array, assert_retry_after, assert_unauthenticated, client,
        create_note, export_lines, id_of, ids, note_body, note_path, openapi_document, operations,
        patch_user, problem_identity, sessions_of, sorted_keys, time_of,
    },
    http::{TestServer, json_request},
    unique_email,
};

/// The socket peer of the in-process sign-ins these tests make (a documentation address).
const PEER: &str = "192.0.2.10:51000";
/// [`PEER`]'s address alone, as `FORWARDED_ALLOW_IPS` lists it.
const PEER_IP: &str = "192.0.2.10";
/// Another client, on another address.
const OTHER_PEER: &str = "192.0.2.20:51000";

// ---------------------------------------------------------------------------------------
// Helpers

fn peer(address: &str) -> SocketAddr {
    address.parse().expect("a socket address")
}

/// `POST /sessions` for `email` and `password`, from the client at `from`.
fn sign_in_request(email: &str, password: &str, from: &str) -> TestRequest {
    json_request(
        Method::POST,
        "/sessions",
        &json!({"email": email, "password": password}),
    )
    .peer_addr(peer(from))
}

/// Sign in anonymously from [`PEER`] and return the whole reply.
async fn try_sign_in(app: &TestApp, email: &str, password: &str) -> Reply {
    app.send_anonymous(sign_in_request(email, password, PEER))
        .await
}

/// Sign in from [`PEER`]; the token (panics unless 201).
async fn token_for(app: &TestApp, email: &str, password: &str) -> String {
    let reply = try_sign_in(app, email, password).await;
    assert_eq!(reply.status, StatusCode::CREATED, "sign-in: {reply:?}");
    reply.json()["token"].as_str().expect("a token").to_owned()
}

/// Sign up a new user anonymously: their id and e-mail address (password [`TEST_PASSWORD`]).
async fn sign_up(app: &TestApp, tag: &str) -> (i64, String) {
    let email = unique_email(tag);
    let reply = app
        .send_anonymous(json_request(
            Method::POST,
            "/users",
            &json!({"email": email, "password": TEST_PASSWORD}),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "sign-up: {reply:?}");
    (id_of(&reply.json()), email)
}

/// The app, and a user signed up with `tag` (not signed in): their id and e-mail address.
async fn app_with_user(backend: Backend, tag: &str) -> (TestApp, i64, String) {
    let app = TestApp::spawn(backend).await;
    let (id, email) = sign_up(&app, tag).await;
    (app, id, email)
}

/// [`TestApp::signed_in`], and the token of a second session of the same user.
async fn signed_in_twice(backend: Backend) -> (TestApp, SignedIn, String) {
    let (app, user) = TestApp::signed_in(backend).await;
    let other = token_for(&app, &user.email, TEST_PASSWORD).await;
    (app, user, other)
}

/// For a walk of the OpenAPI document: [`TestApp::signed_in`] as a note's owner, the note's
/// id (the walk must leave the note as it is), and the document.
async fn document_walk(backend: Backend) -> (TestApp, SignedIn, i64, Value) {
    let (app, owner) = TestApp::signed_in(backend).await;
    let note = create_note(&app, Some(&owner.token), &note_body("still here", false)).await;
    let doc = openapi_document(&app).await;
    (app, owner, id_of(&note.json()), doc)
}

/// A note of `owner`'s with `text`: its id, its row and its path.
async fn note_of(app: &TestApp, owner: &SignedIn, text: &str) -> (i64, note::Model, String) {
    let note = create_note(app, Some(&owner.token), &note_body(text, false))
        .await
        .json();
    let id = id_of(&note);
    (id, stored_note(app, id).await.unwrap(), note_path(&note))
}

/// `GET`, `PATCH` with `change` and `DELETE` of `path` as `token`'s user, by method.
async fn read_change_delete(
    app: &TestApp,
    token: &str,
    path: &str,
    change: &Value,
) -> [(&'static str, Reply); 3] {
    let patch = json_request(Method::PATCH, path, change);
    [
        ("GET", app.get_as(token, path).await),
        ("PATCH", app.send_as(token, patch).await),
        ("DELETE", app.delete_as(token, path).await),
    ]
}

/// `PATCH /users/{id}` with `body` as `admin`, who may: panics unless 200.
async fn change_as_admin(app: &TestApp, admin: &SignedIn, id: i64, body: &Value) {
    let reply = patch_user(app, Some(&admin.token), id, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

/// Delete `token`'s session behind the API's back.
async fn delete_session(app: &TestApp, token: &str) {
    session::Entity::delete_many()
        .filter(session::Column::TokenDigest.eq(session::digest(token)))
        .exec(app.conn())
        .await
        .unwrap();
}

/// `GET /users/me` with `token`.
async fn me_with(app: &TestApp, token: &str) -> Reply {
    app.get_as(token, "/users/me").await
}

/// `token` is refused (401 with `WWW-Authenticate: Bearer`).
async fn assert_token_refused(app: &TestApp, token: &str, why: &str) {
    let reply = me_with(app, token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{why}: {reply:?}");
    assert_unauthenticated(&reply);
}

/// `token`, changed behind the API's back (its session row edited or deleted), is refused
/// within the contract's second: the server may trust what it read of a token for a moment
/// (`api::session_cache`), but not longer.
async fn assert_token_refused_within_a_second(app: &TestApp, token: &str, why: &str) {
    let started = Instant::now();
    while me_with(app, token).await.status != StatusCode::UNAUTHORIZED
        && started.elapsed() < Duration::from_secs(1)
    {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_token_refused(app, token, why).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{why}: refused only after {:?}",
        started.elapsed()
    );
}

/// `token` is accepted and signs in user `id`.
async fn assert_token_accepted(app: &TestApp, token: &str, id: i64, why: &str) {
    let reply = me_with(app, token).await;
    assert_eq!(reply.status, StatusCode::OK, "{why}: {reply:?}");
    assert_eq!(id_of(&reply.json()), id, "{why}");
}

/// The ids `GET path` lists for `token`'s user.
async fn listed_ids(app: &TestApp, token: &str, path: &str) -> Vec<i64> {
    let reply = app.get_as(token, path).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {path}: {reply:?}");
    ids(&array(&reply.json()))
}

/// Notes of `alice` and `bob`, made in turn — alice, bob, alice (done), bob (done), alice —
/// so their ids interleave; the ids.
async fn interleaved_notes(app: &TestApp, alice: &SignedIn, bob: &SignedIn) -> [i64; 5] {
    let mut ids = [0; 5];
    let made = [
        (alice, "a1", false),
        (bob, "b1", false),
        (alice, "a2", true),
        (bob, "b2", true),
        (alice, "a3", false),
    ];
    for (id, (user, text, completed)) in ids.iter_mut().zip(made) {
        let note = create_note(app, Some(&user.token), &note_body(text, completed)).await;
        *id = id_of(&note.json());
    }
    ids
}

/// The notes `GET /notes/export` streams for `token`'s user.
async fn exported(app: &TestApp, token: &str) -> Vec<Value> {
    let reply = app.get_as(token, "/notes/export").await;
    assert_eq!(reply.status, StatusCode::OK, "export: {reply:?}");
    export_lines(&reply)
}

async fn stored_note(app: &TestApp, id: i64) -> Option<note::Model> {
    note::Entity::find_by_id(id).one(app.conn()).await.unwrap()
}

async fn session_of_token(app: &TestApp, token: &str) -> Option<session::Model> {
    session::Entity::find()
        .filter(session::Column::TokenDigest.eq(session::digest(token)))
        .one(app.conn())
        .await
        .unwrap()
}

/// Move the session of `token` to expire at `expires_at`, directly in the database.
async fn set_expiry(app: &TestApp, token: &str, expires_at: DateTime<Utc>) {
    let mut row = session_of_token(app, token)
        .await
        .expect("the token's session is stored")
        .into_active_model();
    row.expires_at = Set(expires_at);
    row.update(app.conn()).await.unwrap();
}

/// The `Retry-After` of a 429, in seconds: present, a number, more than 0 and at most the
/// 15-minute window.
fn assert_throttled(reply: &Reply) {
    let seconds = assert_retry_after(reply, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        seconds <= 900,
        "Retry-After {seconds} s is not within the 15-minute window"
    );
}

/// The app with `SIGNIN_MAX_FAILURES=3`, and a user signed up with `tag` who has failed
/// `failures` sign-ins from [`PEER`]: their id and e-mail address.
async fn user_failing_sign_ins(
    backend: Backend,
    tag: &str,
    failures: usize,
) -> (TestApp, i64, String) {
    let app = TestApp::with_settings(backend, &[("SIGNIN_MAX_FAILURES", "3")]).await;
    let (id, email) = sign_up(&app, tag).await;
    fail_from_peer(&app, failures, &email).await;
    (app, id, email)
}

/// Sign in with [`TEST_PASSWORD`] from [`OTHER_PEER`] and return the whole reply.
async fn sign_in_elsewhere(app: &TestApp, email: &str) -> Reply {
    app.send_anonymous(sign_in_request(email, TEST_PASSWORD, OTHER_PEER))
        .await
}

/// `times` failed sign-ins (a wrong password) for `email` from [`PEER`].
async fn fail_from_peer(app: &TestApp, times: usize, email: &str) {
    fail_sign_ins(app, times, || {
        sign_in_request(email, "wrong password", PEER)
    })
    .await;
}

/// `times` failed sign-ins (a wrong password) for `email` from `request`'s client.
async fn fail_sign_ins(app: &TestApp, times: usize, request: impl Fn() -> TestRequest) {
    for attempt in 1..=times {
        let reply = app.send_anonymous(request()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "failed sign-in {attempt} of {times}: {reply:?}"
        );
    }
}

/// A sign-in from [`PEER`] with `X-Forwarded-For: forwarded`.
fn forwarded_sign_in(email: &str, password: &str, forwarded: &str) -> TestRequest {
    sign_in_request(email, password, PEER).insert_header(("x-forwarded-for", forwarded))
}

// ---------------------------------------------------------------------------------------
// 1. POST /sessions

#[backends(sqlite, postgres, mysql)]
async fn sign_in_answers_201_with_a_bearer_token_its_expiry_and_the_user(backend: Backend) {
    let app = TestApp::with_settings(backend, &[("SESSION_TTL_S", "3600")]).await;
    let (id, email) = sign_up(&app, "sign-in").await;

    let before = Utc::now();
    let reply = try_sign_in(&app, &email, TEST_PASSWORD).await;
    let after = Utc::now();

    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(
        sorted_keys(&body),
        ["expires_at", "token", "token_type", "user"],
        "{body}"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    // SESSION_TTL_S=3600: an hour from now (a second of slack for stored precision).
    let ttl = chrono::Duration::seconds(3600);
    let slack = chrono::Duration::seconds(1);
    let expires_at = time_of(&body, "expires_at");
    assert!(
        expires_at >= before + ttl - slack && expires_at <= after + ttl + slack,
        "expires_at {expires_at} is not sign-in time + SESSION_TTL_S ({before} .. {after})"
    );
    assert_eq!(id_of(&body["user"]), id);
    assert_eq!(body["user"]["email"], email.as_str());
    assert_eq!(body["user"]["is_admin"], false);
    assert!(body["user"].get("hashed_password").is_none(), "{body}");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_token_has_at_least_128_random_bits_and_every_sign_in_gets_a_new_one(backend: Backend) {
    let (app, _, email) = app_with_user(backend, "tokens").await;

    let mut tokens = BTreeSet::new();
    for _ in 0..5 {
        tokens.insert(token_for(&app, &email, TEST_PASSWORD).await);
    }

    assert_eq!(tokens.len(), 5, "a token was handed out twice: {tokens:?}");
    for token in &tokens {
        assert!(
            token.bytes().all(|b| b.is_ascii_hexdigit()),
            "not hex: {token}"
        );
        assert!(token.len() * 4 >= 128, "fewer than 128 bits: {token}");
        assert_eq!(token.len(), 64, "256 bits, as documented: {token}");
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn only_the_tokens_digest_is_stored(backend: Backend) {
    let (app, id, email) = app_with_user(backend, "digest").await;

    let token = token_for(&app, &email, TEST_PASSWORD).await;

    let rows = sessions_of(&app, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].token_digest, session::digest(&token));
    assert_eq!(rows[0].token_digest.len(), 64, "SHA-256 in hex");
    let every_session = session::Entity::find().all(app.conn()).await.unwrap();
    for row in &every_session {
        assert!(
            !format!("{row:?}").contains(&token),
            "a session row holds the token itself: {row:?}"
        );
    }
    let every_user = user::Entity::find().all(app.conn()).await.unwrap();
    for row in &every_user {
        assert!(
            !row.hashed_password.contains(&token) && !row.email.contains(&token),
            "a user row holds the token"
        );
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn unknown_email_wrong_password_and_inactive_account_get_the_same_401(backend: Backend) {
    let (app, _, email) = app_with_user(backend, "known").await;
    let (inactive_id, inactive) = sign_up(&app, "inactive").await;
    let mut row = user::Entity::find_by_id(inactive_id)
        .one(app.conn())
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    row.is_active = Set(false);
    row.update(app.conn()).await.unwrap();

    let unknown = try_sign_in(&app, &unique_email("nobody"), TEST_PASSWORD).await;
    let wrong = try_sign_in(&app, &email, "not the password").await;
    let deactivated = try_sign_in(&app, &inactive, TEST_PASSWORD).await;

    let unknown = problem_identity(&assert_unauthenticated(&unknown));
    assert_eq!(
        problem_identity(&assert_unauthenticated(&wrong)),
        unknown,
        "a wrong password answers like an unknown e-mail address"
    );
    assert_eq!(
        problem_identity(&assert_unauthenticated(&deactivated)),
        unknown,
        "an inactive account answers like an unknown e-mail address"
    );
    assert!(sessions_of(&app, inactive_id).await.is_empty());
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn sign_in_without_an_email_or_a_password_is_422_naming_it(backend: Backend) {
    let (app, _, email) = app_with_user(backend, "fields").await;
    let cases = [
        (json!({"password": TEST_PASSWORD}), "email"),
        (json!({"email": email}), "password"),
        (json!({"email": email, "password": 42}), "password"),
        (json!({}), "email"),
    ];

    for (body, field) in cases {
        let reply = app
            .send_anonymous(json_request(Method::POST, "/sessions", &body).peer_addr(peer(PEER)))
            .await;

        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.iter().any(|f| f.ends_with(field)),
            "{body}: {field} is not named in {problem}"
        );
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn sign_in_matches_the_email_trimmed_and_case_insensitively(backend: Backend) {
    let (app, id, email) = app_with_user(backend, "Case").await;
    let typed = format!("  {}\t", email.to_uppercase());

    let reply = try_sign_in(&app, &typed, TEST_PASSWORD).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(id_of(&reply.json()["user"]), id);
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// 2. Requests without a valid token

#[backends(sqlite, postgres, mysql)]
async fn a_missing_or_malformed_authorization_is_401_with_www_authenticate_bearer(
    backend: Backend,
) {
    let (app, user) = TestApp::signed_in(backend).await;
    let cases: [(&str, Option<String>); 6] = [
        ("no Authorization", None),
        ("another scheme", Some("Basic x".to_owned())),
        ("the scheme alone", Some("Bearer".to_owned())),
        ("no space", Some(format!("Bearer{}", user.token))),
        ("the token alone", Some(user.token.clone())),
        (
            "two tokens",
            Some(format!("Bearer {} {}", user.token, user.token)),
        ),
    ];

    for (case, authorization) in cases {
        let mut request = TestRequest::get().uri("/users/me");
        if let Some(value) = authorization {
            request = request.insert_header(("authorization", value));
        }
        let reply = app.send_anonymous(request).await;

        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}: {reply:?}");
        assert_unauthenticated(&reply);
    }
    assert_token_accepted(&app, &user.token, user.id, "the well-formed token").await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn an_unknown_token_is_401(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    // Well-formed, but never handed out: the user's token with its last digit changed.
    let mut unknown = user.token.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == '0' { '1' } else { '0' });

    assert_token_refused(&app, &unknown, "an unknown token").await;
    assert_token_refused(&app, &session::digest(&user.token), "the stored digest").await;
    assert_token_refused(&app, &"a".repeat(300), "an overlong token").await;
    assert_token_accepted(&app, &user.token, user.id, "the real token").await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn an_expired_token_is_401(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    assert_token_accepted(&app, &user.token, user.id, "before it expires").await;

    set_expiry(&app, &user.token, Utc::now() - chrono::Duration::seconds(1)).await;

    assert_token_refused_within_a_second(&app, &user.token, "after it expired").await;
    app.finish().await;
}

/// A token this instance read a moment ago is trusted without a lookup (most signed-in
/// requests then cost no token query), but for half a second only: a session deleted behind
/// the API's back still works right after, and is refused well within the contract's second.
#[backends(sqlite, postgres, mysql)]
async fn a_token_read_a_moment_ago_is_trusted_for_half_a_second_only(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let read = Instant::now();
    assert_token_accepted(&app, &user.token, user.id, "first use").await;

    delete_session(&app, &user.token).await;
    let right_after = app.get_as(&user.token, "/notes").await;
    let gap = read.elapsed();
    assert_token_refused_within_a_second(&app, &user.token, "after the lookup's half second").await;

    if gap < Duration::from_millis(400) {
        assert_eq!(
            right_after.status,
            StatusCode::OK,
            "{gap:?} after a lookup, the token was looked up again: {right_after:?}"
        );
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_revoked_token_is_401(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    assert_token_accepted(&app, &user.token, user.id, "before it is revoked").await;

    // Revoked behind the API's back: its session row is gone.
    delete_session(&app, &user.token).await;

    assert_token_refused_within_a_second(&app, &user.token, "after it was revoked").await;
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// 3. The OpenAPI walk

/// Whether `operation` requires the `bearer` scheme.
fn requires_bearer(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_some_and(|requirements| requirements.iter().any(|r| r.get("bearer").is_some()))
}

/// Whether `operation` declares no security requirement at all (open to anyone).
fn is_open(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_none_or(|requirements| requirements.is_empty())
}

/// A value valid for `schema` (resolving `$ref`s in `doc`): the required properties of
/// objects, one item of arrays, strings as long as their minimum and in their format.
fn example(doc: &Value, schema: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
        return example(doc, &doc["components"]["schemas"][name]);
    }
    for combinator in ["allOf", "oneOf", "anyOf"] {
        if let Some(first) = schema[combinator]
            .as_array()
            .and_then(|options| options.iter().find(|o| o["type"] != "null"))
        {
            return example(doc, first);
        }
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.clone(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("string")
            .to_owned(),
        _ if schema["properties"].is_object() => "object".to_owned(),
        _ => "string".to_owned(),
    };
    match kind.as_str() {
        "object" => {
            let mut object = serde_json::Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().expect("a property name");
                object.insert(name.to_owned(), example(doc, &schema["properties"][name]));
            }
            Value::Object(object)
        }
        "array" => {
            let count = schema["minItems"].as_u64().unwrap_or(1).max(1);
            Value::Array((0..count).map(|_| example(doc, &schema["items"])).collect())
        }
        "boolean" => json!(false),
        "integer" | "number" => json!(schema["minimum"].as_i64().unwrap_or(1)),
        _ => match schema["format"].as_str() {
            Some("email") => json!(unique_email("walk")),
            Some("password") => json!("a long enough password"),
            Some("date-time") => json!(Utc::now().to_rfc3339()),
            _ => {
                let length = schema["minLength"].as_u64().unwrap_or(1).max(1);
                json!("w".repeat(length as usize))
            }
        },
    }
}

/// The operations that are not [`PUBLIC_ROUTES`].
fn protected_operations(doc: &Value) -> Vec<Operation> {
    operations(doc)
        .into_iter()
        .filter(|op| !PUBLIC_ROUTES.contains(&op.route().as_str()))
        .collect()
}

/// The method and URI of `op`, its path parameters naming rows that exist: `{id}` of
/// `/users/…` a user, of anything else a note.
fn method_and_uri(op: &Operation, user_id: i64, note_id: i64) -> (Method, String) {
    let id = if op.path.starts_with("/users/") {
        user_id
    } else {
        note_id
    };
    let uri = op.path.replace("{id}", &id.to_string());
    assert!(
        !uri.contains('{'),
        "{}: fill its path parameters in this test",
        op.route()
    );
    (Method::from_bytes(op.method.as_bytes()).unwrap(), uri)
}

/// A request for `op`, without `Authorization`, on existing rows ([`method_and_uri`]) and
/// with a body valid for the documented schema where one is documented: only the missing
/// sign-in is wrong with it.
fn valid_request(doc: &Value, op: &Operation, user_id: i64, note_id: i64) -> TestRequest {
    let (method, uri) = method_and_uri(op, user_id, note_id);
    let body_schema = &op.operation["requestBody"]["content"]["application/json"]["schema"];
    if body_schema.is_null() {
        TestRequest::default().method(method).uri(&uri)
    } else {
        json_request(method, &uri, &example(doc, body_schema))
    }
}

#[backends(sqlite, postgres, mysql)]
async fn the_openapi_document_opens_exactly_the_public_operations(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let doc = openapi_document(&app).await;

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(
        scheme["scheme"].as_str().map(str::to_lowercase),
        Some("bearer".into())
    );
    let operations = operations(&doc);
    let open: BTreeSet<String> = operations
        .iter()
        .filter(|op| is_open(&op.operation))
        .map(Operation::route)
        .collect();
    let public: BTreeSet<String> = PUBLIC_ROUTES.into_iter().map(str::to_owned).collect();
    assert_eq!(
        open, public,
        "the operations without a security requirement are exactly the public ones"
    );
    for op in protected_operations(&doc) {
        let route = op.route();
        assert!(
            requires_bearer(&op.operation),
            "{route} does not declare `security: [bearer]`"
        );
        assert!(
            op.operation["responses"]["401"].is_object(),
            "{route} does not document its 401"
        );
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn every_documented_operation_but_the_public_ones_refuses_an_anonymous_call(
    backend: Backend,
) {
    let (app, owner, note, doc) = document_walk(backend).await;
    let before = stored_note(&app, note).await.unwrap();
    let mut protected = protected_operations(&doc);
    // DELETE last: were one to go through, the others still find the rows.
    protected.sort_by_key(|op| op.method == "DELETE");
    assert!(
        protected.len() >= 12,
        "too few protected operations: {protected:?}"
    );

    for op in &protected {
        let request = valid_request(&doc, op, owner.id, note);
        let reply = app.send_anonymous(request).await;

        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{} answered an anonymous call: {reply:?}",
            op.route()
        );
        assert_unauthenticated(&reply);
    }
    assert_eq!(stored_note(&app, note).await, Some(before));
    assert_token_accepted(&app, &owner.token, owner.id, "the owner is untouched").await;
    assert_eq!(sessions_of(&app, owner.id).await.len(), 1);
    // The bodies were valid: signed in, the same requests succeed.
    for op in &protected {
        if op.operation["requestBody"].is_object() {
            let request = valid_request(&doc, op, owner.id, note);
            let reply = app.send_as(&owner.token, request).await;
            assert!(
                reply.status.is_success(),
                "{} signed in: {reply:?}",
                op.route()
            );
        }
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn every_documented_operation_but_the_public_ones_refuses_an_unknown_token(backend: Backend) {
    let (app, owner, note, doc) = document_walk(backend).await;
    let unknown = "0".repeat(64);

    for op in protected_operations(&doc) {
        let request = valid_request(&doc, &op, owner.id, note);
        let reply = app.send_as(&unknown, request).await;

        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{} answered an unknown token: {reply:?}",
            op.route()
        );
        assert_unauthenticated(&reply);
    }
    assert!(stored_note(&app, note).await.is_some());
    app.finish().await;
}

/// A bad token is 401 whatever else is wrong with the request: nothing about the body or the
/// path is reported to a caller who is not signed in (and the answer does not depend on
/// which extractor happens to finish first).
#[backends(sqlite, postgres, mysql)]
async fn an_unknown_token_is_401_even_with_a_bad_body_or_path(backend: Backend) {
    let (app, owner, note, doc) = document_walk(backend).await;
    let unknown = "0".repeat(64);

    for op in &protected_operations(&doc) {
        let route = op.route();
        let (method, uri) = method_and_uri(op, owner.id, note);
        let raw = |content_type: &str, body: &str| {
            TestRequest::default()
                .method(method.clone())
                .uri(&uri)
                .insert_header(("content-type", content_type))
                .set_payload(body.to_owned())
        };
        let mut cases = Vec::new();
        if op.operation["requestBody"].is_object() {
            // Valid JSON, invalid for every documented body (else 422).
            cases.push(("a JSON number", raw("application/json", "42")));
            cases.push(("malformed JSON", raw("application/json", "{")));
            cases.push(("not JSON", raw("text/plain", "x")));
        }
        if op.path.contains("{id}") {
            let request = valid_request(&doc, op, owner.id, note);
            let bad_id = op.path.replace("{id}", "not-an-id");
            cases.push(("a malformed id", request.uri(&bad_id)));
        }

        for (case, request) in cases {
            let reply = app.send_as(&unknown, request).await;

            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{route} with an unknown token and {case}: {reply:?}"
            );
            assert_unauthenticated(&reply);
        }
    }
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// 4. Ownership

#[backends(sqlite, postgres, mysql)]
async fn another_users_note_is_404_on_get_patch_and_delete_and_stays_as_it_was(backend: Backend) {
    let (app, alice, bob) = TestApp::alice_and_bob(backend).await;
    let (id, before, path) = note_of(&app, &alice, "alice's secret").await;
    let missing = app.get_as(&bob.token, "/notes/999999999").await;
    let missing = problem_identity(&assert_problem(&missing, StatusCode::NOT_FOUND));

    let change = note_body("bob was here", true);
    let attempts = read_change_delete(&app, &bob.token, &path, &change).await;

    for (name, reply) in attempts {
        let problem = assert_problem(&reply, StatusCode::NOT_FOUND);
        assert_eq!(
            problem_identity(&problem),
            missing,
            "{name}: as if the note did not exist"
        );
    }
    assert_eq!(
        stored_note(&app, id).await,
        Some(before),
        "unchanged and not deleted"
    );
    let reply = app.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK, "the owner still has it");
    assert_eq!(reply.json()["text"], "alice's secret");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn note_lists_show_only_the_callers_notes_whatever_the_parameters(backend: Backend) {
    let (app, alice, bob) = TestApp::alice_and_bob(backend).await;
    let [a1, b1, a2, b2, a3] = interleaved_notes(&app, &alice, &bob).await;

    let cases = [
        ("/notes".to_owned(), vec![b1, b2]),
        (format!("/notes?after={a1}"), vec![b1, b2]),
        (format!("/notes?after={b1}"), vec![b2]),
        (format!("/notes?after={a3}"), vec![]),
        ("/notes?completed=true".to_owned(), vec![b2]),
        ("/notes?completed=false".to_owned(), vec![b1]),
        (format!("/notes?after={a1}&completed=true"), vec![b2]),
        ("/notes?limit=1".to_owned(), vec![b1]),
        (format!("/notes?limit=1&after={b1}"), vec![b2]),
    ];
    for (path, expected) in cases {
        assert_eq!(
            listed_ids(&app, &bob.token, &path).await,
            expected,
            "bob's GET {path}"
        );
    }
    assert_eq!(listed_ids(&app, &alice.token, "/notes").await, [a1, a2, a3]);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn an_export_streams_only_the_callers_notes(backend: Backend) {
    let (app, alice, bob) = TestApp::alice_and_bob(backend).await;
    let [a1, b1, a2, b2, a3] = interleaved_notes(&app, &alice, &bob).await;

    let bobs = exported(&app, &bob.token).await;
    let alices = exported(&app, &alice.token).await;

    assert_eq!(ids(&bobs), [b1, b2]);
    assert!(bobs.iter().all(|n| n["user_id"] == bob.id), "{bobs:?}");
    assert_eq!(ids(&alices), [a1, a2, a3]);
    assert!(
        alices.iter().all(|n| n["user_id"] == alice.id),
        "{alices:?}"
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn new_notes_single_and_bulk_belong_to_their_creator(backend: Backend) {
    let (app, alice) = TestApp::signed_in(backend).await;

    let single = app.post_json("/notes", &json!({"text": "mine"})).await;
    let bulk = app
        .post_json("/notes/bulk", &json!([{"text": "one"}, {"text": "two"}]))
        .await;

    assert_eq!(single.status, StatusCode::CREATED, "{single:?}");
    assert_eq!(bulk.status, StatusCode::CREATED, "{bulk:?}");
    let mut created = vec![single.json()];
    created.extend(bulk.json().as_array().unwrap().iter().cloned());
    for note in &created {
        assert_eq!(note["user_id"], alice.id, "{note}");
        let stored = stored_note(&app, id_of(note)).await.unwrap();
        assert_eq!(stored.user_id, alice.id, "{stored:?}");
    }
    app.finish().await;
}

/// `reply` to a body naming another owner: 422, or 201 with the notes owned by the caller
/// (in the JSON and in the database) — never by the user the body named.
async fn assert_user_id_not_obeyed(app: &TestApp, reply: &Reply, caller: i64, named: i64) {
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
        assert_problem(reply, StatusCode::UNPROCESSABLE_ENTITY);
        return;
    }
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let body = reply.json();
    let notes = match body.as_array() {
        Some(notes) => notes.clone(),
        None => vec![body],
    };
    for note in notes {
        assert_eq!(note["user_id"], caller, "the JSON names the caller: {note}");
        let stored = stored_note(app, id_of(&note)).await.unwrap();
        assert_eq!(stored.user_id, caller, "stored for the caller, not {named}");
    }
}

#[backends(sqlite, postgres, mysql)]
async fn a_user_id_in_a_new_notes_body_is_never_obeyed(backend: Backend) {
    let (app, alice, bob) = TestApp::alice_and_bob(backend).await;

    let single = app
        .send_as(
            &bob.token,
            json_request(
                Method::POST,
                "/notes",
                &json!({"text": "x", "user_id": alice.id}),
            ),
        )
        .await;
    let bulk = app
        .send_as(
            &bob.token,
            json_request(
                Method::POST,
                "/notes/bulk",
                &json!([{"text": "y", "user_id": alice.id}, {"text": "z"}]),
            ),
        )
        .await;

    assert_user_id_not_obeyed(&app, &single, bob.id, alice.id).await;
    assert_user_id_not_obeyed(&app, &bulk, bob.id, alice.id).await;
    let alices = note::Entity::find()
        .filter(note::Column::UserId.eq(alice.id))
        .all(app.conn())
        .await
        .unwrap();
    assert!(alices.is_empty(), "bob wrote notes as alice: {alices:?}");
    assert!(listed_ids(&app, &alice.token, "/notes").await.is_empty());
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn admins_get_404_on_other_users_notes_too(backend: Backend) {
    let (app, alice, admin) = TestApp::signed_in_with_admin(backend).await;
    let (id, before, path) = note_of(&app, &alice, "not for admins").await;

    let change = json!({"completed": true});
    let attempts = read_change_delete(&app, &admin.token, &path, &change).await;
    let listed = listed_ids(&app, &admin.token, "/notes").await;
    let exports = exported(&app, &admin.token).await;

    for (_, reply) in &attempts {
        assert_problem(reply, StatusCode::NOT_FOUND);
    }
    assert!(listed.is_empty(), "{listed:?}");
    assert!(exports.is_empty(), "{exports:?}");
    assert_eq!(stored_note(&app, id).await, Some(before));
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// 5. Revocation

#[backends(sqlite, postgres, mysql)]
async fn signing_out_revokes_that_token_and_no_other(backend: Backend) {
    let (app, user, other_session) = signed_in_twice(backend).await;

    let reply = app.delete_as(&user.token, "/sessions/current").await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert!(reply.body.is_empty());
    assert_token_refused(&app, &user.token, "the signed-out token").await;
    assert!(session_of_token(&app, &user.token).await.is_none());
    assert_token_accepted(&app, &other_session, user.id, "another session").await;
    let again = app.delete_as(&user.token, "/sessions/current").await;
    assert_unauthenticated(&again);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn changing_ones_own_password_revokes_the_other_sessions_but_not_the_current_one(
    backend: Backend,
) {
    let (app, user, other) = signed_in_twice(backend).await;
    let third = token_for(&app, &user.email, TEST_PASSWORD).await;
    let new_password = "a brand new password";

    let change = json!({"password": new_password, "current_password": TEST_PASSWORD});
    let reply = patch_user(&app, Some(&user.token), user.id, &change).await;

    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_token_accepted(&app, &user.token, user.id, "the token that changed it").await;
    assert_token_refused(&app, &other, "another session").await;
    assert_token_refused(&app, &third, "a third session").await;
    assert_eq!(sessions_of(&app, user.id).await.len(), 1);
    assert_unauthenticated(&try_sign_in(&app, &user.email, TEST_PASSWORD).await);
    token_for(&app, &user.email, new_password).await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn an_admin_setting_a_users_password_revokes_every_session_of_that_user(backend: Backend) {
    let (app, user, other) = signed_in_twice(backend).await;
    let admin = app.admin().await;

    change_as_admin(
        &app,
        &admin,
        user.id,
        &json!({"password": "set by the admin"}),
    )
    .await;

    assert_token_refused(&app, &user.token, "the user's first session").await;
    assert_token_refused(&app, &other, "the user's second session").await;
    assert!(sessions_of(&app, user.id).await.is_empty());
    assert_token_accepted(&app, &admin.token, admin.id, "the admin's own session").await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn deactivation_revokes_every_session_for_good_and_sign_in_is_401(backend: Backend) {
    let (app, user, other) = signed_in_twice(backend).await;
    let admin = app.admin().await;

    change_as_admin(&app, &admin, user.id, &json!({"is_active": false})).await;

    assert_token_refused(&app, &user.token, "deactivated: first session").await;
    assert_token_refused(&app, &other, "deactivated: second session").await;
    assert!(sessions_of(&app, user.id).await.is_empty());
    assert_unauthenticated(&try_sign_in(&app, &user.email, TEST_PASSWORD).await);
    // Revoked, not merely hidden while inactive: reactivation does not bring them back.
    change_as_admin(&app, &admin, user.id, &json!({"is_active": true})).await;
    assert_token_refused(&app, &user.token, "reactivated: first session").await;
    assert_token_refused(&app, &other, "reactivated: second session").await;
    token_for(&app, &user.email, TEST_PASSWORD).await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn deleting_a_user_revokes_their_sessions(backend: Backend) {
    let (app, user, other) = signed_in_twice(backend).await;

    let reply = app
        .delete_as(&user.token, &format!("/users/{}", user.id))
        .await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert_token_refused(&app, &user.token, "the token that deleted the user").await;
    assert_token_refused(&app, &other, "another session").await;
    assert!(
        sessions_of(&app, user.id).await.is_empty(),
        "sessions deleted"
    );
    app.finish().await;
}

// Across instances: two servers on one database, real HTTP.

/// Sign up and sign in through `server`; the user's id, e-mail and token.
async fn sign_up_and_in_over_http(client: &awc::Client, server: &TestServer) -> SignedIn {
    let email = unique_email("instances");
    let credentials = json!({"email": email, "password": TEST_PASSWORD});
    let mut reply = client
        .post(server.url("/users"))
        .send_json(&credentials)
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let id = id_of(&reply.json::<Value>().await.unwrap());
    let token = sign_in_over_http(client, server, &email).await;
    SignedIn {
        id,
        email,
        password: TEST_PASSWORD.to_owned(),
        token,
    }
}

async fn sign_in_over_http(client: &awc::Client, server: &TestServer, email: &str) -> String {
    let mut reply = client
        .post(server.url("/sessions"))
        .send_json(&json!({"email": email, "password": TEST_PASSWORD}))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let body: Value = reply.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// The status of `GET /users/me` with `token` on `server`.
async fn me_status_over_http(client: &awc::Client, server: &TestServer, token: &str) -> u16 {
    client
        .get(server.url("/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// How long after now `server` takes to refuse `token` (401), polling every 50 ms; panics
/// after 5 s, or if it answers anything but 200 or 401.
async fn refused_after(client: &awc::Client, server: &TestServer, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        match me_status_over_http(client, server, token).await {
            401 => return started.elapsed(),
            200 => {}
            other => panic!("GET /users/me answered {other} while waiting for a 401"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other instance still accepts the revoked token after 5 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[backends(sqlite, postgres, mysql)]
async fn a_signed_out_token_is_refused_by_another_instance_within_a_second(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (one, two) = (app.serve().await, app.serve().await);
    let client = client(Duration::from_secs(10));
    let user = sign_up_and_in_over_http(&client, &one).await;
    // The second instance has seen the token (and may have cached it).
    assert_eq!(me_status_over_http(&client, &two, &user.token).await, 200);
    assert_eq!(me_status_over_http(&client, &two, &user.token).await, 200);

    let reply = client
        .delete(one.url("/sessions/current"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::NO_CONTENT);
    let delay = refused_after(&client, &two, &user.token).await;

    eprintln!("{backend:?}: sign-out on one instance, refused by the other after {delay:?}");
    assert!(
        delay < Duration::from_secs(1),
        "the other instance took {delay:?}"
    );
    one.stop().await;
    two.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_password_change_revokes_the_other_sessions_on_another_instance_within_a_second(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (one, two) = (app.serve().await, app.serve().await);
    let client = client(Duration::from_secs(10));
    let user = sign_up_and_in_over_http(&client, &one).await;
    let other = sign_in_over_http(&client, &two, &user.email).await;
    assert_eq!(me_status_over_http(&client, &two, &other).await, 200);
    assert_eq!(me_status_over_http(&client, &two, &user.token).await, 200);

    let reply = client
        .patch(one.url(&format!("/users/{}", user.id)))
        .bearer_auth(&user.token)
        .send_json(&json!({"password": "changed on one", "current_password": TEST_PASSWORD}))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let delay = refused_after(&client, &two, &other).await;

    eprintln!(
        "{backend:?}: password change on one instance, other session refused by the other after {delay:?}"
    );
    assert!(
        delay < Duration::from_secs(1),
        "the other instance took {delay:?}"
    );
    assert_eq!(
        me_status_over_http(&client, &two, &user.token).await,
        200,
        "the token that made the change still works on the other instance"
    );
    one.stop().await;
    two.stop().await;
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// 6. Purging expired sessions

#[backends(sqlite, postgres, mysql)]
async fn purging_deletes_expired_sessions_and_keeps_live_ones(backend: Backend) {
    let (app, user, expired) = signed_in_twice(backend).await;
    let now = entity::now();
    set_expiry(&app, &expired, now - chrono::Duration::seconds(1)).await;
    assert_eq!(sessions_of(&app, user.id).await.len(), 2);

    let purged = session::delete_expired(now).exec(app.conn()).await.unwrap();

    assert_eq!(purged.rows_affected, 1);
    assert!(
        session_of_token(&app, &expired).await.is_none(),
        "expired: gone"
    );
    assert!(
        session_of_token(&app, &user.token).await.is_some(),
        "live: kept"
    );
    assert_token_accepted(&app, &user.token, user.id, "the live session").await;
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// 7. Sign-in throttling (SIGNIN_MAX_FAILURES=3), counted in the database for every instance

#[backends(sqlite, postgres, mysql)]
async fn after_max_failures_even_the_right_password_is_429_with_retry_after(backend: Backend) {
    let (app, id, email) = user_failing_sign_ins(backend, "throttled", 3).await;

    let right = try_sign_in(&app, &email, TEST_PASSWORD).await;
    let wrong = try_sign_in(&app, &email, "wrong password").await;

    assert_throttled(&right);
    assert_throttled(&wrong);
    assert!(
        sessions_of(&app, id).await.is_empty(),
        "no session was made"
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn failures_count_on_every_instance(backend: Backend) {
    let app = TestApp::with_settings(backend, &[("SIGNIN_MAX_FAILURES", "3")]).await;
    let (_, email) = sign_up(&app, "two-instances").await;
    fail_from_peer(&app, 2, &email).await;
    let other = app.other_instance().await;
    let third = other
        .send(sign_in_request(&email, "wrong password", PEER))
        .await;
    assert_eq!(third.status, StatusCode::UNAUTHORIZED, "{third:?}");
    assert_throttled(
        &other
            .send(sign_in_request(&email, TEST_PASSWORD, PEER))
            .await,
    );
    assert_throttled(&try_sign_in(&app, &email, TEST_PASSWORD).await);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn failures_older_than_fifteen_minutes_no_longer_count(backend: Backend) {
    let (app, _, email) = user_failing_sign_ins(backend, "window", 3).await;
    assert_throttled(&try_sign_in(&app, &email, TEST_PASSWORD).await);
    // Every failure 15 minutes and a second older, as if that time had passed.
    let past = entity::now() - chrono::Duration::seconds(15 * 60 + 1);
    entity::throttle_event::Entity::update_many()
        .col_expr(
            entity::throttle_event::Column::At,
            sea_orm::sea_query::Expr::value(past),
        )
        .exec(app.conn())
        .await
        .unwrap();
    let reply = try_sign_in(&app, &email, TEST_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    app.finish().await;
}

/// A sign-up replayed with its `Idempotency-Key` and another password is a guess at the
/// account's password: it counts as a failed sign-in.
#[backends(sqlite, postgres, mysql)]
async fn a_sign_up_replay_with_another_password_counts_as_a_failed_sign_in(backend: Backend) {
    let app = TestApp::with_settings(backend, &[("SIGNIN_MAX_FAILURES", "2")]).await;
    let email = unique_email("replayed");
    let sign_up = |password: &str| {
        json_request(
            Method::POST,
            "/users",
            &json!({"email": email, "password": password}),
        )
        .insert_header(("Idempotency-Key", "sign-up-once"))
        .peer_addr(peer(PEER))
    };
    assert_eq!(
        app.send_anonymous(sign_up(TEST_PASSWORD)).await.status,
        StatusCode::CREATED
    );
    for _ in 0..2 {
        let guess = app.send_anonymous(sign_up("a guessed password")).await;
        assert_problem(&guess, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_throttled(&app.send_anonymous(sign_up("another guess")).await);
    assert_throttled(&try_sign_in(&app, &email, TEST_PASSWORD).await);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn the_throttle_holds_one_email_from_one_client_only(backend: Backend) {
    let (app, _, email) = user_failing_sign_ins(backend, "throttled", 3).await;
    let (_, other_email) = sign_up(&app, "bystander").await;
    assert_throttled(&try_sign_in(&app, &email, TEST_PASSWORD).await);

    let let_through = [
        (
            "another e-mail from the same client",
            try_sign_in(&app, &other_email, TEST_PASSWORD).await,
        ),
        (
            "the same e-mail from another client",
            sign_in_elsewhere(&app, &email).await,
        ),
    ];

    for (case, reply) in let_through {
        assert_eq!(reply.status, StatusCode::CREATED, "{case}: {reply:?}");
    }
    app.finish().await;
}

/// A success under the limit is let through (201), from this client and from another, and
/// does not clear the failures of another e-mail from the same client.
#[backends(sqlite, postgres, mysql)]
async fn a_successful_sign_in_under_the_limit_clears_no_other_failures(backend: Backend) {
    // bob is throttled from PEER; alice has two failures there.
    let (app, _, bob) = user_failing_sign_ins(backend, "bob", 3).await;
    let (_, alice) = sign_up(&app, "alice").await;
    fail_from_peer(&app, 2, &alice).await;

    let alice_here = try_sign_in(&app, &alice, TEST_PASSWORD).await;
    let alice_elsewhere = sign_in_elsewhere(&app, &alice).await;

    assert_eq!(alice_here.status, StatusCode::CREATED, "{alice_here:?}");
    assert_eq!(
        alice_elsewhere.status,
        StatusCode::CREATED,
        "{alice_elsewhere:?}"
    );
    assert_throttled(&try_sign_in(&app, &bob, TEST_PASSWORD).await);
    app.finish().await;
}

/// The other half of the success rule: a success from another client does not clear this
/// client's failures for the e-mail.
#[backends(sqlite, postgres, mysql)]
async fn a_successful_sign_in_from_another_client_leaves_this_clients_failures(backend: Backend) {
    let (app, _, email) = user_failing_sign_ins(backend, "alice", 2).await;
    let elsewhere = sign_in_elsewhere(&app, &email).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{elsewhere:?}");

    fail_from_peer(&app, 1, &email).await;
    let reply = try_sign_in(&app, &email, TEST_PASSWORD).await;

    assert_throttled(&reply);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn behind_a_trusted_proxy_failures_count_per_last_forwarded_address(backend: Backend) {
    let app = TestApp::with_settings(
        backend,
        &[
            ("SIGNIN_MAX_FAILURES", "3"),
            ("FORWARDED_ALLOW_IPS", PEER_IP),
        ],
    )
    .await;
    let (_, email) = sign_up(&app, "proxied").await;
    fail_sign_ins(&app, 3, || {
        forwarded_sign_in(&email, "wrong password", "203.0.113.5")
    })
    .await;

    let same_client = forwarded_sign_in(&email, TEST_PASSWORD, "203.0.113.5");
    // A client may prepend anything; the proxy appends the address it saw.
    let same_client_spoofing =
        forwarded_sign_in(&email, TEST_PASSWORD, "198.51.100.1, 203.0.113.5");
    let other_client = forwarded_sign_in(&email, TEST_PASSWORD, "203.0.113.6");
    let other_client_spoofing =
        forwarded_sign_in(&email, TEST_PASSWORD, "203.0.113.5, 203.0.113.7");

    assert_throttled(&app.send_anonymous(same_client).await);
    assert_throttled(&app.send_anonymous(same_client_spoofing).await);
    let reply = app.send_anonymous(other_client).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let reply = app.send_anonymous(other_client_spoofing).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn from_an_untrusted_peer_x_forwarded_for_does_not_escape_the_throttle(backend: Backend) {
    let app = TestApp::with_settings(backend, &[("SIGNIN_MAX_FAILURES", "3")]).await;
    let (_, email) = sign_up(&app, "direct").await;
    fail_sign_ins(&app, 3, || {
        forwarded_sign_in(&email, "wrong password", "203.0.113.5")
    })
    .await;

    let other_forwarded = forwarded_sign_in(&email, TEST_PASSWORD, "203.0.113.6");
    let none_forwarded = sign_in_request(&email, TEST_PASSWORD, PEER);

    assert_throttled(&app.send_anonymous(other_forwarded).await);
    assert_throttled(&app.send_anonymous(none_forwarded).await);
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// 8. The caller, and no caching of user data

#[backends(sqlite, postgres, mysql)]
async fn users_me_is_the_caller(backend: Backend) {
    let (app, alice) = TestApp::signed_in(backend).await;
    let bob = app.sign_up_and_in("bob").await;

    let alices = me_with(&app, &alice.token).await;
    let bobs = me_with(&app, &bob.token).await;

    assert_eq!(alices.status, StatusCode::OK, "{alices:?}");
    assert_eq!(bobs.status, StatusCode::OK, "{bobs:?}");
    let (alices, bobs) = (alices.json(), bobs.json());
    assert_eq!(id_of(&alices), alice.id);
    assert_eq!(alices["email"], alice.email.as_str());
    assert_eq!(alices["is_admin"], false);
    assert!(alices.get("hashed_password").is_none() && alices.get("password").is_none());
    assert_eq!(id_of(&bobs), bob.id);
    assert_eq!(bobs["email"], bob.email.as_str());
    let shown = user::Entity::find_by_id(alice.id)
        .one(app.conn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(time_of(&alices, "created_at"), shown.created_at);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn responses_carrying_user_data_say_cache_control_no_store(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let note = create_note(&app, Some(&user.token), &note_body("private", false))
        .await
        .json();
    let id = id_of(&note);

    let replies = [
        (
            "POST /sessions",
            try_sign_in(&app, &user.email, TEST_PASSWORD).await,
        ),
        ("GET /users/me", app.get("/users/me").await),
        (
            "GET /users/{id}",
            app.get(&format!("/users/{}", user.id)).await,
        ),
        ("GET /notes", app.get("/notes").await),
        ("GET /notes/{id}", app.get(&format!("/notes/{id}")).await),
        (
            "POST /notes",
            app.post_json("/notes", &json!({"text": "more"})).await,
        ),
        ("GET /notes/export", app.get("/notes/export").await),
    ];

    for (route, reply) in replies {
        assert!(reply.status.is_success(), "{route}: {reply:?}");
        let cache_control = reply.header("cache-control").unwrap_or_default();
        assert!(
            cache_control
                .split(',')
                .any(|directive| directive.trim().eq_ignore_ascii_case("no-store")),
            "{route}: Cache-Control is {cache_control:?}"
        );
    }
    app.finish().await;
}
