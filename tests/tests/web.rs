//! The web page (`GET /`) as the server sends it: the page, its content-addressed assets, the
//! headers that keep it safe (a Content-Security-Policy of this origin alone) and cacheable,
//! and compression. The page itself is driven in a real browser by `scripts/check-web.sh`.
//!
//! The page touches no database, so one backend is enough here; every API call the page
//! makes is a contract route tested on all three.

use actix_web::{http::StatusCode, test::TestRequest};
use tests::{
    Backend, TestApp, assert_problem, backends,
    http::{Reply, assert_common_headers},
};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn text(reply: &Reply) -> String {
    String::from_utf8(reply.body.to_vec()).expect("UTF-8")
}

/// The `/assets/…` paths the page links to, in the order they appear.
fn asset_paths(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|part| part.starts_with("/assets/"))
        .map(str::to_owned)
        .collect()
}

#[backends(sqlite)]
async fn the_page_is_served_with_a_same_origin_policy_and_revalidated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let page = app.send_anonymous(TestRequest::get().uri("/")).await;
    let etag = page.header("etag").expect("an ETag").to_owned();
    let again = get_with(&app, "/", ("if-none-match", etag.as_str())).await;
    let stale = get_with(&app, "/", ("if-none-match", "\"0000\"")).await;
    let post = app.send_anonymous(TestRequest::post().uri("/")).await;

    assert_eq!(page.status, StatusCode::OK);
    assert_common_headers(&page);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let html = text(&page);
    assert!(html.contains("<title>Notes</title>"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from another origin: {html}"
    );
    assert!(!html.contains("<style") && !html.contains(" style="));
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_problem(&post, StatusCode::METHOD_NOT_ALLOWED);
    app.finish().await;
}

#[backends(sqlite)]
async fn assets_are_named_by_their_content_and_kept_for_a_year(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let html = text(&app.send_anonymous(TestRequest::get().uri("/")).await);
    let paths = asset_paths(&html);
    assert_eq!(paths.len(), 3, "icon, style and script: {paths:?}");

    for path in &paths {
        let asset = app.send_anonymous(TestRequest::get().uri(path)).await;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert_eq!(
            asset.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{path}"
        );
        assert_eq!(asset.header("content-security-policy"), Some(CSP));
        let expected_type = match path.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset {other:?}"),
        };
        assert_eq!(asset.header("content-type"), Some(expected_type));
        assert!(!asset.body.is_empty());
        // Another digest under the same stem is not served: an old page never gets new code
        // under an old name.
        let (stem, rest) = path.split_once('.').unwrap();
        let (_, extension) = rest.split_once('.').unwrap();
        let wrong = format!("{stem}.0123456789abcdef.{extension}");
        let missing = app.send_anonymous(TestRequest::get().uri(&wrong)).await;
        assert_problem(&missing, StatusCode::NOT_FOUND);
    }
    let script = paths.iter().find(|p| p.ends_with(".js")).unwrap();
    let source = text(&app.send_anonymous(TestRequest::get().uri(script)).await);
    assert!(
        !source.contains("innerHTML") && !source.contains("eval("),
        "the script writes text, never HTML or code"
    );
    app.finish().await;
}

#[backends(sqlite)]
async fn the_page_and_its_assets_are_compressed_for_browsers_that_accept_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let plain = app.send_anonymous(TestRequest::get().uri("/")).await;
    let mut paths = vec!["/".to_owned()];
    paths.extend(asset_paths(&text(&plain)));

    for path in &paths {
        let raw = app.send_anonymous(TestRequest::get().uri(path)).await;
        let gzipped = app
            .send_anonymous(
                TestRequest::get()
                    .uri(path)
                    .insert_header(("accept-encoding", "gzip")),
            )
            .await;
        assert_eq!(raw.header("content-encoding"), None, "{path}");
        assert_eq!(gzipped.status, StatusCode::OK, "{path}");
        assert_eq!(gzipped.header("content-encoding"), Some("gzip"), "{path}");
        assert!(
            gzipped.body.len() < raw.body.len(),
            "{path}: {} gzipped vs {} raw",
            gzipped.body.len(),
            raw.body.len()
        );
        assert_eq!(gzipped.body[..2], [0x1f, 0x8b], "{path}: a gzip stream");
    }
    // The JSON API is not compressed: its answers are small and its latency counts.
    let health = get_with(&app, "/healthz", ("accept-encoding", "gzip")).await;
    assert_eq!(health.header("content-encoding"), None);
    app.finish().await;
}

/// `GET uri` with one request header, anonymously.
async fn get_with(app: &TestApp, uri: &str, header: (&str, &str)) -> Reply {
    app.send_anonymous(TestRequest::get().uri(uri).insert_header(header))
        .await
}
