//! `/users`: sign-up, reading, listing, profile changes and deletion, as the contract states
//! them, on every backend — through the app on the pool, over a database of each test's own.

use std::time::Duration;

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use chrono::{DateTime, Utc};
use entity::user;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tests::{Backend, TestApp, assert_problem, backends, http::json_request};

const PASSWORD: &str = "correct horse battery";

/// A distinct e-mail address, so a test's users never collide by accident.
fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

fn post_user(body: &Value) -> TestRequest {
    json_request(Method::POST, "/users", body)
}

fn patch_user(id: i64, body: &Value) -> TestRequest {
    json_request(Method::PATCH, &format!("/users/{id}"), body)
}

/// Sign up `email` and return the created user.
async fn create_user(app: &TestApp, email: &str) -> Value {
    let reply = app
        .send(post_user(&json!({"email": email, "password": PASSWORD})))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.json()
}

fn id_of(user: &Value) -> i64 {
    user["id"].as_i64().expect("a user has an integer id")
}

fn time_of(user: &Value, field: &str) -> DateTime<Utc> {
    user[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("{field} is not an RFC 3339 time: {user}"))
        .with_timezone(&Utc)
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
    let mut keys: Vec<&str> = shown
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {shown}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "email",
            "id",
            "is_active",
            "name",
            "updated_at"
        ],
        "{shown}"
    );
    assert_eq!(id_of(shown), row.id, "{shown}");
    assert_eq!(shown["email"], row.email.as_str(), "{shown}");
    assert_eq!(shown["name"], json!(row.name), "{shown}");
    assert_eq!(shown["is_active"], row.is_active, "{shown}");
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
    assert_eq!(time_of(&user, "created_at"), time_of(&user, "updated_at"));
    assert_eq!(reply.header("location"), Some(&*format!("/users/{id}")));
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
    let app = TestApp::spawn(backend).await;
    let email = unique_email("dave");
    create_user(&app, &email).await;

    let reply = app
        .send(post_user(
            &json!({"email": format!(" {} ", email.to_uppercase()), "password": PASSWORD}),
        ))
        .await;

    assert_problem(&reply, StatusCode::CONFLICT);
    let count = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .count(app.conn())
        .await
        .unwrap();
    assert_eq!(count, 1);
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
    let app = TestApp::spawn(backend).await;
    let created = create_user(&app, &unique_email("erin")).await;
    let id = id_of(&created);

    let found = app.get(&format!("/users/{id}")).await;
    let missing = app.get(&format!("/users/{}", id + 1_000_000)).await;
    let not_an_id = app.get("/users/abc").await;

    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.json(), created);
    assert_shows_row(&found.json(), &stored_user(&app, id).await.unwrap());
    assert_problem(&missing, StatusCode::NOT_FOUND);
    assert_problem(&not_an_id, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_pages_by_id_with_a_next_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for tag in ["page-a", "page-b", "page-c"] {
        ids.push(id_of(&create_user(&app, &unique_email(tag)).await));
    }
    let before_first = ids[0] - 1;

    let first = app
        .get(&format!("/users?limit=2&after={before_first}"))
        .await;

    assert_eq!(first.status, StatusCode::OK);
    let page: Vec<i64> = first.json().as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(page, ids[..2]);
    let link = first.header("link").expect("a full page links to the next");
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("unexpected Link header: {link}"));
    assert!(next.starts_with("/users?"), "{next}");

    let second = app.get(next).await;

    assert_eq!(second.status, StatusCode::OK);
    let page: Vec<i64> = second
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(page, ids[2..]);
    assert_eq!(second.header("link"), None, "a partial page is the last");
    for key in ["hashed_password", "password"] {
        assert!(second.json()[0].get(key).is_none());
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn list_rejects_bad_paging_parameters(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for query in ["limit=0", "limit=1001", "limit=x", "after=-1"] {
        let reply = app.get(&format!("/users?{query}")).await;

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
    let app = TestApp::spawn(backend).await;
    let created = create_user(&app, &unique_email("frank")).await;
    let id = id_of(&created);
    tokio::time::sleep(Duration::from_millis(5)).await;

    let reply = app
        .send(patch_user(
            id,
            &json!({"name": "Frank", "is_active": false}),
        ))
        .await;

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
    assert_eq!(app.get(&format!("/users/{id}")).await.json(), user);

    let cleared = app.send(patch_user(id, &json!({"name": null}))).await;

    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.json()["name"], Value::Null);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_rehashes_a_new_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = id_of(&create_user(&app, &unique_email("grace")).await);
    let old_hash = stored_user(&app, id).await.unwrap().hashed_password;

    let reply = app
        .send(patch_user(id, &json!({"password": "another secret"})))
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let new_hash = stored_user(&app, id).await.unwrap().hashed_password;
    assert_ne!(new_hash, old_hash);
    assert!(new_hash.starts_with("$argon2id$"), "{new_hash}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("argon2"));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_changes_the_email_normalized(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = id_of(&create_user(&app, &unique_email("heidi")).await);
    let new_email = unique_email("heidi-new");

    let reply = app
        .send(patch_user(
            id,
            &json!({"email": format!(" {} ", new_email.to_uppercase())}),
        ))
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["email"], new_email);
    assert_eq!(stored_user(&app, id).await.unwrap().email, new_email);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_rejects_an_email_taken_by_another_user_with_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let taken = unique_email("ivan");
    create_user(&app, &taken).await;
    let id = id_of(&create_user(&app, &unique_email("judy")).await);

    let reply = app
        .send(patch_user(id, &json!({"email": taken.to_uppercase()})))
        .await;

    assert_problem(&reply, StatusCode::CONFLICT);
    app.finish().await;
}

/// The explicit-transaction style: the name change and the e-mail change succeed or fail
/// together.
#[backends(sqlite, postgres, mysql)]
async fn patch_with_a_taken_email_leaves_the_name_unchanged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let taken = unique_email("mallory");
    create_user(&app, &taken).await;
    let created = create_user(&app, &unique_email("niaj")).await;
    let id = id_of(&created);

    let reply = app
        .send(patch_user(
            id,
            &json!({"name": "Changed", "is_active": false, "email": taken}),
        ))
        .await;

    assert_problem(&reply, StatusCode::CONFLICT);
    let after = app.get(&format!("/users/{id}")).await;
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
    let app = TestApp::spawn(backend).await;

    let reply = app
        .send(patch_user(999_999_999, &json!({"name": "Nobody"})))
        .await;

    assert_problem(&reply, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn patch_rejects_invalid_fields_with_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = create_user(&app, &unique_email("olivia")).await;
    let id = id_of(&created);

    for (body, field) in [
        (json!({"email": "nope"}), "email"),
        (json!({"password": "short"}), "password"),
        (json!({"password": "p".repeat(257)}), "password"),
        (json!({"is_active": "yes"}), "is_active"),
        (json!({"name": "n".repeat(201)}), "name"),
    ] {
        let reply = app.send(patch_user(id, &body)).await;

        assert_eq!(invalid_fields(&reply), [field], "{body}");
    }
    let after = app.get(&format!("/users/{id}")).await;
    assert_eq!(after.json(), created);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn delete_answers_204_then_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = id_of(&create_user(&app, &unique_email("peggy")).await);
    let delete = || TestRequest::delete().uri(&format!("/users/{id}"));

    let first = app.send(delete()).await;
    let second = app.send(delete()).await;

    assert_eq!(first.status, StatusCode::NO_CONTENT);
    assert!(first.body.is_empty());
    assert_problem(&second, StatusCode::NOT_FOUND);
    assert!(stored_user(&app, id).await.is_none());
    let reply = app.get(&format!("/users/{id}")).await;
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
    let stored = user::Entity::find()
        .filter(user::Column::Email.eq("race@example.com"))
        .count(app.conn())
        .await
        .unwrap();
    assert_eq!(stored, 1);
    server.stop().await;
    app.finish().await;
}
