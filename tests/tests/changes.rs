//! The change log (`GET /notes/changes`) on every backend: each write numbered in order with
//! the note as it left it, tombstones, pages, scoping, bad input, the purge's horizon (410),
//! the transaction rule — and the order guarantee under concurrent writers on two instances.

use std::time::Duration;

use actix_web::{http::Method, http::StatusCode, test::TestRequest};
use entity::{change_counter, note, note_change};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
    sea_query::Expr,
};
use serde_json::{Value, json};
use tests::{
    Backend, TestApp, assert_problem, backends,
    fixtures::{create_note, id_of, note_body},
    http::{self, Reply},
};

/// `GET /notes/changes?<query>` as the app's user: the 200's body.
async fn changes(app: &TestApp, query: &str) -> Value {
    let reply = app.get(&format!("/notes/changes?{query}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {reply:?}");
    reply.json()
}

/// The `(seq, id, deleted, text)` of each change of a page.
fn summary(page: &Value) -> Vec<(i64, i64, bool, Option<String>)> {
    page["changes"]
        .as_array()
        .expect("changes is an array")
        .iter()
        .map(|change| {
            (
                change["seq"].as_i64().unwrap(),
                change["id"].as_i64().unwrap(),
                change["deleted"].as_bool().unwrap(),
                change["note"]["text"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[backends(sqlite, postgres, mysql)]
async fn every_write_is_logged_in_order_with_the_note_as_it_left_it(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let a = id_of(
        &create_note(&app, None, &note_body("one", false))
            .await
            .json(),
    );
    let b = id_of(
        &create_note(&app, None, &note_body("two", false))
            .await
            .json(),
    );
    let edited = app
        .patch_json(
            &format!("/notes/{a}"),
            &json!({"text": "one, edited", "completed": true}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{edited:?}");
    let bulk = app
        .post_json("/notes/bulk", &json!([{"text": "three"}, {"text": "four"}]))
        .await;
    assert_eq!(bulk.status, StatusCode::CREATED, "{bulk:?}");
    let bulk_ids: Vec<i64> = bulk.json().as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(
        app.delete(&format!("/notes/{b}")).await.status,
        StatusCode::NO_CONTENT
    );

    let page = changes(&app, "since=0").await;

    assert_eq!(
        summary(&page),
        vec![
            (1, a, false, Some("one".into())),
            (2, b, false, Some("two".into())),
            (3, a, false, Some("one, edited".into())),
            (4, bulk_ids[0], false, Some("three".into())),
            (5, bulk_ids[1], false, Some("four".into())),
            (6, b, true, None),
        ]
    );
    assert_eq!(page["next"], 6);
    assert_eq!(page["more"], false);
    let change = &page["changes"][2];
    assert_eq!(change["note"], app.get(&format!("/notes/{a}")).await.json());
    assert_eq!(change["note"]["user_id"], user.id);
    assert!(page["changes"][5]["note"].is_null(), "{page}");
    assert_eq!(
        changes(&app, "").await,
        page,
        "since defaults to 0, from the oldest kept"
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn pages_follow_next_until_no_more(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    for i in 0..5 {
        create_note(&app, None, &note_body(&format!("note {i}"), false)).await;
    }

    let first = changes(&app, "since=0&limit=2").await;
    let second = changes(&app, "since=2&limit=2").await;
    let last = changes(&app, "since=4&limit=2").await;
    let beyond = changes(&app, "since=40&limit=2").await;

    let seqs = |page: &Value| -> Vec<i64> { summary(page).iter().map(|c| c.0).collect() };
    assert_eq!(
        (seqs(&first), &first["next"], &first["more"]),
        (vec![1, 2], &json!(2), &json!(true))
    );
    assert_eq!(
        (seqs(&second), &second["next"], &second["more"]),
        (vec![3, 4], &json!(4), &json!(true))
    );
    assert_eq!(
        (seqs(&last), &last["next"], &last["more"]),
        (vec![5], &json!(5), &json!(false))
    );
    assert_eq!(beyond, json!({"changes": [], "next": 40, "more": false}));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn each_user_sees_only_their_own_changes_numbered_from_one(backend: Backend) {
    let (app, _alice, bob) = TestApp::alice_and_bob(backend).await;
    create_note(&app, None, &note_body("alice's", false)).await;
    create_note(&app, None, &note_body("alice's second", false)).await;
    let bobs = id_of(
        &create_note(&app, Some(&bob.token), &note_body("bob's", false))
            .await
            .json(),
    );

    let alices = changes(&app, "since=0").await;
    let reply = app.get_as(&bob.token, "/notes/changes?since=0").await;

    assert_eq!(summary(&alices).len(), 2);
    assert!(!alices.to_string().contains("bob's"), "{alices}");
    assert_eq!(
        summary(&reply.json()),
        vec![(1, bobs, false, Some("bob's".into()))]
    );
    let anonymous = app
        .send_anonymous(TestRequest::get().uri("/notes/changes"))
        .await;
    assert_problem(&anonymous, StatusCode::UNAUTHORIZED);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_bad_since_or_limit_is_422_naming_it(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    for (query, field) in [
        ("since=-1", "since"),
        ("since=abc", "since"),
        ("since=1.5", "since"),
        ("since=", "since"),
        ("since=99999999999999999999999", "since"),
        ("since=9223372036854775808", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
    ] {
        let reply = app.get(&format!("/notes/changes?{query}")).await;
        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let page = changes(&app, "since=9223372036854775807&limit=1000").await;
    assert_eq!(page["changes"], json!([]));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn the_database_logs_every_writer_and_nothing_that_rolled_back(backend: Backend) {
    let (app, user) = TestApp::signed_in(backend).await;
    let new_note = |text: &str| note::ActiveModel {
        user_id: Set(user.id),
        text: Set(text.to_owned()),
        completed: Set(false),
        ..Default::default()
    };
    // Another program writing through `entity` alone: its change is logged too.
    let kept = new_note("written by another program")
        .insert(app.conn())
        .await
        .unwrap();
    let txn = app.conn().begin().await.unwrap();
    new_note("rolled back").insert(&txn).await.unwrap();
    txn.rollback().await.unwrap();
    let refused = app
        .post_json("/notes/bulk", &json!([{"text": "fine"}, {"text": ""}]))
        .await;
    assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);

    let page = changes(&app, "since=0").await;

    assert_eq!(
        summary(&page),
        vec![(1, kept.id, false, Some("written by another program".into()))]
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn changes_past_their_retention_are_purged_and_older_positions_are_410(backend: Backend) {
    let (mut app, user) = TestApp::signed_in(backend).await;
    for text in ["old", "old too", "recent"] {
        create_note(&app, None, &note_body(text, false)).await;
    }
    let long_ago = entity::now() - chrono::Duration::days(31);
    note_change::Entity::update_many()
        .col_expr(note_change::Column::ChangedAt, Expr::value(long_ago))
        .filter(note_change::Column::UserId.eq(user.id))
        .filter(note_change::Column::Seq.lte(2))
        .exec(app.conn())
        .await
        .unwrap();

    app.start_jobs(None); // a worker starts by queueing the purge, due at once
    let mut kept_after = 0;
    for _ in 0..100 {
        kept_after = change_counter::Entity::find_by_id(user.id)
            .one(app.conn())
            .await
            .unwrap()
            .expect("the user's counter")
            .kept_after;
        if kept_after == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop_jobs().await;

    assert_eq!(kept_after, 2, "the purge raised the horizon");
    let gone = app.get("/notes/changes?since=1").await;
    let problem = assert_problem(&gone, StatusCode::GONE);
    assert!(
        problem["detail"].as_str().unwrap().contains("since=0"),
        "{problem}"
    );
    let recent = |page: Value| summary(&page).into_iter().map(|c| c.0).collect::<Vec<_>>();
    assert_eq!(recent(changes(&app, "since=0").await), vec![3]);
    assert_eq!(recent(changes(&app, "since=2").await), vec![3]);
    let rows = note_change::Entity::find()
        .filter(note_change::Column::UserId.eq(user.id))
        .all(app.conn())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the old rows are deleted");
    app.finish().await;
}

/// `POST /notes` as `token` through `instance` (the app, or another instance of it).
fn create_request(token: &str, text: &str) -> TestRequest {
    http::json_request(Method::POST, "/notes", &note_body(text, false))
        .insert_header(("authorization", format!("Bearer {token}")))
}

#[backends(sqlite, postgres, mysql)]
async fn a_reader_following_the_log_meets_every_change_once_in_order(backend: Backend) {
    const WRITERS: usize = 8;
    const EACH: usize = 500;
    let (app, user) = TestApp::signed_in(backend).await;
    let other = app.other_instance().await;
    let done = std::sync::atomic::AtomicUsize::new(0);

    let writers = (0..WRITERS).map(|w| {
        let (app, other, done, token) = (&app, &other, &done, user.token.clone());
        async move {
            for i in 0..EACH {
                let request = create_request(&token, &format!("writer {w} note {i}"));
                let reply: Reply = if (w + i) % 2 == 0 {
                    app.send(request).await
                } else {
                    other.send(request).await
                };
                assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let reader = async {
        let mut seen = Vec::new();
        let mut since = 0;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS;
            let page = changes(&app, &format!("since={since}&limit=1000")).await;
            seen.extend(summary(&page).into_iter().map(|c| c.0));
            since = page["next"].as_i64().unwrap();
            if finished && page["more"] == false {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    };
    let (_, seen) = tokio::join!(futures_util::future::join_all(writers), reader);

    let total = (WRITERS * EACH) as i64;
    let expected: Vec<i64> = (1..=total).collect();
    if seen != expected {
        let gaps: Vec<_> = seen
            .windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .take(5)
            .collect();
        panic!(
            "the reader saw {} changes (expected {total}), first gaps or repeats: {gaps:?}",
            seen.len()
        );
    }
    app.finish().await;
}
