//! Recovering an account by mail, on every backend, with a real SMTP conversation: the
//! verification link sign-up sends, password resets, changing one's address, the mail queue's
//! transaction rule, and the worker's retries, give-ups, leases and claims across instances.

use std::time::Duration;

use actix_web::{http::StatusCode, test::TestRequest};
use entity::job;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tests::{
    Backend, SignedIn, TestApp, assert_problem, backends,
    fixtures::patch_user,
    http::Reply,
    smtp::{Mode, Received, SmtpReceiver},
};

const PUBLIC_URL: &str = "http://notes.test:8080";
/// Long enough for the worker (woken by the request) to hand a mail over.
const MAIL_WAIT: Duration = Duration::from_secs(10);

/// The app with its job worker delivering to a fresh SMTP receiver.
async fn app_with_mail(backend: Backend, overrides: &[(&str, &str)]) -> (TestApp, SmtpReceiver) {
    let smtp = SmtpReceiver::start().await;
    let mut settings = vec![("PUBLIC_URL", PUBLIC_URL)];
    settings.extend_from_slice(overrides);
    let mut app = TestApp::with_settings(backend, &settings).await;
    app.start_jobs(Some(&smtp.url()));
    (app, smtp)
}

async fn post_anonymous(app: &TestApp, path: &str, body: Value) -> Reply {
    app.send_anonymous(TestRequest::post().uri(path).set_json(body))
        .await
}

/// The token of the link in `mail` after `{PUBLIC_URL}/#{fragment}=`.
fn token_in(mail: &Received, fragment: &str) -> String {
    let body = mail.body();
    let start = format!("{PUBLIC_URL}/#{fragment}=");
    let at = body
        .find(&start)
        .unwrap_or_else(|| panic!("no {start} link in {body:?}"))
        + start.len();
    body[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// The `count`-th mail to `to` (1-based), waiting for it.
async fn nth_mail_to(smtp: &SmtpReceiver, to: &str, count: usize) -> Received {
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let mails: Vec<Received> = smtp
            .received()
            .into_iter()
            .filter(|mail| mail.to.iter().any(|rcpt| rcpt == to))
            .collect();
        if mails.len() >= count {
            return mails[count - 1].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mail #{count} to {to} within {MAIL_WAIT:?}: {:?}",
            smtp.received().iter().map(|m| &m.to).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn me(app: &TestApp, user: &SignedIn) -> Value {
    let reply = app.get_as(&user.token, "/users/me").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.json()
}

async fn jobs_of_kind(app: &TestApp, kind: &str) -> u64 {
    job::Entity::find()
        .filter(job::Column::Kind.eq(kind))
        .count(app.conn())
        .await
        .unwrap()
}

#[backends(sqlite, postgres, mysql)]
async fn sign_up_mails_a_link_that_verifies_the_address_once(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, &[]).await;
    let user = app.sign_up_and_in("verify").await;
    assert_eq!(me(&app, &user).await["email_verified"], false);
    let mail = nth_mail_to(&smtp, &user.email, 1).await;
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your e-mail address")
    );
    assert!(mail.header("Date").is_some(), "{}", mail.data);
    assert!(mail.header("Message-ID").is_some(), "{}", mail.data);
    assert_eq!(mail.header("To").as_deref(), Some(user.email.as_str()));
    let token = token_in(&mail, "verify-email");
    assert!(token.len() >= 32, "at least 128 bits: {token}");

    let used = post_anonymous(
        &app,
        "/email-verifications/confirm",
        json!({"token": token}),
    )
    .await;
    assert_eq!(used.status, StatusCode::NO_CONTENT, "{used:?}");
    assert_eq!(me(&app, &user).await["email_verified"], true);

    let again = post_anonymous(
        &app,
        "/email-verifications/confirm",
        json!({"token": token}),
    )
    .await;
    let unknown = post_anonymous(
        &app,
        "/email-verifications/confirm",
        json!({"token": "f00d"}),
    )
    .await;
    assert_eq!(
        assert_problem(&again, StatusCode::BAD_REQUEST),
        assert_problem(&unknown, StatusCode::BAD_REQUEST),
        "a used and an unknown token get one answer"
    );
    let missing = post_anonymous(&app, "/email-verifications/confirm", json!({})).await;
    assert_problem(&missing, StatusCode::UNPROCESSABLE_ENTITY);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_reset_link_sets_the_password_once_and_ends_every_session(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, &[]).await;
    let user = app.sign_up_and_in("reset").await;
    let other_session = app.sign_in(&user.email, &user.password).await;

    let known = post_anonymous(&app, "/password-resets", json!({"email": user.email})).await;
    let unknown = post_anonymous(
        &app,
        "/password-resets",
        json!({"email": "nobody-here@example.com"}),
    )
    .await;
    assert_eq!(known.status, StatusCode::ACCEPTED, "{known:?}");
    assert_eq!(unknown.status, StatusCode::ACCEPTED);
    assert_eq!(known.body, unknown.body, "the same body either way");
    let mail = nth_mail_to(&smtp, &user.email, 2).await;
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Reset your password")
    );
    let token = token_in(&mail, "reset-password");

    let weak = post_anonymous(
        &app,
        "/password-resets/confirm",
        json!({"token": token, "password": "short"}),
    )
    .await;
    let problem = assert_problem(&weak, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "password");

    let new_password = "a brand new passphrase";
    let reset = post_anonymous(
        &app,
        "/password-resets/confirm",
        json!({"token": token, "password": new_password}),
    )
    .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{reset:?}");
    for token in [&user.token, &other_session] {
        let reply = app.get_as(token, "/users/me").await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "every session ended"
        );
    }
    let old = app
        .send_anonymous(
            TestRequest::post()
                .uri("/sessions")
                .set_json(json!({"email": user.email, "password": user.password})),
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    app.sign_in(&user.email, new_password).await;

    let reused = post_anonymous(
        &app,
        "/password-resets/confirm",
        json!({"token": token, "password": "yet another passphrase"}),
    )
    .await;
    assert_problem(&reused, StatusCode::BAD_REQUEST);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_newer_reset_voids_older_links_and_links_expire(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, &[("PASSWORD_RESET_TTL_S", "2")]).await;
    let user = app.sign_up_and_in("twice").await;
    for _ in 0..2 {
        let reply = post_anonymous(&app, "/password-resets", json!({"email": user.email})).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let first = token_in(&nth_mail_to(&smtp, &user.email, 2).await, "reset-password");
    let second = token_in(&nth_mail_to(&smtp, &user.email, 3).await, "reset-password");
    let confirm = async |token: &str| {
        post_anonymous(
            &app,
            "/password-resets/confirm",
            json!({"token": token, "password": "a brand new passphrase"}),
        )
        .await
    };
    assert_problem(&confirm(&first).await, StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_problem(&confirm(&second).await, StatusCode::BAD_REQUEST);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn an_inactive_account_gets_no_reset_mail(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, &[]).await;
    let admin = app.admin().await;
    let user = app.sign_up_and_in("inactive").await;
    nth_mail_to(&smtp, &user.email, 1).await;
    let reply = patch_user(
        &app,
        Some(&admin.token),
        user.id,
        &json!({"is_active": false}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let queued = jobs_of_kind(&app, "mail").await;
    let reply = post_anonymous(&app, "/password-resets", json!({"email": user.email})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(jobs_of_kind(&app, "mail").await, queued, "no reset mail");
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn reset_requests_are_throttled_whether_or_not_the_address_exists(backend: Backend) {
    let (app, _smtp) = app_with_mail(backend, &[("SIGNIN_MAX_FAILURES", "2")]).await;
    let user = app.sign_up_and_in("flood").await;
    let malformed = post_anonymous(
        &app,
        "/password-resets",
        json!({"email": "not\u{12}an address"}),
    )
    .await;
    let problem = assert_problem(&malformed, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
    for email in [user.email.as_str(), "nobody-here@example.com"] {
        for _ in 0..2 {
            let reply = post_anonymous(&app, "/password-resets", json!({"email": email})).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED);
        }
        let reply = post_anonymous(&app, "/password-resets", json!({"email": email})).await;
        assert_problem(&reply, StatusCode::TOO_MANY_REQUESTS);
        assert!(reply.header("retry-after").is_some());
    }
    assert_eq!(
        jobs_of_kind(&app, "mail").await,
        3,
        "one sign-up mail and two resets, no flood"
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn verification_mails_on_request_are_throttled(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, &[("SIGNIN_MAX_FAILURES", "2")]).await;
    let user = app.sign_up_and_in("again").await;
    for _ in 0..2 {
        let reply = app
            .send_as(&user.token, TestRequest::post().uri("/email-verifications"))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    }
    let reply = app
        .send_as(&user.token, TestRequest::post().uri("/email-verifications"))
        .await;
    assert_problem(&reply, StatusCode::TOO_MANY_REQUESTS);
    let newest = token_in(&nth_mail_to(&smtp, &user.email, 3).await, "verify-email");
    let oldest = token_in(&nth_mail_to(&smtp, &user.email, 1).await, "verify-email");
    let void = post_anonymous(
        &app,
        "/email-verifications/confirm",
        json!({"token": oldest}),
    )
    .await;
    assert_problem(&void, StatusCode::BAD_REQUEST);
    let used = post_anonymous(
        &app,
        "/email-verifications/confirm",
        json!({"token": newest}),
    )
    .await;
    assert_eq!(used.status, StatusCode::NO_CONTENT);
    let anonymous = post_anonymous(&app, "/email-verifications", json!({})).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_new_address_needs_the_password_and_is_verified_anew(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, &[]).await;
    let user = app.sign_up_and_in("moving").await;
    let first = token_in(&nth_mail_to(&smtp, &user.email, 1).await, "verify-email");
    let verified = post_anonymous(
        &app,
        "/email-verifications/confirm",
        json!({"token": first}),
    )
    .await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT);
    let new_email = tests::unique_email("moved");

    let token = Some(user.token.as_str());
    let missing = patch_user(&app, token, user.id, &json!({"email": new_email})).await;
    let problem = assert_problem(&missing, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "current_password");
    let wrong = patch_user(
        &app,
        token,
        user.id,
        &json!({"email": new_email, "current_password": "not my password"}),
    )
    .await;
    assert_problem(&wrong, StatusCode::FORBIDDEN);
    let same = patch_user(&app, token, user.id, &json!({"email": user.email})).await;
    assert_eq!(same.status, StatusCode::OK, "the same address is no change");

    let moved = patch_user(
        &app,
        token,
        user.id,
        &json!({"email": new_email, "current_password": user.password}),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    assert_eq!(moved.json()["email_verified"], false);
    let notice = nth_mail_to(&smtp, &user.email, 2).await;
    assert_eq!(
        notice.header("Subject").as_deref(),
        Some("Your e-mail address was changed")
    );
    let token = token_in(&nth_mail_to(&smtp, &new_email, 1).await, "verify-email");
    let used = post_anonymous(
        &app,
        "/email-verifications/confirm",
        json!({"token": token}),
    )
    .await;
    assert_eq!(used.status, StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &user).await["email_verified"], true);
    app.finish().await;
}

/// A change that rolls back queues no mail: a sign-up or an address change refused with 409.
#[backends(sqlite, postgres, mysql)]
async fn a_refused_change_leaves_no_mail_behind(backend: Backend) {
    let (app, _smtp) = app_with_mail(backend, &[]).await;
    let user = app.sign_up_and_in("first").await;
    let other = app.sign_up_and_in("second").await;
    let queued = jobs_of_kind(&app, "mail").await;
    let taken = post_anonymous(
        &app,
        "/users",
        json!({"email": user.email, "password": "another passphrase"}),
    )
    .await;
    assert_problem(&taken, StatusCode::CONFLICT);
    let moved = patch_user(
        &app,
        Some(&other.token),
        other.id,
        &json!({"email": user.email, "current_password": other.password}),
    )
    .await;
    assert_problem(&moved, StatusCode::CONFLICT);
    assert_eq!(jobs_of_kind(&app, "mail").await, queued);
    app.finish().await;
}

/// A mail job as a request queues it, but written by the test (due now).
async fn queue_test_mail(app: &TestApp, to: &str) -> i64 {
    let payload = json!({"to": to, "subject": "A test", "body": "Hello.\n"}).to_string();
    job::Entity::insert(job::new("mail", payload, entity::now()))
        .exec(app.conn())
        .await
        .unwrap()
        .last_insert_id
}

async fn job_row(app: &TestApp, id: i64) -> job::Model {
    job::Entity::find_by_id(id)
        .one(app.conn())
        .await
        .unwrap()
        .unwrap()
}

/// Wait until job `id` satisfies `done`.
async fn wait_for_job(app: &TestApp, id: i64, done: impl Fn(&job::Model) -> bool) -> job::Model {
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let row = job_row(app, id).await;
        if done(&row) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} stuck: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[backends(sqlite, postgres, mysql)]
async fn the_worker_retries_a_refused_mail_and_gives_up_on_a_permanent_refusal(backend: Backend) {
    let (app, smtp) = app_with_mail(backend, &[]).await;
    smtp.set_mode(Mode::RefuseTemporarily);
    let id = queue_test_mail(&app, "later@example.com").await;
    let waiting = wait_for_job(&app, id, |job| job.last_error.is_some()).await;
    assert_eq!(waiting.state, "pending");
    assert_eq!(waiting.attempts, 1);
    assert!(waiting.run_at > entity::now(), "retried later: {waiting:?}");
    // Due again now rather than in 5 s; the server accepts this time.
    smtp.set_mode(Mode::Accept);
    job::Entity::update(job::ActiveModel {
        id: Set(id),
        run_at: Set(entity::now()),
        ..Default::default()
    })
    .exec(app.conn())
    .await
    .unwrap();
    app.state().jobs.now();
    let sent = wait_for_job(&app, id, |job| job.state == "done").await;
    assert_eq!(sent.attempts, 2);
    assert_eq!(smtp.received().len(), 1);

    smtp.set_mode(Mode::RefusePermanently);
    let id = queue_test_mail(&app, "never@example.com").await;
    app.state().jobs.now();
    let failed = wait_for_job(&app, id, |job| job.state == "failed").await;
    assert_eq!(failed.attempts, 1, "a permanent refusal is not retried");
    assert!(failed.last_error.is_some());
    assert!(failed.finished_at.is_some());
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_job_whose_lease_passed_is_claimed_again_and_a_live_one_is_not(backend: Backend) {
    let (mut app, smtp) = app_with_mail(backend, &[]).await;
    app.stop_jobs().await;
    let past = queue_test_mail(&app, "orphan@example.com").await;
    let held = queue_test_mail(&app, "held@example.com").await;
    for (id, until) in [
        (past, entity::now() - chrono::Duration::seconds(1)),
        (held, entity::now() + chrono::Duration::seconds(60)),
    ] {
        job::Entity::update(job::ActiveModel {
            id: Set(id),
            locked_until: Set(Some(until)),
            locked_by: Set(Some("a dead instance".to_owned())),
            attempts: Set(1),
            ..Default::default()
        })
        .exec(app.conn())
        .await
        .unwrap();
    }
    app.start_jobs(Some(&smtp.url()));
    let sent = wait_for_job(&app, past, |job| job.state == "done").await;
    assert_eq!(sent.attempts, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job_row(&app, held).await.state, "pending");
    let to: Vec<Vec<String>> = smtp.received().into_iter().map(|m| m.to).collect();
    assert_eq!(to, [vec!["orphan@example.com".to_owned()]]);
    app.finish().await;
}

/// Two instances' workers on one queue: every mail is sent, each once.
#[backends(sqlite, postgres, mysql)]
async fn two_workers_send_each_mail_once(backend: Backend) {
    let (mut app, smtp) = app_with_mail(backend, &[]).await;
    app.start_jobs(Some(&smtp.url()));
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(queue_test_mail(&app, &format!("many-{n}@example.com")).await);
    }
    app.state().jobs.now();
    let mails = smtp.wait_for(30, MAIL_WAIT).await;
    let mut to: Vec<String> = mails.into_iter().flat_map(|m| m.to).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 30);
    for id in ids {
        wait_for_job(&app, id, |job| job.state == "done").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.received().len(), 30, "none sent twice");
    app.finish().await;
}

#[backends(sqlite)]
async fn without_smtp_mail_is_written_as_eml_files(backend: Backend) {
    let dir = std::env::temp_dir().join(format!("notes-mail-{}", uuid::Uuid::new_v4()));
    let dir_setting = dir.to_string_lossy().into_owned();
    let mut app = TestApp::with_settings(
        backend,
        &[("PUBLIC_URL", PUBLIC_URL), ("MAIL_DIR", &dir_setting)],
    )
    .await;
    app.start_jobs(None);
    let user = app.sign_up_and_in("files").await;
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    let file = loop {
        let files: Vec<_> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(file) = files.into_iter().next() {
            break file;
        }
        assert!(tokio::time::Instant::now() < deadline, "no .eml in {dir:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("To: {}", user.email)), "{text}");
    assert!(text.contains("Message-ID:"), "{text}");
    assert!(text.contains("Date:"), "{text}");
    app.finish().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The purge of expired rows is one recurring job: the first worker queues it, runs it, and
/// it comes back ten minutes later.
#[backends(sqlite, postgres, mysql)]
async fn the_purge_is_a_recurring_job_a_worker_runs(backend: Backend) {
    let smtp = SmtpReceiver::start().await;
    let mut app = TestApp::spawn(backend).await;
    let user = app.sign_up_and_in("purged").await;
    let now = entity::now();
    entity::session::Entity::insert(entity::session::ActiveModel {
        user_id: Set(user.id),
        token_digest: Set("0".repeat(64)),
        created_at: Set(now - chrono::Duration::days(30)),
        expires_at: Set(now - chrono::Duration::seconds(1)),
        ..Default::default()
    })
    .exec(app.conn())
    .await
    .unwrap();
    app.start_jobs(Some(&smtp.url()));
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    let purge = loop {
        let found = job::Entity::find()
            .filter(job::Column::UniqueKey.eq("purge"))
            .one(app.conn())
            .await
            .unwrap();
        if let Some(purge) = found
            && purge.run_at > now + chrono::Duration::minutes(9)
        {
            break purge;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((purge.state.as_str(), purge.attempts), ("pending", 0));
    let expired = entity::session::Entity::find()
        .filter(entity::session::Column::TokenDigest.eq("0".repeat(64)))
        .count(app.conn())
        .await
        .unwrap();
    assert_eq!(expired, 0, "the expired session is gone");
    let reply = app.get_as(&user.token, "/users/me").await;
    assert_eq!(reply.status, StatusCode::OK, "the live session stays");
    app.finish().await;
}
