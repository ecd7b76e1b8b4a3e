//! `/users`: sign-up, reading, listing, profile changes and deletion, as the contract states
//! them, on every backend — through the app on the pool, over a database of each test's own.
//!
//! Who may do what ("Accounts and ownership"): a user reads, changes and deletes their own
//! account; an admin any account; anyone else's account is 404. Only admins list users and
//! change `is_active` or `is_admin` (403 for anyone else); changing one's own password needs
//! `current_password` (missing 422, wrong 403).

use std::time::Duration;

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use entity::{note, user};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tests::{
    Backend, TEST_PASSWORD, TestApp, assert_json, assert_problem, backends,
    fixtures::{
        array, assert_unauthenticated, create_note, id_of, ids, patch_user, problem_identity,
        sessions_of, sorted_keys, time_of, users_with_email,
    },
    http::{get, json_request},
    unique_email,
};

/// The password every user of these tests signs up with.
const PASSWORD: &str = TEST_PASSWORD;

fn post_user(body: &Value) -> TestRequest {
    json_request(Method::POST, "/users", body)
}

fn delete_user(id: i64) -> TestRequest {
    TestRequest::delete().uri(&format!("/users/{id}"))
}

/// Sign up `email` and return the created user.
async fn create_user(app: &TestApp, email: &str) -> Value {
    let reply = app
        .send_anonymous(post_user(&json!({"email": email, "password": PASSWORD})))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.json()
}

/// Sign up a new address made from `tag` (not signed in): the user as shown, and their id.
async fn new_user(app: &TestApp, tag: &str) -> (Value, i64) {
    let shown = create_user(app, &unique_email(tag)).await;
    let id = id_of(&shown);
    (shown, id)
}

/// A user these tests signed up and signed in.
struct Account {
    /// The user as sign-up showed them.
    shown: Value,
    id: i64,
    email: String,
    token: String,
}

/// Sign up a new address made from `tag`, and sign in.
async fn new_account(app: &TestApp, tag: &str) -> Account {
    let email = unique_email(tag);
    let shown = create_user(app, &email).await;
    let token = app.sign_in(&email, PASSWORD).await;
    Account {
        id: id_of(&shown),
        shown,
        email,
        token,
    }
}

/// The app, and a user signed up with a new address, which is then taken: the address.
async fn app_with_taken_email(backend: Backend, tag: &str) -> (TestApp, String) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email(tag);
    create_user(&app, &email).await;
    (app, email)
}

/// `email` signs in with `password`, and no longer with [`PASSWORD`].
async fn assert_password_changed(app: &TestApp, email: &str, password: &str) {
    assert_eq!(
        sign_in_status(app, email, password).await,
        StatusCode::CREATED,
        "the new password"
    );
    assert_eq!(
        sign_in_status(app, email, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "the old password"
    );
}

/// `POST /sessions` for `email` and `password`: its status.
async fn sign_in_status(app: &TestApp, email: &str, password: &str) -> StatusCode {
    let body = json!({"email": email, "password": password});
    app.send_anonymous(json_request(Method::POST, "/sessions", &body))
        .await
        .status
}

/// `token` still signs its user in (`GET /users/me` is 200).
async fn assert_signed_in(app: &TestApp, token: &str, why: &str) {
    let reply = app.get_as(token, "/users/me").await;
    assert_eq!(reply.status, StatusCode::OK, "{why}: {reply:?}");
}

/// The names of the fields a 422 problem reports.
fn invalid_fields(reply: &tests::Reply) -> Vec<String> {
    assert_problem(reply, StatusCode::UNPROCESSABLE_ENTITY)["errors"]
        .as_array()
        .expect("a validation problem lists its errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn stored_user(app: &TestApp, id: i64) -> Option<user::Model> {
    user::Entity::find_by_id(id).one(app.conn()).await.unwrap()
}

/// `shown` is `row` as the contract shows a user, field by field (never the hash).
fn assert_shows_row(shown: &Value, row: &user::Model) {
    assert_eq!(
        sorted_keys(shown),
        [
            "created_at",
            "email",
            "email_verified",
            "id",
            "is_active",
            "is_admin",
            "name",
            "updated_at"
        ],
        "{shown}"
    );
    assert_eq!(id_of(shown), row.id, "{shown}");
    assert_eq!(shown["email"], row.email.as_str(), "{shown}");
    assert_eq!(shown["name"], json!(row.name), "{shown}");
    assert_eq!(shown["is_active"], row.is_active, "{shown}");
    assert_eq!(shown["is_admin"], row.is_admin, "{shown}");
    assert_eq!(shown["email_verified"], row.email_verified, "{shown}");
    assert_eq!(time_of(shown, "created_at"), row.created_at, "{shown}");
    assert_eq!(time_of(shown, "updated_at"), row.updated_at, "{shown}");
}

#[backends(sqlite, postgres, mysql)]
async fn sign_up_answers_201_with_the_public_fields_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("alice");

    let reply = app
        .send(post_user(
            &json!({"email": email, "password": PASSWORD, "name": "Alice"}),
        ))
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let user = reply.json();
    let stored = stored_user(&app, id_of(&user)).await.expect("stored");
    assert_shows_row(&user, &stored);
    let id = id_of(&user);
    assert!(id > 0);
    assert_eq!(user["email"], email);
    assert_eq!(user["name"], "Alice");
    assert_eq!(user["is_active"], true);
    assert_eq!(user["is_admin"], false, "a sign-up is never an admin");
    assert_eq!(time_of(&user, "created_at"), time_of(&user, "updated_at"));
    assert_eq!(reply.header("location"), Some(&*format!("/users/{id}")));
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "no cache keeps it"
    );
    let body = String::from_utf8_lossy(&reply.body);
    assert!(
        !body.contains(PASSWORD) && !body.contains("$argon2"),
        "{body}"
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn sign_up_trims_and_lowercases_the_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = unique_email("bob");
    let typed = format!("  {}\t", email.to_uppercase());

    let user = create_user(&app, &typed).await;

    assert_eq!(user["email"], email);
    let stored = stored_user(&app, id_of(&user)).await.unwrap();
    assert_eq!(stored.email, email);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn sign_up_stores_the_password_as_an_argon2id_hash(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let user = create_user(&app, &unique_email("carol")).await;

    let stored = stored_user(&app, id_of(&user)).await.unwrap();
    assert!(
        stored.hashed_password.starts_with("$argon2id$"),
        "{}",
        stored.hashed_password
    );
    assert!(!stored.hashed_password.contains(PASSWORD));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn sign_up_rejects_a_taken_email_case_insensitively(backend: Backend) {
    let (app, email) = app_with_taken_email(backend, "dave").await;

    let reply = app
        .send(post_user(
            &json!({"email": format!(" {} ", email.to_uppercase()), "password": PASSWORD}),
        ))
        .await;

    assert_problem(&reply, StatusCode::CONFLICT);
    assert_eq!(users_with_email(&app, &email).await, 1);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn sign_up_rejects_invalid_emails_with_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let too_long = format!("{}@example.com", "a".repeat(250));

    for email in [
        json!("not-an-address"),
        json!("two@@example.com"),
        json!(""),
        json!(42),
        json!(too_long),
    ] {
        let reply = app
            .send(post_user(&json!({"email": email, "password": PASSWORD})))
            .await;

        assert_eq!(invalid_fields(&reply), ["email"], "email {email}");
    }
    let reply = app.send(post_user(&json!({"password": PASSWORD}))).await;
    assert_eq!(invalid_fields(&reply), ["email"], "missing email");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn sign_up_accepts_passwords_of_8_to_256_characters(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for length in [7, 257] {
        let body = json!({"email": unique_email("pw"), "password": "p".repeat(length)});
        let reply = app.send(post_user(&body)).await;
        assert_eq!(invalid_fields(&reply), ["password"], "length {length}");
    }
    let reply = app
        .send(post_user(&json!({"email": unique_email("pw")})))
        .await;
    assert_eq!(invalid_fields(&reply), ["password"], "missing password");
    for length in [8, 256] {
        // Multi-byte characters: the bounds count characters, not bytes.
        let body = json!({"email": unique_email("pw"), "password": "é".repeat(length)});
        let reply = app.send(post_user(&body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "length {length}");
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn get_returns_the_user_or_404(backend: Backend) {
    let (app, admin) = TestApp::with_admin(backend).await;
    let user = new_account(&app, "erin").await;
    let path = format!("/users/{}", user.id);
    let missing = format!("/users/{}", user.id + 1_000_000);

    let found = app.get_as(&user.token, &path).await;
    let found_by_admin = app.get_as(&admin.token, &path).await;
    let missing_for_admin = app.get_as(&admin.token, &missing).await;
    let missing_for_user = app.get_as(&user.token, &missing).await;
    let not_an_id = app.get_as(&admin.token, "/users/abc").await;

    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.json(), user.shown);
    assert_shows_row(&found.json(), &stored_user(&app, user.id).await.unwrap());
    assert_eq!(found_by_admin.status, StatusCode::OK);
    assert_eq!(found_by_admin.json(), user.shown);
    assert_problem(&missing_for_admin, StatusCode::NOT_FOUND);
    assert_problem(&missing_for_user, StatusCode::NOT_FOUND);
    assert_problem(&not_an_id, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_pages_by_id_with_a_next_link(backend: Backend) {
    // Signed up first: the users the test pages through come after the admin.
    let (app, admin) = TestApp::with_admin(backend).await;
    let mut created = Vec::new();
    for tag in ["page-a", "page-b", "page-c"] {
        created.push(id_of(&create_user(&app, &unique_email(tag)).await));
    }
    let before_first = created[0] - 1;

    let first = app
        .get_as(
            &admin.token,
            &format!("/users?limit=2&after={before_first}"),
        )
        .await;

    assert_eq!(
        ids(&array(&assert_json(&first, StatusCode::OK))),
        created[..2]
    );
    let link = first.header("link").expect("a full page links to the next");
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("unexpected Link header: {link}"));
    assert!(next.starts_with("/users?"), "{next}");

    let second = app.get_as(&admin.token, next).await;

    assert_eq!(
        ids(&array(&assert_json(&second, StatusCode::OK))),
        created[2..]
    );
    assert_eq!(second.header("link"), None, "a partial page is the last");
    for key in ["hashed_password", "password"] {
        assert!(second.json()[0].get(key).is_none());
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_rejects_bad_paging_parameters(backend: Backend) {
    let (app, admin) = TestApp::with_admin(backend).await;

    for query in ["limit=0", "limit=1001", "limit=x", "after=-1"] {
        let reply = app.get_as(&admin.token, &format!("/users?{query}")).await;

        assert!(
            matches!(reply.status.as_u16(), 400 | 422),
            "{query}: {}",
            reply.status
        );
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_changes_name_and_active_flag(backend: Backend) {
    // `is_active` is for admins.
    let (app, admin) = TestApp::with_admin(backend).await;
    let (created, id) = new_user(&app, "frank").await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let change = json!({"name": "Frank", "is_active": false});
    let reply = patch_user(&app, Some(&admin.token), id, &change).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let user = reply.json();
    assert_eq!(user["name"], "Frank");
    assert_eq!(user["is_active"], false);
    assert_eq!(user["email"], created["email"]);
    assert_eq!(
        time_of(&user, "created_at"),
        time_of(&created, "created_at")
    );
    assert!(time_of(&user, "updated_at") > time_of(&created, "updated_at"));
    assert!(user.get("hashed_password").is_none());
    let stored = stored_user(&app, id).await.unwrap();
    assert_eq!(
        (stored.name.as_deref(), stored.is_active),
        (Some("Frank"), false)
    );
    assert_shows_row(&user, &stored);
    assert_eq!(
        app.get_as(&admin.token, &format!("/users/{id}"))
            .await
            .json(),
        user
    );

    let cleared = patch_user(&app, Some(&admin.token), id, &json!({"name": null})).await;

    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.json()["name"], Value::Null);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_rehashes_a_new_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = new_account(&app, "grace").await;
    let old_hash = stored_user(&app, user.id).await.unwrap().hashed_password;

    let change = json!({"password": "another secret", "current_password": PASSWORD});
    let reply = patch_user(&app, Some(&user.token), user.id, &change).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let new_hash = stored_user(&app, user.id).await.unwrap().hashed_password;
    assert_ne!(new_hash, old_hash);
    assert!(new_hash.starts_with("$argon2id$"), "{new_hash}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(!body.contains("argon2") && !body.contains("another secret"));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_changes_the_email_normalized(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = new_account(&app, "heidi").await;
    let new_email = unique_email("heidi-new");

    let change = json!({
        "email": format!(" {} ", new_email.to_uppercase()),
        "current_password": PASSWORD,
    });
    let reply = patch_user(&app, Some(&user.token), user.id, &change).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["email"], new_email);
    assert_eq!(stored_user(&app, user.id).await.unwrap().email, new_email);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_rejects_an_email_taken_by_another_user_with_409(backend: Backend) {
    let (app, taken) = app_with_taken_email(backend, "ivan").await;
    let user = new_account(&app, "judy").await;

    let change = json!({"email": taken.to_uppercase(), "current_password": PASSWORD});
    let reply = patch_user(&app, Some(&user.token), user.id, &change).await;

    assert_problem(&reply, StatusCode::CONFLICT);
    app.finish().await;
}

/// The explicit-transaction style: the name change and the e-mail change succeed or fail
/// together.
#[backends(sqlite, postgres, mysql)]
async fn patch_with_a_taken_email_leaves_the_name_unchanged(backend: Backend) {
    // `is_active` is for admins.
    let (app, admin) = TestApp::with_admin(backend).await;
    let taken = unique_email("mallory");
    create_user(&app, &taken).await;
    let (created, id) = new_user(&app, "niaj").await;

    let change = json!({"name": "Changed", "is_active": false, "email": taken});
    let reply = patch_user(&app, Some(&admin.token), id, &change).await;

    assert_problem(&reply, StatusCode::CONFLICT);
    let after = app.get_as(&admin.token, &format!("/users/{id}")).await;
    assert_eq!(
        after.json(),
        created,
        "nothing of the failed change remains"
    );
    let stored = stored_user(&app, id).await.unwrap();
    assert_eq!((stored.name, stored.is_active), (None, true));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_answers_404_for_an_unknown_user(backend: Backend) {
    let (app, _, admin) = TestApp::signed_in_with_admin(backend).await;

    let rename = json!({"name": "Nobody"});
    let by_admin = patch_user(&app, Some(&admin.token), 999_999_999, &rename).await;
    let by_user = patch_user(&app, None, 999_999_999, &rename).await;

    assert_problem(&by_admin, StatusCode::NOT_FOUND);
    assert_problem(&by_user, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_rejects_invalid_fields_with_422(backend: Backend) {
    // An admin may send every field, so only the values are wrong.
    let (app, admin) = TestApp::with_admin(backend).await;
    let (created, id) = new_user(&app, "olivia").await;

    for (body, field) in [
        (json!({"email": "nope"}), "email"),
        (json!({"password": "short"}), "password"),
        (json!({"password": "p".repeat(257)}), "password"),
        (json!({"is_active": "yes"}), "is_active"),
        (json!({"is_admin": 1}), "is_admin"),
        (json!({"name": "n".repeat(201)}), "name"),
    ] {
        let reply = patch_user(&app, Some(&admin.token), id, &body).await;

        assert_eq!(invalid_fields(&reply), [field], "{body}");
    }
    let after = app.get_as(&admin.token, &format!("/users/{id}")).await;
    assert_eq!(after.json(), created);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn delete_answers_204_then_404(backend: Backend) {
    let (app, admin) = TestApp::with_admin(backend).await;
    let (_, id) = new_user(&app, "peggy").await;

    let first = app.send_as(&admin.token, delete_user(id)).await;
    let second = app.send_as(&admin.token, delete_user(id)).await;

    assert_eq!(first.status, StatusCode::NO_CONTENT);
    assert!(first.body.is_empty());
    assert_problem(&second, StatusCode::NOT_FOUND);
    assert!(stored_user(&app, id).await.is_none());
    let reply = app.get_as(&admin.token, &format!("/users/{id}")).await;
    assert_problem(&reply, StatusCode::NOT_FOUND);
    app.finish().await;
}

/// The unique index decides, so simultaneous sign-ups with one address (in any case) over
/// real connections give exactly one 201, with real commits, on every backend.
#[backends(sqlite, postgres, mysql)]
async fn racing_sign_ups_with_one_email_give_exactly_one_201(backend: Backend) {
    const RACERS: usize = 16;
    let app = TestApp::spawn(backend).await;
    let server = app.serve().await;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    let variants = ["race@example.com", "RACE@example.com", " Race@Example.Com "];

    let requests = (0..RACERS).map(|i| {
        let body = json!({"email": variants[i % variants.len()], "password": PASSWORD});
        let request = client.post(server.url("/users")).send_json(&body);
        async move { request.await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures_util::future::join_all(requests).await;

    let statuses: Vec<u16> = statuses
        .into_iter()
        .map(|s| s.unwrap_or_else(|e| panic!("request failed: {e}")))
        .collect();
    let created = statuses.iter().filter(|&&s| s == 201).count();
    let conflicts = statuses.iter().filter(|&&s| s == 409).count();
    assert_eq!((created, conflicts), (1, RACERS - 1), "{statuses:?}");
    assert_eq!(users_with_email(&app, "race@example.com").await, 1);
    server.stop().await;
    app.finish().await;
}

// ---------------------------------------------------------------- who may do what

async fn notes_of(app: &TestApp, user: i64) -> u64 {
    note::Entity::find()
        .filter(note::Column::UserId.eq(user))
        .count(app.conn())
        .await
        .unwrap()
}

/// User `id` is gone with their notes and their sessions: `tokens`, theirs, are refused.
async fn assert_deleted_with_notes_and_sessions(app: &TestApp, id: i64, tokens: [&str; 2]) {
    assert!(stored_user(app, id).await.is_none());
    assert_eq!(notes_of(app, id).await, 0, "their notes are deleted");
    assert!(
        sessions_of(app, id).await.is_empty(),
        "their sessions are deleted"
    );
    for session in tokens {
        assert_unauthenticated(&app.get_as(session, "/users/me").await);
        assert_unauthenticated(&app.get_as(session, "/notes").await);
    }
}

/// A user reads and changes their own account, and deleting it signs them out everywhere and
/// deletes their notes.
#[backends(sqlite, postgres, mysql)]
async fn a_user_reads_changes_and_deletes_their_own_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = new_account(&app, "self").await;
    let other_session = app.sign_in(&user.email, PASSWORD).await;
    create_note(&app, Some(&user.token), &json!({"text": "mine"})).await;

    let read = app
        .get_as(&user.token, &format!("/users/{}", user.id))
        .await;
    let me = app.get_as(&user.token, "/users/me").await;
    let rename = json!({"name": "Myself"});
    let renamed = patch_user(&app, Some(&user.token), user.id, &rename).await;
    let deleted = app.send_as(&user.token, delete_user(user.id)).await;

    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(read.json(), user.shown);
    assert_eq!(me.json(), user.shown);
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:?}");
    assert_eq!(renamed.json()["name"], "Myself");
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_deleted_with_notes_and_sessions(&app, user.id, [&user.token, &other_session]).await;
    app.finish().await;
}

/// Someone else's account is 404 for a user who is not an admin — the very answer an unknown
/// id gets — on GET, PATCH and DELETE, and nothing changes.
#[backends(sqlite, postgres, mysql)]
async fn another_users_account_is_404_for_a_non_admin(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let (other, id) = new_user(&app, "other").await;
    let stored_before = stored_user(&app, id).await.unwrap();
    let unknown = app.get(&format!("/users/{}", id + 1_000_000)).await;
    assert_problem(&unknown, StatusCode::NOT_FOUND);

    let patch = |body: Value| json_request(Method::PATCH, &format!("/users/{id}"), &body);
    let attempts = [
        get(&format!("/users/{id}")),
        patch(json!({"name": "Hijacked"})),
        patch(json!({"email": unique_email("hijacked")})),
        patch(json!({"password": "taken over now"})),
        delete_user(id),
    ];
    for attempt in attempts {
        let reply = app.send(attempt).await;

        assert_problem(&reply, StatusCode::NOT_FOUND);
        assert_eq!(
            problem_identity(&reply.json()),
            problem_identity(&unknown.json()),
            "as if unknown"
        );
    }
    assert_eq!(
        stored_user(&app, id).await,
        Some(stored_before),
        "unchanged"
    );
    assert_eq!(
        sign_in_status(&app, other["email"].as_str().unwrap(), PASSWORD).await,
        StatusCode::CREATED,
        "the other user still signs in with their password"
    );
    let mine = app.get(&format!("/users/{}", me.id)).await;
    assert_eq!(mine.status, StatusCode::OK, "one's own account is there");
    let anonymous = app.send_anonymous(get(&format!("/users/{id}"))).await;
    assert_unauthenticated(&anonymous);
    app.finish().await;
}

/// An admin reads, changes and deletes any account.
#[backends(sqlite, postgres, mysql)]
async fn an_admin_reads_changes_and_deletes_any_account(backend: Backend) {
    let (app, admin) = TestApp::with_admin(backend).await;
    let user = new_account(&app, "managed").await;
    create_note(&app, Some(&user.token), &json!({"text": "theirs"})).await;

    let read = app
        .get_as(&admin.token, &format!("/users/{}", user.id))
        .await;
    let rename = json!({"name": "Renamed"});
    let renamed = patch_user(&app, Some(&admin.token), user.id, &rename).await;
    let new_email = unique_email("managed-new");
    let move_to = json!({"email": new_email});
    let moved = patch_user(&app, Some(&admin.token), user.id, &move_to).await;
    let deleted = app.send_as(&admin.token, delete_user(user.id)).await;

    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(read.json(), user.shown);
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:?}");
    assert_eq!(renamed.json()["name"], "Renamed");
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    assert_eq!(moved.json()["email"], new_email);
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert!(stored_user(&app, user.id).await.is_none());
    assert_eq!(notes_of(&app, user.id).await, 0);
    assert_signed_in(&app, &admin.token, "the admin is still signed in").await;
    app.finish().await;
}

/// `GET /users` is for admins: 403 for other users, 401 without a token.
#[backends(sqlite, postgres, mysql)]
async fn listing_users_is_for_admins_only(backend: Backend) {
    let (app, me, admin) = TestApp::signed_in_with_admin(backend).await;

    let as_user = app.get("/users").await;
    let anonymous = app.send_anonymous(get("/users")).await;
    let as_admin = app.get_as(&admin.token, "/users").await;

    assert_problem(&as_user, StatusCode::FORBIDDEN);
    assert!(
        !String::from_utf8_lossy(&as_user.body).contains(&admin.email),
        "a 403 shows no one's address: {as_user:?}"
    );
    assert_unauthenticated(&anonymous);
    assert_eq!(as_admin.status, StatusCode::OK, "{as_admin:?}");
    assert_eq!(ids(&array(&as_admin.json())), [me.id, admin.id]);
    app.finish().await;
}

/// A user who is not an admin gets 403 for sending `is_active` or `is_admin` about their own
/// account — whatever the value, whatever else the body holds — and nothing changes.
#[backends(sqlite, postgres, mysql)]
async fn only_admins_change_is_active_and_is_admin(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let before = stored_user(&app, me.id).await.unwrap();

    for body in [
        json!({"is_admin": true}),
        json!({"is_admin": false}),
        json!({"is_active": false}),
        json!({"is_active": true}),
        json!({"name": "Sneaky", "is_admin": true}),
        json!({"name": "Sneaky", "is_active": true}),
    ] {
        let reply = patch_user(&app, None, me.id, &body).await;

        assert_problem(&reply, StatusCode::FORBIDDEN);
    }
    assert_eq!(stored_user(&app, me.id).await, Some(before), "unchanged");
    assert_eq!(app.get("/users/me").await.status, StatusCode::OK);
    app.finish().await;
}

/// An admin makes a user an admin (who may then list users), deactivates them (their tokens
/// are refused and they cannot sign in) and reactivates them.
#[backends(sqlite, postgres, mysql)]
async fn admins_change_is_active_and_is_admin(backend: Backend) {
    let (app, admin) = TestApp::with_admin(backend).await;
    let user = new_account(&app, "promoted").await;
    let (app_ref, admin_token, id) = (&app, admin.token.as_str(), user.id);
    let as_admin =
        |body: Value| async move { patch_user(app_ref, Some(admin_token), id, &body).await };

    let promoted = as_admin(json!({"is_admin": true})).await;
    assert_eq!(promoted.status, StatusCode::OK, "{promoted:?}");
    assert_eq!(promoted.json()["is_admin"], true);
    assert_shows_row(&promoted.json(), &stored_user(&app, user.id).await.unwrap());
    let listed = app.get_as(&user.token, "/users").await;
    assert_eq!(listed.status, StatusCode::OK, "a new admin lists users");

    let deactivated = as_admin(json!({"is_admin": false, "is_active": false})).await;
    assert_eq!(deactivated.status, StatusCode::OK, "{deactivated:?}");
    assert_eq!(deactivated.json()["is_active"], false);
    assert_eq!(deactivated.json()["is_admin"], false);
    assert_unauthenticated(&app.get_as(&user.token, "/users/me").await);
    assert_eq!(
        sign_in_status(&app, &user.email, PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );

    let reactivated = as_admin(json!({"is_active": true})).await;
    assert_eq!(reactivated.status, StatusCode::OK, "{reactivated:?}");
    assert_eq!(reactivated.json()["is_active"], true);
    assert_eq!(
        sign_in_status(&app, &user.email, PASSWORD).await,
        StatusCode::CREATED
    );
    app.finish().await;
}

/// Changing one's own password: without `current_password` 422 naming it, with a wrong one
/// 403 (nothing changes either way), with the right one 200 — then the new password signs
/// in and the old one does not; the token that made the change stays, the others end.
#[backends(sqlite, postgres, mysql)]
async fn changing_ones_own_password_needs_the_current_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = new_account(&app, "changer").await;
    let other_session = app.sign_in(&user.email, PASSWORD).await;
    let old_hash = stored_user(&app, user.id).await.unwrap().hashed_password;
    let new_password = "a brand new secret";

    let without_current = json!({"password": new_password});
    let missing = patch_user(&app, Some(&user.token), user.id, &without_current).await;
    let with_a_wrong_one = json!({"password": new_password, "current_password": "not my password"});
    let wrong = patch_user(&app, Some(&user.token), user.id, &with_a_wrong_one).await;

    assert_eq!(invalid_fields(&missing), ["current_password"]);
    assert_problem(&wrong, StatusCode::FORBIDDEN);
    assert_eq!(
        stored_user(&app, user.id).await.unwrap().hashed_password,
        old_hash
    );
    assert_eq!(
        app.get_as(&other_session, "/users/me").await.status,
        StatusCode::OK,
        "a refused change signs no one out"
    );

    let with_the_right_one = json!({"password": new_password, "current_password": PASSWORD});
    let right = patch_user(&app, Some(&user.token), user.id, &with_the_right_one).await;

    assert_eq!(right.status, StatusCode::OK, "{right:?}");
    assert_shows_row(&right.json(), &stored_user(&app, user.id).await.unwrap());
    assert_password_changed(&app, &user.email, new_password).await;
    assert_eq!(
        app.get_as(&user.token, "/users/me").await.status,
        StatusCode::OK,
        "the token that made the change stays"
    );
    assert_unauthenticated(&app.get_as(&other_session, "/users/me").await);
    app.finish().await;
}

/// An admin sets another user's password without knowing the current one; the user signs in
/// with the new one only, and their earlier sessions end.
#[backends(sqlite, postgres, mysql)]
async fn an_admin_sets_another_users_password_without_the_current_one(backend: Backend) {
    let (app, admin) = TestApp::with_admin(backend).await;
    let user = new_account(&app, "forgetful").await;
    let new_password = "set by the admin";

    let change = json!({"password": new_password});
    let reply = patch_user(&app, Some(&admin.token), user.id, &change).await;

    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_password_changed(&app, &user.email, new_password).await;
    assert_unauthenticated(&app.get_as(&user.token, "/users/me").await);
    assert_signed_in(&app, &admin.token, "the admin's own session stays").await;
    app.finish().await;
}

/// `is_admin` is part of every user JSON: sign-up, sign-in, `/users/me`, `/users/{id}`, the
/// list.
#[backends(sqlite, postgres, mysql)]
async fn user_json_shows_is_admin(backend: Backend) {
    let (app, me, admin) = TestApp::signed_in_with_admin(backend).await;
    let body = json!({"email": admin.email, "password": PASSWORD});
    let session = app
        .send_anonymous(json_request(Method::POST, "/sessions", &body))
        .await;

    let my_view = app.get("/users/me").await.json();
    let admin_view = app.get_as(&admin.token, "/users/me").await.json();
    let admin_by_id = app
        .get_as(&admin.token, &format!("/users/{}", admin.id))
        .await;
    let listed = app.get_as(&admin.token, "/users").await.json();

    assert_eq!(my_view["is_admin"], false, "{my_view}");
    assert_shows_row(&my_view, &stored_user(&app, me.id).await.unwrap());
    assert_eq!(admin_view["is_admin"], true, "{admin_view}");
    assert_shows_row(&admin_view, &stored_user(&app, admin.id).await.unwrap());
    assert_eq!(admin_by_id.json(), admin_view);
    assert_eq!(session.status, StatusCode::CREATED, "{session:?}");
    assert_eq!(session.json()["user"], admin_view);
    assert_eq!(listed, json!([my_view, admin_view]));
    app.finish().await;
}

/// Deleting a user deletes their notes and every one of their sessions (their tokens are
/// refused at once); other users' notes and sessions stay.
#[backends(sqlite, postgres, mysql)]
async fn deleting_a_user_deletes_their_notes_and_sessions(backend: Backend) {
    let (app, bystander, admin) = TestApp::signed_in_with_admin(backend).await;
    let user = new_account(&app, "leaving").await;
    let second_token = app.sign_in(&user.email, PASSWORD).await;
    for text in ["first", "second"] {
        create_note(&app, Some(&user.token), &json!({"text": text})).await;
    }
    let kept = create_note(
        &app,
        Some(&bystander.token),
        &json!({"text": "the bystander's"}),
    )
    .await
    .json();
    assert_eq!(
        (
            notes_of(&app, user.id).await,
            sessions_of(&app, user.id).await.len()
        ),
        (2, 2)
    );

    let deleted = app.send_as(&admin.token, delete_user(user.id)).await;

    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_deleted_with_notes_and_sessions(&app, user.id, [&user.token, &second_token]).await;
    assert_eq!(app.get("/notes").await.json(), json!([kept]));
    assert_eq!(notes_of(&app, bystander.id).await, 1);
    assert!(!sessions_of(&app, bystander.id).await.is_empty());
    app.finish().await;
}
