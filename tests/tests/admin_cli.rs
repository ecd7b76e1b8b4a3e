//! The `api` binary as an operator runs it, for what accounts added: `api create-admin EMAIL`
//! (password on standard input, idempotent, bad input exit 2 with one line), `TESTING` only
//! from the real environment (with a warning at start), and a database password given as
//! `?password=` in `DATABASE_URL` never printed.
//!
//! `create-admin` runs on every backend, a `#[backends]` test: on an empty database of its
//! own (the harness's, dropped at its end or at the process's exit); PostgreSQL and MariaDB
//! are ignored, saying why, when `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` is not set (with
//! `TEST_ALL_BACKENDS=1` they run, and fail without it).
//!
//! The binary is the workspace's (`tests::fixtures::workspace_binary`): build it with
//! `cargo build --release --bin api`, or run `cargo test --workspace`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use entity::user;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tests::{
    Backend, Private, RunDatabase, backends,
    fixtures::{shown, workspace_binary},
    process::ApiProcess,
};

/// The `api` binary (checked to be built from the sources as they are).
fn bin() -> PathBuf {
    workspace_binary(
        "api",
        &["api/src", "api/web", "entity/src", "migration/src"],
    )
}
/// The secret of the `?password=` tests: it must appear nowhere.
const SECRET: &str = "s3cretpw";

/// A fresh empty directory to run the binary in.
fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("api-admin-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A SQLite file in `dir`, by absolute path (the test opens it too, from elsewhere).
fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/data/notes.db?mode=rwc", dir.display())
}

/// The binary with a clean environment: no configuration but what the test gives.
fn api(dir: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json");
    command
}

/// Wait for `child` to exit by itself (at most 60 s, else kill it and fail).
fn wait_within(mut child: Child) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!(
                "the process did not exit within 60 s: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Run `command` with `stdin` as its standard input (then closed), to its end.
fn run_with_stdin(command: &mut Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The command may exit before reading (a bad e-mail): a broken pipe is fine then.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    wait_within(child)
}

/// `api create-admin EMAIL` on `url` with `stdin`.
fn create_admin(dir: &Path, url: &str, email: &str, stdin: &str) -> Output {
    run_with_stdin(
        api(dir)
            .env("DATABASE_URL", url)
            .args(["create-admin", email]),
        stdin,
    )
}

fn assert_succeeded_without_showing(output: &Output, password: &str) {
    assert_eq!(output.status.code(), Some(0), "{}", shown(output));
    assert!(
        !shown(output).contains(password),
        "the password was printed: {}",
        shown(output)
    );
}

/// Run `work` — synchronous: it drives processes, and runs futures with [`block_on`] — on a
/// thread of its own, off the `#[backends]` test's runtime; its panic is the test's.
fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(work)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Run `future` to its end on a runtime of its own (the tests are synchronous: they drive
/// processes).
fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Every user of the database at `url`.
fn users(url: &str) -> Vec<user::Model> {
    block_on(async {
        let db = migration::database::connect_for_tool(url).await.unwrap();
        let users = user::Entity::find().all(&db).await.unwrap();
        db.close().await.unwrap();
        users
    })
}

/// The only user with `email`.
fn the_user(url: &str, email: &str) -> user::Model {
    let mut matching: Vec<user::Model> = users(url)
        .into_iter()
        .filter(|user| user.email == email)
        .collect();
    assert_eq!(matching.len(), 1, "exactly one user {email}: {matching:?}");
    matching.remove(0)
}

/// Whether `stored` is an argon2id PHC string that `password` matches.
fn argon2id_matches(stored: &str, password: &str) -> bool {
    assert!(stored.starts_with("$argon2id$"), "not an argon2id hash");
    let hash = PasswordHash::new(stored).expect("a PHC string");
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// `POST /sessions`: the status, and the token on success.
fn sign_in(server: &ApiProcess, email: &str, password: &str) -> (u16, Option<String>) {
    let credentials = json!({"email": email, "password": password});
    let (status, body) = server.request("POST", "/sessions", None, Some(&credentials));
    let token = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|session| session["token"].as_str().map(str::to_owned));
    (status, token)
}

/// Wait (at most 3 s: revocation is seen within 1 s) until `token` is refused.
fn refused_soon(server: &ApiProcess, token: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if server.request("GET", "/users/me", Some(token), None).0 == 401 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The server on `url` in `dir`, on a free port.
fn serve(dir: &Path, url: &str) -> ApiProcess {
    ApiProcess::start(api(dir).env("DATABASE_URL", url).env("PORT", "0"))
        .unwrap_or_else(|logs| panic!("the server did not start: {logs:#?}"))
}

/// The whole life of an admin account made from the command line, on `url`:
/// created with the password from standard input (a one-line prompt answer), stored as an
/// argon2id hash, able to sign in and to use the admin-only routes; running the command again
/// changes nothing but the password (the old one and its sessions stop working); and an
/// ordinary account made through the API is promoted in place.
fn create_admin_life(dir: &Path, url: &str) {
    let email = "root.admin@example.com";
    let first = "first admin passphrase";
    let output = create_admin(dir, url, "  Root.Admin@Example.COM ", &format!("{first}\n"));
    assert_succeeded_without_showing(&output, first);

    let admin = the_user(url, email);
    assert!(admin.is_admin && admin.is_active, "{admin:?}");
    assert!(argon2id_matches(&admin.hashed_password, first));

    let server = serve(dir, url);
    let (status, token) = sign_in(&server, email, first);
    assert_eq!(status, 201, "the admin signs in with the password given");
    let token = token.unwrap();
    let (status, me) = server.request("GET", "/users/me", Some(&token), None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        serde_json::from_str::<Value>(&me).unwrap()["is_admin"],
        true
    );
    let (status, body) = server.request("GET", "/users", Some(&token), None);
    assert_eq!(status, 200, "admins list the users: {body}");

    // Again, with a new password (and the line ending of a Windows terminal).
    let second = "second admin passphrase";
    let output = create_admin(dir, url, email, &format!("{second}\r\n"));
    assert_succeeded_without_showing(&output, second);
    let again = the_user(url, email);
    assert_eq!(again.id, admin.id, "the same account, not a new one");
    assert!(again.is_admin, "still an admin");
    assert!(argon2id_matches(&again.hashed_password, second));
    assert!(!argon2id_matches(&again.hashed_password, first));
    assert_eq!(
        sign_in(&server, email, first).0,
        401,
        "the old password is gone"
    );
    assert_eq!(sign_in(&server, email, second).0, 201, "the new one works");
    assert!(
        refused_soon(&server, &token),
        "the password change ended the sessions signed in with the old one"
    );

    // An ordinary user, signed up through the API, becomes an admin in place.
    let ordinary = "plain.user@example.com";
    let signed_up = json!({"email": ordinary, "password": "ordinary passphrase"});
    let (status, body) = server.request("POST", "/users", None, Some(&signed_up));
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let (_, token) = sign_in(&server, ordinary, "ordinary passphrase");
    let (status, _) = server.request("GET", "/users", Some(&token.unwrap()), None);
    assert_eq!(status, 403, "not an admin yet");
    let promoted = "promoted passphrase";
    let output = create_admin(dir, url, "Plain.User@example.com", &format!("{promoted}\n"));
    assert_succeeded_without_showing(&output, promoted);
    let user = the_user(url, ordinary);
    assert_eq!(user.id, id, "promoted in place");
    assert!(user.is_admin);
    let (status, token) = sign_in(&server, ordinary, promoted);
    assert_eq!(status, 201);
    let (status, body) = server.request("GET", "/users", Some(&token.unwrap()), None);
    assert_eq!(status, 200, "now an admin: {body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(2),
        "no account was duplicated: {listed}"
    );

    let logs = server.stop().join("\n");
    for password in [first, second, promoted] {
        assert!(!logs.contains(password), "a password was logged");
    }
}

#[backends(sqlite, postgres, mysql)]
async fn create_admin_on(backend: Backend) {
    let database = RunDatabase::get(backend).empty_database().await;
    let url = database.url().to_owned();
    in_workdir(database, url, create_admin_life).await;
}

/// `work(dir, url)` in a fresh working directory `dir`, off the test's runtime; then the
/// directory and `database` go.
async fn in_workdir(database: Private, url: String, work: fn(&Path, &str)) {
    off_runtime(move || {
        let dir = workdir();
        work(&dir, &url);
        std::fs::remove_dir_all(dir).unwrap();
    });
    database.drop_now().await;
}

/// A bad e-mail address, a missing one, a password too short or too long, an empty line or no
/// input at all: exit status 2, one line on stderr, the password not echoed, no account.
/// (SQLite only: the input is refused before any database is involved.)
#[test]
fn create_admin_refuses_bad_input_with_exit_2_and_one_line() {
    let dir = workdir();
    let url = &sqlite_url(&dir);
    let too_long = "p".repeat(257);
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["create-admin", "not-an-email"],
            "long enough passphrase\n",
            "long enough passphrase",
        ),
        (&["create-admin", "admin@example.com"], "Zq7#xk\n", "Zq7#xk"),
        (&["create-admin", "admin@example.com"], &too_long, &too_long),
        (&["create-admin", "admin@example.com"], "\n", ""),
        (&["create-admin", "admin@example.com"], "", ""),
        (
            &["create-admin"],
            "long enough passphrase\n",
            "long enough passphrase",
        ),
    ];
    for (args, stdin, password) in cases {
        let output = run_with_stdin(api(&dir).env("DATABASE_URL", url).args(args), stdin);
        let shown = shown(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?} {stdin:?}: {shown}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?} {stdin:?}: one line: {shown}"
        );
        assert!(output.stdout.is_empty(), "{args:?} {stdin:?}: {shown}");
        if !password.is_empty() {
            assert!(
                !shown.contains(password),
                "{args:?}: the password was echoed: {shown}"
            );
        }
    }
    let database = dir.join("data/notes.db");
    if database.exists() {
        assert!(users(url).is_empty(), "bad input created no account");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `TESTING=true` in a `.env` file does not mount the test-only routes (the `.env` is read:
/// its `PORT=0` is obeyed), and logs no warning about them.
#[test]
fn testing_in_a_dotenv_file_is_ignored() {
    let dir = workdir();
    std::fs::write(dir.join(".env"), "TESTING=true\nPORT=0\n").unwrap();
    let server = ApiProcess::start(&mut api(&dir))
        .unwrap_or_else(|logs| panic!("the server did not start: {logs:#?}"));
    assert!(
        !server.address.ends_with(":8000"),
        "the .env file was read: {}",
        server.address
    );
    let (status, body) = server.request("POST", "/__test/hold/1", None, None);
    assert_eq!(status, 404, "test routes are not mounted: {body}");
    let (status, _) = server.request("GET", "/__test/panic", None, None);
    assert_eq!(status, 404);
    let logs = server.stop();
    assert!(
        !logs.iter().any(|line| line.contains("TESTING")),
        "no TESTING warning when it is off: {logs:#?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `TESTING=true` in the real environment mounts them, and the server says so at start with
/// a warning.
#[test]
fn testing_in_the_environment_mounts_the_test_routes_with_a_warning() {
    let dir = workdir();
    let server = ApiProcess::start(api(&dir).env("TESTING", "true").env("PORT", "0"))
        .unwrap_or_else(|logs| panic!("the server did not start: {logs:#?}"));
    let (status, body) = server.request("POST", "/__test/hold/1", None, None);
    assert_eq!(
        status, 401,
        "mounted (and, like every data route, signed in only): {body}"
    );
    let logs = server.stop();
    let warnings: Vec<Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|log| log["level"] == "WARN")
        .filter(|log| {
            log["message"]
                .as_str()
                .is_some_and(|m| m.contains("TESTING"))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "one warning at start: {logs:#?}");
    let serving = logs.iter().position(|line| line.contains("\"serving\""));
    let warned = logs.iter().position(|line| line.contains("TESTING"));
    assert!(warned < serving, "the warning comes at start: {logs:#?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A password given as `?password=` in `DATABASE_URL` shows nowhere when the database cannot
/// be reached — not in the server's retries and error, nor in the one-shot commands' — and
/// not in the one-line error of a malformed URL.
#[test]
fn query_string_password_never_shows_in_errors() {
    let dir = workdir();
    let unreachable = [
        format!("postgres://app@127.0.0.1:1/notes?password={SECRET}"),
        format!("mysql://app@127.0.0.1:1/notes?ssl-mode=disabled&password={SECRET}"),
    ];
    let mut runs = Vec::new();
    for url in &unreachable {
        for args in [
            &[][..],
            &["seed-demo"][..],
            &["create-admin", "a@example.com"][..],
        ] {
            let child = api(&dir)
                .env("DATABASE_URL", url)
                .env("DB_ACQUIRE_TIMEOUT_MS", "100")
                .env("RUST_LOG", "debug")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            runs.push((url, args, child));
        }
    }
    for (url, args, mut child) in runs {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"an admin passphrase\n");
        }
        let output = wait_within(child);
        let shown = shown(&output);
        assert_eq!(output.status.code(), Some(1), "{url} {args:?}: {shown}");
        assert!(
            !shown.contains(SECRET),
            "{url} {args:?}: the password shows: {shown}"
        );
        assert!(shown.contains("cannot connect to the database"), "{shown}");
    }
    for url in [
        format!("ftp://app@db.internal/notes?password={SECRET}"),
        format!("postgres://app@/notes?password={SECRET}"),
        format!("postgres://app@db internal/notes?password={SECRET}"),
    ] {
        let output = wait_within(
            api(&dir)
                .env("DATABASE_URL", &url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let shown = shown(&output);
        assert_eq!(output.status.code(), Some(2), "{url}: {shown}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{shown}");
        assert!(stderr.contains("DATABASE_URL"), "{shown}");
        assert!(
            !shown.contains(SECRET),
            "{url}: the password shows: {shown}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A server that starts on `url` (which carries `?password=SECRET`) logs nothing of it, at
/// any level, from start to stop; its `serving` line names the database with the password
/// hidden.
fn serves_without_logging_the_password(dir: &Path, url: &str) {
    let started = ApiProcess::start(
        api(dir)
            .env("DATABASE_URL", url)
            .env("PORT", "0")
            .env("RUST_LOG", "debug"),
    );
    let logs = match started {
        Ok(server) => {
            let signed_up = json!({"email": "someone@example.com", "password": "a passphrase"});
            assert_eq!(
                server.request("POST", "/users", None, Some(&signed_up)).0,
                201
            );
            assert_eq!(server.request("GET", "/readyz", None, None).0, 200);
            server.stop()
        }
        Err(logs) => panic!("the server did not start on {url}: {logs:#?}"),
    };
    let serving: Vec<Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|log| log["message"] == "serving")
        .collect();
    assert_eq!(serving.len(), 1, "{logs:#?}");
    let database = serving[0]["database"].as_str().unwrap_or_default();
    assert!(
        database.contains("password=***"),
        "the database is named, redacted: {database}"
    );
    assert!(
        !logs.iter().any(|line| line.contains(SECRET)),
        "the password was logged: {logs:#?}"
    );
}

/// PostgreSQL takes `?password=` (the test server trusts local connections, so any password
/// connects): the server serves with it and never logs it.
#[backends(postgres)]
async fn query_string_password_is_not_logged_while_serving(backend: Backend) {
    let database = RunDatabase::get(backend).empty_database().await;
    let separator = if database.url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}password={SECRET}", database.url());
    in_workdir(database, url, serves_without_logging_the_password).await;
}

/// The SQLite driver refuses a `password` parameter: the error says which parameter, never its
/// value.
#[test]
fn query_string_password_is_not_shown_by_sqlite_either() {
    let dir = workdir();
    let url = format!("sqlite://data/notes.db?mode=rwc&password={SECRET}");
    match ApiProcess::start(
        api(&dir)
            .env("DATABASE_URL", &url)
            .env("PORT", "0")
            .env("RUST_LOG", "debug"),
    ) {
        Ok(server) => {
            let logs = server.stop();
            assert!(!logs.iter().any(|line| line.contains(SECRET)), "{logs:#?}");
        }
        Err(logs) => {
            assert!(!logs.iter().any(|line| line.contains(SECRET)), "{logs:#?}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
