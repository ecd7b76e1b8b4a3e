//! What the test files share beyond the app itself: reading the JSON the app answers, making
//! notes, looking at the rows and at the pool, real HTTP, waiting with a deadline, the
//! OpenAPI document's operations, and the workspace's binaries.
//!
//! One helper, one place: a test file that needs a variation passes it as an argument
//! rather than declaring its own copy.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use actix_web::http::{Method, StatusCode, header::HeaderMap};
use chrono::{DateTime, Utc};
use entity::{note, session, user};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, TransactionTrait, sea_query::IntoCondition,
};
use serde_json::Value;

use crate::{Backend, Reply, TestApp, TestDb, assert_problem, http};

// ---------------------------------------------------------------------------------------
// The JSON the app answers

/// The integer `id` of a note, a user, a session's user… (panics with the value when absent).
pub fn id_of(value: &Value) -> i64 {
    value["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer id: {value}"))
}

/// The ids of `values`, in order.
pub fn ids(values: &[Value]) -> Vec<i64> {
    values.iter().map(id_of).collect()
}

/// The items of a JSON array (panics with the value when it is not one).
pub fn array(value: &Value) -> Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .clone()
}

/// The keys of a JSON object, sorted (panics with the value when it is not an object).
pub fn sorted_keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort_unstable();
    keys
}

/// The time in `field` of `value`: an RFC 3339 string written in UTC (`…Z`), as the contract
/// writes every time.
pub fn time_of(value: &Value, field: &str) -> DateTime<Utc> {
    let raw = value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string: {value}"));
    assert!(raw.ends_with('Z'), "{field} is not written in UTC: {raw}");
    DateTime::parse_from_rfc3339(raw)
        .unwrap_or_else(|e| panic!("{field} is not RFC 3339 ({e}): {raw}"))
        .with_timezone(&Utc)
}

/// The notes of an NDJSON export, one JSON value per line, every line ended by a newline.
pub fn export_lines(reply: &Reply) -> Vec<Value> {
    let body = std::str::from_utf8(&reply.body).expect("export is UTF-8");
    assert!(
        body.is_empty() || body.ends_with('\n'),
        "every line ends with a newline: {body:?}"
    );
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line ({e}): {line}")))
        .collect()
}

/// The parts of a problem that tell one failure from another (not `instance`, which names
/// the path).
pub fn problem_identity(problem: &Value) -> Value {
    serde_json::json!({
        "type": problem["type"],
        "title": problem["title"],
        "status": problem["status"],
        "detail": problem["detail"],
    })
}

/// `reply` is the 401 of a request without a valid token: a problem, and
/// `WWW-Authenticate: Bearer`. Returns the problem.
pub fn assert_unauthenticated(reply: &Reply) -> Value {
    let problem = assert_problem(reply, StatusCode::UNAUTHORIZED);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.split_whitespace().next() == Some("Bearer"),
        "401 without `WWW-Authenticate: Bearer`: {reply:?}"
    );
    problem
}

/// `reply` is a `status` problem with a `Retry-After` of at least one whole second; the
/// seconds.
pub fn assert_retry_after(reply: &Reply, status: StatusCode) -> u64 {
    assert_problem(reply, status);
    let retry_after = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("a {status} carries Retry-After: {reply:?}"));
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is whole seconds: {retry_after:?}"));
    assert!(seconds >= 1, "Retry-After: {retry_after}");
    seconds
}

// ---------------------------------------------------------------------------------------
// Rows, through the API and in the database

/// The `Link: <…>; rel="next"` target, if any.
pub fn next_link(reply: &Reply) -> Option<String> {
    let link = reply.header("link")?;
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    Some(link[start..end].to_owned())
}

/// A new note's body: `text`, `completed`.
pub fn note_body(text: &str, completed: bool) -> Value {
    serde_json::json!({"text": text, "completed": completed})
}

/// `POST /notes` with `body`, as `token`'s user (`None`: the app's signed-in user); the reply,
/// a 201.
pub async fn create_note(app: &TestApp, token: Option<&str>, body: &Value) -> Reply {
    let request = http::json_request(Method::POST, "/notes", body);
    let reply = match token {
        Some(token) => app.send_as(token, request).await,
        None => app.send(request).await,
    };
    assert_eq!(reply.status, StatusCode::CREATED, "create note: {reply:?}");
    reply
}

/// `/notes/{id}` of `note`.
pub fn note_path(note: &Value) -> String {
    format!("/notes/{}", id_of(note))
}

/// [`TestApp::signed_in`], and a note the user made with `body`: the app, the note's 201 and
/// its path.
pub async fn signed_in_with_note(backend: Backend, body: &Value) -> (TestApp, Reply, String) {
    let (app, _) = TestApp::signed_in(backend).await;
    let created = create_note(&app, None, body).await;
    let path = note_path(&created.json());
    (app, created, path)
}

/// `PATCH /users/{id}` with `body`, as `token`'s user (`None`: the app's signed-in user).
pub async fn patch_user(app: &TestApp, token: Option<&str>, id: i64, body: &Value) -> Reply {
    let request = http::json_request(Method::PATCH, &format!("/users/{id}"), body);
    match token {
        Some(token) => app.send_as(token, request).await,
        None => app.send(request).await,
    }
}

/// The sessions of user `user_id`, in id order.
pub async fn sessions_of(app: &TestApp, user_id: i64) -> Vec<session::Model> {
    session::Entity::find()
        .filter(session::Column::UserId.eq(user_id))
        .order_by_asc(session::Column::Id)
        .all(app.conn())
        .await
        .unwrap()
}

/// How many stored rows of `E` meet `condition`.
pub async fn count_rows<E>(app: &TestApp, condition: impl IntoCondition) -> u64
where
    E: EntityTrait,
    E::Model: Sync + 'static,
{
    E::find().filter(condition).count(app.conn()).await.unwrap()
}

/// How many stored notes have exactly `text`.
pub async fn notes_with_text(app: &TestApp, text: &str) -> u64 {
    count_rows::<note::Entity>(app, note::Column::Text.eq(text)).await
}

/// How many stored users have `email`.
pub async fn users_with_email(app: &TestApp, email: &str) -> u64 {
    count_rows::<user::Entity>(app, user::Column::Email.eq(email)).await
}

/// Rows per INSERT while seeding: at most 2500 binds, within every backend's limit.
const SEED_BATCH: usize = 500;

/// `count` notes owned by `owner`, the `i`-th with `text(i)`, inserted directly in one
/// transaction (the bulk route would take minutes on MariaDB, which inserts its rows one by
/// one).
pub async fn seed_notes(
    db: &DatabaseConnection,
    owner: i64,
    count: usize,
    text: impl Fn(usize) -> String,
) {
    let now = entity::now();
    let txn = db.begin().await.expect("begin the seeding transaction");
    for start in (0..count).step_by(SEED_BATCH) {
        let batch = (start..(start + SEED_BATCH).min(count)).map(|i| note::ActiveModel {
            user_id: Set(owner),
            text: Set(text(i)),
            completed: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        });
        note::Entity::insert_many(batch)
            .exec(&txn)
            .await
            .expect("seed notes");
    }
    txn.commit().await.expect("commit the seed");
}

// ---------------------------------------------------------------------------------------
// The pool, and waiting

/// Longest a test waits for something that should take well under a second; reaching it
/// means the code under test hung.
pub const HANG: Duration = Duration::from_secs(30);

/// `future`, failing with `what` instead of hanging when it takes longer than `deadline`.
pub async fn within<T>(what: &str, deadline: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {deadline:?}"))
}

/// The connections of the test's pool (the app and the test share it) that are checked out,
/// and the pool's size.
pub fn pool_in_use(db: &TestDb) -> (u32, u32) {
    fn checked_out<D: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<D>) -> (u32, u32) {
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).expect("a pool's idle count fits in u32");
        (size.saturating_sub(idle), size)
    }
    let conn = db.pool();
    match db.backend() {
        Backend::Sqlite => checked_out(conn.get_sqlite_connection_pool()),
        Backend::Postgres => checked_out(conn.get_postgres_connection_pool()),
        Backend::MySql => checked_out(conn.get_mysql_connection_pool()),
    }
}

/// Wait (at most [`HANG`]) until `in_use` connections of the pool are checked out.
pub async fn wait_for_connections_in_use(db: &TestDb, in_use: u32) {
    let started = Instant::now();
    while pool_in_use(db).0 != in_use {
        assert!(
            started.elapsed() < HANG,
            "the pool never had {in_use} connections in use: {:?}",
            pool_in_use(db)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait (at most [`HANG`]) until no connection of the pool is checked out.
pub async fn wait_for_idle_pool(db: &TestDb) {
    wait_for_connections_in_use(db, 0).await;
}

// ---------------------------------------------------------------------------------------
// Real HTTP

/// An HTTP client for the tests on real sockets, giving up on a request after `timeout`.
pub fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder().timeout(timeout).finish()
}

/// A finished response of a real server (up to 64 MiB of body) as a [`Reply`], for
/// [`assert_problem`]; panics, naming `what`, when the request failed.
pub async fn reply_of(
    response: Result<
        awc::ClientResponse<
            impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>,
        >,
        awc::error::SendRequestError,
    >,
    what: &str,
) -> Reply {
    let mut response = response.unwrap_or_else(|e| panic!("{what}: {e}"));
    let body = response
        .body()
        .limit(64 << 20)
        .await
        .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
    let headers: HeaderMap = response.headers().clone();
    Reply {
        status: response.status(),
        headers,
        body,
    }
}

/// Send `request` over HTTP, with `body` as JSON when given; the whole reply.
pub async fn send_over_http(request: awc::ClientRequest, body: Option<&Value>) -> Reply {
    let what = format!("{} {}", request.get_method(), request.get_uri());
    let sent = match body {
        Some(body) => request.send_json(body).await,
        None => request.send().await,
    };
    reply_of(sent, &what).await
}

// ---------------------------------------------------------------------------------------
// The OpenAPI document

/// The operations anyone may call, as `METHOD path`: sign-up, sign-in, the operational
/// routes and the web page.
pub const PUBLIC_ROUTES: [&str; 11] = [
    "POST /users",
    "POST /sessions",
    "POST /password-resets",
    "POST /password-resets/confirm",
    "POST /email-verifications/confirm",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /",
];

/// One operation of the OpenAPI document.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Upper case: `GET`, `POST`, …
    pub method: String,
    /// As documented: `/notes/{id}`.
    pub path: String,
    /// The operation object.
    pub operation: Value,
}

impl Operation {
    /// `"METHOD /path"`.
    pub fn route(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The served `/openapi.json` (asked anonymously; panics unless 200).
pub async fn openapi_document(app: &TestApp) -> Value {
    let reply = app.send_anonymous(http::get("/openapi.json")).await;
    assert_eq!(reply.status, StatusCode::OK, "GET /openapi.json: {reply:?}");
    reply.json()
}

/// Every operation of `doc` (every method of every path item), in the document's order.
pub fn operations(doc: &Value) -> Vec<Operation> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                operations.push(Operation {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    operation: operation.clone(),
                });
            }
        }
    }
    assert!(!operations.is_empty(), "the document lists no operation");
    operations
}

/// The operation `method` (any case) `path` of `doc` (panics when it is not documented).
pub fn operation(doc: &Value, method: &str, path: &str) -> Operation {
    operations(doc)
        .into_iter()
        .find(|op| op.method.eq_ignore_ascii_case(method) && op.path == path)
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
}

// ---------------------------------------------------------------------------------------
// The workspace's binaries

/// A finished process's exit status, standard output and standard error, for messages (and
/// for looking for what must not show).
pub fn shown(output: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The workspace's binary `name` (`api`, `migration`), as `cargo build --release` leaves it:
/// next to this test's own executable's directory (`target/<profile>/deps/..`).
/// `cargo test --workspace` builds a package's binaries before any test runs when that
/// package has integration tests of its own: `api/tests/` and `migration/tests/` keep it so.
///
/// Panics, saying how to build it, when it is missing or older than a file of `sources`
/// (directories of the workspace, e.g. `api/src`: those cargo rebuilds it for) — cargo does
/// not build another package's binaries for this package's tests.
pub fn workspace_binary(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let build = format!("cargo build --release --bin {name} (or cargo test --workspace)");
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("no {}: {e}; build it: {build}", binary.display()));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace");
    let mut newest = (SystemTime::UNIX_EPOCH, PathBuf::new());
    for source in sources {
        newest_file(&workspace.join(source), &mut newest);
    }
    assert!(
        built >= newest.0,
        "{} is older than {}: rebuild it: {build}",
        binary.display(),
        newest.1.display()
    );
    binary
}

/// The newest modification of a file at or below `path`, into `newest` when newer.
fn newest_file(path: &Path, newest: &mut (SystemTime, PathBuf)) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            newest_file(&entry.path(), newest);
        }
    } else if let Ok(modified) = meta.modified()
        && modified > newest.0
    {
        *newest = (modified, path.to_owned());
    }
}
