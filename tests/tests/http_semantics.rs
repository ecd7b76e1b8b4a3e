//! HTTP semantics every route shares: `HEAD` on every `GET` route, a `PATCH` that changes
//! nothing writes nothing, and an OpenAPI document whose operations a generator can name.

use std::{collections::BTreeSet, time::Duration};

use actix_web::http::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{
    Backend, TestApp, backends,
    fixtures::{client, create_note, openapi_document, operations, signed_in_with_note},
};

/// Every `GET` path the app serves, with `{id}` to fill in.
const GET_PATHS: [&str; 14] = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/notes",
    "/notes/{note}",
    "/notes/changes",
    "/notes/events",
    "/notes/export",
    "/users",
    "/users/me",
    "/users/{user}",
];

#[backends(sqlite, postgres, mysql)]
async fn every_get_route_answers_head_with_its_status_and_headers_and_no_body(backend: Backend) {
    let (app, admin) = TestApp::with_admin(backend).await;
    let note = create_note(&app, Some(&admin.token), &json!({"text": "head"}))
        .await
        .json();
    let document = openapi_document(&app).await;
    let server = app.serve().await;
    let client = client(Duration::from_secs(10));

    let documented: BTreeSet<String> = operations(&document)
        .iter()
        .filter(|operation| operation.method == "GET")
        .map(|operation| operation.path.replace("{id}", "{…}"))
        .collect();
    let listed: BTreeSet<String> = GET_PATHS
        .iter()
        .map(|p| p.replace("{note}", "{…}").replace("{user}", "{…}"))
        .collect();
    assert_eq!(documented, listed, "every documented GET route is checked");

    for path in GET_PATHS {
        let uri = path
            .replace("{note}", &note["id"].to_string())
            .replace("{user}", &admin.id.to_string());
        let url = server.url(&uri);
        let auth = format!("Bearer {}", admin.token);
        let send = async |method: Method| {
            let stream = method == Method::GET && path == "/notes/events";
            let mut reply = client
                .request(method, &url)
                .insert_header(("authorization", auth.as_str()))
                .send()
                .await
                .unwrap();
            let body = if stream {
                // A stream does not end: its first chunk (a comment) is its body here.
                let first = futures_util::StreamExt::next(&mut reply).await;
                first.expect("a first chunk").unwrap()
            } else {
                reply.body().limit(64 << 20).await.unwrap()
            };
            (reply, body)
        };
        let (get, get_body) = send(Method::GET).await;
        let (head, head_body) = send(Method::HEAD).await;

        assert_eq!(get.status(), StatusCode::OK, "GET {uri}");
        assert_eq!(head.status(), get.status(), "HEAD {uri}");
        assert!(head_body.is_empty(), "HEAD {uri} sent a body");
        assert!(!get_body.is_empty(), "GET {uri} sent no body");
        for header in ["content-type", "etag", "cache-control"] {
            assert_eq!(
                head.headers().get(header),
                get.headers().get(header),
                "{header} of HEAD {uri}"
            );
        }
    }
    server.stop().await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_note_patch_that_changes_nothing_keeps_its_tag_and_time(backend: Backend) {
    let body = json!({"text": "same", "completed": true});
    let (app, created, path) = signed_in_with_note(backend, &body).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let empty = app.patch_json(&path, &json!({})).await;
    let same = app.patch_json(&path, &body).await;
    let changed = app.patch_json(&path, &json!({"completed": false})).await;

    for reply in [&empty, &same] {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("etag"), created.header("etag"));
        assert_eq!(reply.json()["updated_at"], created.json()["updated_at"]);
    }
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.header("etag"), created.header("etag"));
    assert_ne!(changed.json()["updated_at"], created.json()["updated_at"]);
    let stored = app.get(&path).await;
    assert_eq!(stored.header("etag"), changed.header("etag"));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_user_patch_that_changes_nothing_keeps_its_tag_and_time(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let path = format!("/users/{}", me.id);
    let before = app.get(&path).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let same = app
        .patch_json(&path, &json!({"email": me.email.to_uppercase()}))
        .await;
    let empty = app.patch_json(&path, &json!({})).await;
    let renamed = app.patch_json(&path, &json!({"name": "Ada"})).await;

    for reply in [&same, &empty] {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.header("etag"), before.header("etag"));
        assert_eq!(reply.json()["updated_at"], before.json()["updated_at"]);
    }
    assert_eq!(renamed.status, StatusCode::OK);
    assert_ne!(renamed.header("etag"), before.header("etag"));
    assert_eq!(renamed.json()["name"], "Ada");
    app.finish().await;
}

#[backends(sqlite)]
async fn every_operation_id_is_unique(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document = openapi_document(&app).await;
    let ids: Vec<Value> = operations(&document)
        .into_iter()
        .map(|operation| operation.operation["operationId"].clone())
        .collect();
    let unique: BTreeSet<String> = ids.iter().map(Value::to_string).collect();
    assert!(ids.iter().all(Value::is_string), "{ids:?}");
    assert_eq!(unique.len(), ids.len(), "operationIds repeat: {ids:?}");
    app.finish().await;
}
