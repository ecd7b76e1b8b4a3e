//! Failover on a real pg_auto_failover formation: `scripts/pg-ha.sh up` makes one (a monitor
//! and two nodes, a synchronous secondary) and prints its multi-host URL, which `.ci/run`
//! gives these tests as `TEST_PG_HA_URL`. Without it they fail under `TEST_ALL_BACKENDS=1`,
//! else say they skipped.
//!
//! One test, as the formation is one: the `migration` CLI and the `api` binary, both on the
//! multi-host URL, go through a manual failover (`pg_autoctl perform failover`) and then a
//! primary killed with SIGKILL. Throughout, a client writes a note every 100 ms: every answer
//! is 201 or 503 with `Retry-After` (never a 500, never a hang), writes are accepted again
//! after the failover with no restart, every note acknowledged is there afterwards, and
//! `/readyz` answers 200 or 503 only, 200 at the end. The CLI, run in the gap, works or says
//! in one line why not; after it, it works on the new primary.
//! The server reads on the standby (`DATABASE_READ_URL`, the same hosts with
//! `prefer-standby`): a second client that keeps its cookie reads back each of its writes
//! across the change of timeline. A third client follows the changes live
//! (`GET /notes/events`, reconnecting with `Last-Event-ID`) and receives every one, once, in
//! order, soon after each failover. After both failovers, the mail worker still delivers.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{
    fixtures::{shown, workspace_binary},
    process::ApiProcess,
};

/// How long writes may be refused after a failover starts (scripts/pg-ha.sh measures 8-10 s
/// for a killed primary with its settings; this leaves room for a busy machine).
const WRITABLE_WITHIN: Duration = Duration::from_secs(60);

fn ha_url() -> Option<String> {
    std::env::var("TEST_PG_HA_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = head.find("://").expect("a URL") + 3;
    let path_start = head[scheme_end..]
        .find('/')
        .map_or(head.len(), |i| scheme_end + i);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{database}{query}", &head[..path_start])
}

/// Run `scripts/pg-ha.sh ACTION`; panics with its output when it fails or takes 3 minutes.
fn pg_ha(action: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-ha.sh");
    let output = Command::new("timeout")
        .args(["180", "bash"])
        .arg(script)
        .arg(action)
        .output()
        .expect("run scripts/pg-ha.sh");
    assert!(
        output.status.success(),
        "scripts/pg-ha.sh {action}: {}",
        shown(&output)
    );
}

/// The `migration` CLI's `command` on `url` (killed after a minute).
fn run_migration(url: &str, command: &str) -> std::process::Output {
    Command::new("timeout")
        .arg("60")
        .arg(workspace_binary("migration", &["migration/src"]))
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the migration binary")
}

/// The `migration` CLI on `url`; panics with its output unless it succeeds.
fn migration(url: &str, command: &str) {
    let output = run_migration(url, command);
    assert!(
        output.status.success(),
        "migration {command}: {}",
        shown(&output)
    );
}

/// The `migration` CLI's `status` while the formation may have no primary: it answers within
/// a minute, with success or one line that says why (exit 1), never a hang or a panic.
fn migration_during_failover(url: &str, action: &str) {
    let output = run_migration(url, "status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said_why = output.status.code() == Some(1)
        && stderr.lines().count() == 1
        && stderr.starts_with("migration: cannot connect to the database");
    eprintln!(
        "{action}: migration status during the failover: {:?} {}",
        output.status.code(),
        stderr.trim()
    );
    assert!(
        output.status.success() || said_why,
        "{action}: migration status during the failover: {}",
        shown(&output)
    );
}

/// `statement` on the database `database` of the formation (its primary).
fn sql(url: &str, database: &str, statement: &str) {
    let url = with_database(url, database);
    let statement = statement.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            use sea_orm::ConnectionTrait;
            let db = migration::database::connect_for_tool(&url).await.unwrap();
            db.execute_unprepared(&statement).await.unwrap();
            db.close().await.unwrap();
        });
}

/// The `api` binary on `url`, reading on `read_url`, writing its mail as files in `mail_dir`.
fn start_api(url: &str, read_url: &str, mail_dir: &Path) -> ApiProcess {
    ApiProcess::start(
        Command::new(workspace_binary(
            "api",
            &["api/src", "api/web", "entity/src", "migration/src"],
        ))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("DATABASE_READ_URL", read_url)
        .env("MAIL_DIR", mail_dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,api=info")
        .env("DB_ACQUIRE_TIMEOUT_MS", "2000")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null()),
    )
    .unwrap_or_else(|logs| panic!("the api did not serve: {logs:#?}"))
}

/// One request: status, `Retry-After`, JSON body.
fn ask(
    api: &ApiProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let answer = api.send(method, path, token, body, None);
    (answer.status, answer.header("retry-after"), answer.json())
}

/// A client of `GET /notes/events` that reconnects with `Last-Event-ID` after any end (as an
/// `EventSource` does), from change 0: the change numbers it received, in order.
struct Follower {
    seen: Arc<Mutex<Vec<i64>>>,
    /// The status line of each connection.
    connections: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn start(address: &str, token: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (address, token) = (address.to_owned(), token.to_owned());
        let thread = {
            let (seen, connections, stop) = (seen.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let last = seen.lock().unwrap().last().copied().unwrap_or(0);
                    Self::connection(&address, &token, last, &seen, &connections, &stop);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        Self {
            seen,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// One connection, until it ends (or `stop`).
    fn connection(
        address: &str,
        token: &str,
        last: i64,
        seen: &Mutex<Vec<i64>>,
        connections: &Mutex<Vec<String>>,
        stop: &AtomicBool,
    ) {
        let Ok(mut stream) = TcpStream::connect(address) else {
            connections.lock().unwrap().push("connect failed".into());
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if write!(
            stream,
            "GET /notes/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Last-Event-ID: {last}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let mut first = true;
        while !stop.load(Ordering::Acquire) {
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if first {
                        connections.lock().unwrap().push(line.trim_end().to_owned());
                        first = false;
                    } else if let Some(id) = line.trim_end().strip_prefix("id: ") {
                        seen.lock().unwrap().push(id.parse().unwrap());
                    }
                    line.clear();
                }
                // A pause in the stream (a partial line stays in `line`).
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }

    /// Wait up to `within` until every change up to `newest` was received, each once and in
    /// order; panics with what is missing.
    fn caught_up(&self, newest: i64, within: Duration, action: &str) {
        let asked = Instant::now();
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.len() as i64 >= newest {
                let expected: Vec<i64> = (1..=newest).collect();
                assert_eq!(
                    &seen[..newest as usize],
                    &expected[..],
                    "{action}: the event stream did not deliver every change once, in order"
                );
                eprintln!(
                    "{action}: the event stream delivered changes 1..={newest} ({:.1} s after the last write), over {} connections",
                    asked.elapsed().as_secs_f64(),
                    self.connections.lock().unwrap().len()
                );
                return;
            }
            assert!(
                asked.elapsed() < within,
                "{action}: the event stream received {} of {newest} changes within {within:?} \
                 (last {:?}); its connections: {:?}",
                seen.len(),
                seen.last(),
                self.connections.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The number of the caller's newest change (`GET /notes/changes`, page by page).
fn newest_change(api: &ApiProcess, token: &str) -> i64 {
    let mut since = 0;
    loop {
        let (status, _, body) = ask(
            api,
            "GET",
            &format!("/notes/changes?since={since}&limit=1000"),
            Some(token),
            None,
        );
        if status == 503 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(status, 200, "GET /notes/changes: {body}");
        since = body["next"].as_i64().unwrap();
        if !body["more"].as_bool().unwrap() {
            return since;
        }
    }
}

/// What a writer saw during one failover.
#[derive(Default)]
struct Seen {
    /// Notes acknowledged (201), by id.
    written: Vec<i64>,
    /// Answers other than 201 or 503-with-Retry-After.
    unexpected: Vec<String>,
    refused: usize,
    /// `/readyz` answers.
    ready: Vec<u16>,
}

/// Write a note every 100 ms (and ask `/readyz`) until `stop`.
fn write_until(api: &ApiProcess, token: &str, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let (status, retry_after, body) = ask(
            api,
            "POST",
            "/notes",
            Some(token),
            Some(&json!({ "text": format!("written during a failover {n}") })),
        );
        let (ready, _, _) = ask(api, "GET", "/readyz", None, None);
        let mut seen = seen.lock().unwrap();
        seen.ready.push(ready);
        match status {
            201 => seen.written.push(body["id"].as_i64().unwrap()),
            503 if retry_after.is_some() => seen.refused += 1,
            _ => seen
                .unexpected
                .push(format!("POST /notes {status}: {body}")),
        }
        drop(seen);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Read-your-writes rounds until `stop`, as a client keeping its cookie: each note written
/// (201) is read back at once (a 503 is asked again). Returns (written, read back, stale).
fn rounds(api: &ApiProcess, token: &str, stop: &AtomicBool) -> (usize, usize, Vec<String>) {
    let (mut written, mut seen, mut stale) = (0, 0, Vec::new());
    let mut cookie: Option<String> = None;
    while !stop.load(Ordering::Acquire) {
        let body = json!({ "text": "read your writes" });
        let answer = api.send(
            "POST",
            "/notes",
            Some(token),
            Some(&body),
            cookie.as_deref(),
        );
        if let Some(set) = answer.header("set-cookie") {
            cookie = set.split(';').next().map(str::to_owned);
        }
        if answer.status != 201 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        written += 1;
        let id = answer.json()["id"].as_i64().unwrap();
        loop {
            let read = api.send(
                "GET",
                &format!("/notes/{id}"),
                Some(token),
                None,
                cookie.as_deref(),
            );
            match read.status {
                200 => seen += 1,
                503 => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                status => stale.push(format!("note {id}: {status} ({})", read.json())),
            }
            break;
        }
    }
    (written, seen, stale)
}

/// How soon a change must reach an open event stream once writes are accepted again (the
/// contract's bound is 1 s; a stream's heartbeat, which also reads the log, comes every 15 s).
const EVENTS_WITHIN: Duration = Duration::from_secs(5);

/// Run `action` (a pg-ha.sh command) while a client writes and another reads its writes;
/// then wait until a write is accepted, and check what the clients saw, and that `events`
/// (following the writer's changes live) received every change.
fn survive(api: &ApiProcess, url: &str, token: &str, action: &str, events: &Follower) {
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let started = Instant::now();
    let (writable_after, (written, read_back, stale)) = std::thread::scope(|scope| {
        scope.spawn(|| write_until(api, token, &stop, &seen));
        let reader = scope.spawn(|| rounds(api, token, &stop));
        std::thread::sleep(Duration::from_millis(500));
        pg_ha(action);
        let acted = seen.lock().unwrap().written.len();
        migration_during_failover(url, action);
        // Writable again: a write acknowledged after the action finished.
        while seen.lock().unwrap().written.len() <= acted + 2 {
            assert!(
                started.elapsed() < WRITABLE_WITHIN,
                "{action}: no write accepted within {WRITABLE_WITHIN:?}: {} refused, {:?}",
                seen.lock().unwrap().refused,
                seen.lock().unwrap().unexpected
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let after = started.elapsed();
        stop.store(true, Ordering::Release);
        (after, reader.join().unwrap())
    });
    events.caught_up(newest_change(api, token), EVENTS_WITHIN, action);
    eprintln!("{action}: read-your-writes rounds: {written} written, {read_back} read back");
    assert!(
        stale.is_empty() && written == read_back && written > 0,
        "{action}: read-your-writes: {written} written, {read_back} read back, {stale:?}"
    );
    let seen = seen.into_inner().unwrap();
    eprintln!(
        "{action}: writable again {:.1} s after it began; {} writes acknowledged, {} refused (503)",
        writable_after.as_secs_f64(),
        seen.written.len(),
        seen.refused
    );
    assert!(
        seen.unexpected.is_empty(),
        "{action}: answers other than 201 or 503 + Retry-After: {:?}",
        seen.unexpected
    );
    assert!(
        seen.ready.iter().all(|status| matches!(status, 200 | 503)),
        "{action}: /readyz answered {:?}",
        seen.ready
    );
    for id in &seen.written {
        let (status, _, body) = ask(api, "GET", &format!("/notes/{id}"), Some(token), None);
        assert_eq!(
            status, 200,
            "{action}: acknowledged note {id} is gone: {body}"
        );
    }
    let (ready, _, _) = ask(api, "GET", "/readyz", None, None);
    assert_eq!(ready, 200, "{action}: /readyz after the failover");
}

#[test]
fn the_server_and_the_cli_follow_a_failover_and_a_killed_primary() {
    let Some(url) = ha_url() else {
        assert!(
            std::env::var("TEST_ALL_BACKENDS").as_deref() != Ok("1"),
            "TEST_PG_HA_URL is not set but TEST_ALL_BACKENDS=1: run `scripts/pg-ha.sh up` \
             and set TEST_PG_HA_URL to the URL it prints (.ci/run does)"
        );
        eprintln!("skipped: TEST_PG_HA_URL is not set (scripts/pg-ha.sh up prints it)");
        return;
    };
    let database = format!("failover_{}", uuid::Uuid::new_v4().simple());
    sql(&url, "postgres", &format!("CREATE DATABASE {database}"));
    let db_url = with_database(&url, &database);
    migration(&db_url, "up");

    // Reads on the standby when it has caught up (the replica rules), through the same list.
    let read_url = db_url.replace(
        "target_session_attrs=read-write",
        "target_session_attrs=prefer-standby",
    );
    let mail_dir = std::env::temp_dir().join(format!("failover-mail-{}", uuid::Uuid::new_v4()));
    let api = start_api(&db_url, &read_url, &mail_dir);
    let email = format!("failover-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "failover horse battery";
    let credentials = json!({ "email": email, "password": password });
    let (status, _, body) = ask(&api, "POST", "/users", None, Some(&credentials));
    assert_eq!(status, 201, "sign-up: {body}");
    let (status, _, body) = ask(&api, "POST", "/sessions", None, Some(&credentials));
    assert_eq!(status, 201, "sign-in: {body}");
    let token = body["token"].as_str().unwrap().to_owned();

    let events = Follower::start(&api.address, &token);
    survive(&api, &db_url, &token, "failover", &events);
    migration(&db_url, "status");
    survive(&api, &db_url, &token, "kill-primary", &events);
    drop(events);
    migration(&db_url, "status");
    // The mail worker went through both failovers: a reset asked for now is delivered.
    let (status, _, body) = ask(
        &api,
        "POST",
        "/password-resets",
        None,
        Some(&json!({ "email": email })),
    );
    assert_eq!(status, 202, "a password reset after the failovers: {body}");
    let mailed = Instant::now();
    while !std::fs::read_dir(&mail_dir)
        .map(|files| {
            files.flatten().any(|f| {
                std::fs::read_to_string(f.path()).is_ok_and(|m| m.contains("reset-password"))
            })
        })
        .unwrap_or(false)
    {
        assert!(
            mailed.elapsed() < Duration::from_secs(30),
            "the reset mail was not written to {} within 30 s of the failovers",
            mail_dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&mail_dir);
    // The killed node comes back as the secondary, for whoever uses the formation next.
    pg_ha("restart-killed");

    // The standby served reads (between the failovers, when it had replayed what was asked).
    let metrics = api.send("GET", "/metrics", None, None, None).text;
    let replica_reads: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("db_reads_total{target=\"replica\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0);
    eprintln!("reads served by the standby: {replica_reads}");
    assert!(
        replica_reads > 0.0,
        "no read was served by the standby: {metrics}"
    );

    let logs = api.stop();
    assert!(
        logs.iter()
            .any(|line| line.contains("target_session_attrs changed")),
        "the server did not say it moved to another host: {logs:#?}"
    );
    sql(
        &url,
        "postgres",
        &format!("DROP DATABASE {database} WITH (FORCE)"),
    );
}
