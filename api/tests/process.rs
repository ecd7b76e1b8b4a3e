//! The `api` binary as an operator runs it: configuration errors, a bare-machine start on
//! SQLite, graceful shutdown, `seed-demo` and `create-admin`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_api");

/// A fresh empty directory to run the binary in (a "bare machine").
fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("api-proc-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with a clean environment: no configuration but what the test gives.
fn api(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json");
    command
}

/// Run a command that is expected to exit by itself; kill it (and fail) if it does not.
fn output_within(command: &mut Command) -> std::process::Output {
    output_with_input(command, "")
}

/// [`output_within`], with `input` on the command's standard input.
fn output_with_input(command: &mut Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The command may exit without reading: a closed pipe is no failure here.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!(
        "the process did not exit within 30 s: {:?}",
        child.wait_with_output()
    );
}

#[test]
fn malformed_setting_exits_2_with_one_line_naming_it() {
    let dir = workdir();
    for (var, value) in [
        ("PORT", "eighty"),
        ("AUTO_MIGRATE", "maybe"),
        ("DB_POOL_MAX", "0"),
        ("DATABASE_URL", "ftp://user:hunter2secret@host/db"),
        ("PUBLIC_URL", "not a url"),
        ("MAIL_FROM", "nobody"),
        ("SMTP_URL", "http://user:hunter2secret@mail.example.org"),
        // The form checked in full before anything connects: one option only.
        (
            "SMTP_URL",
            "smtp://user:hunter2secret@mail.example.org?tls=sometimes",
        ),
    ] {
        let output = output_within(api(&dir).env(var, value));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{var}: {stderr}");
        assert!(stderr.contains(var), "{var} named: {stderr}");
        assert!(
            !stderr.contains("hunter2secret"),
            "password shown: {stderr}"
        );
    }
    assert!(
        !dir.join("data").exists(),
        "nothing happens before the settings are valid"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn dotenv_file_is_read_and_the_environment_wins() {
    let dir = workdir();
    std::fs::write(dir.join(".env"), "PORT=not-a-port\nHOST=bad_host!\n").unwrap();
    let output = output_within(api(&dir).env("PORT", "0"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HOST"), ".env's HOST is read: {stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unreachable_database_fails_cleanly_without_the_password() {
    let dir = workdir();
    let output = output_within(
        api(&dir)
            .env(
                "DATABASE_URL",
                "postgres://app:hunter2secret@127.0.0.1:1/notes",
            )
            .env("DB_ACQUIRE_TIMEOUT_MS", "100"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("hunter2secret"),
        "password shown: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("cannot connect to the database"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Start the server on a free port and return it with its address.
fn start(dir: &Path) -> (Child, String) {
    let mut child = api(dir)
        .env("PORT", "0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("the server exited before serving")
            .unwrap();
        let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if log["message"] == "serving" {
            break log["address"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, address)
}

fn http_get(address: &str, path: &str) -> String {
    http(address, "GET", path, None, None)
}

/// `method path`, with a bearer `token` and a JSON `body` when given: the whole response.
fn http(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    write!(stream, "{head}Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The JSON body of a whole response.
fn json_body(response: &str) -> serde_json::Value {
    let (_, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body: {response}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

/// `POST /sessions`: the token for `email` and `password` (fails unless 201).
fn sign_in(address: &str, email: &str, password: &str) -> String {
    let credentials = serde_json::json!({"email": email, "password": password});
    let response = http(address, "POST", "/sessions", None, Some(&credentials));
    assert!(response.starts_with("HTTP/1.1 201"), "sign-in: {response}");
    json_body(&response)["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn serves_on_a_bare_machine_and_stops_cleanly_on_sigterm() {
    let dir = workdir();
    let (mut child, address) = start(&dir);
    let health = http_get(&address, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let anonymous = http_get(&address, "/notes");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    // The schema is migrated: a sign-up, a sign-in and the user's (empty) notes.
    let (email, password) = ("bare@example.com", "bare machine password");
    let credentials = serde_json::json!({"email": email, "password": password});
    let signed_up = http(&address, "POST", "/users", None, Some(&credentials));
    assert!(signed_up.starts_with("HTTP/1.1 201"), "{signed_up}");
    let token = sign_in(&address, email, password);
    let notes = http(&address, "GET", "/notes", Some(&token), None);
    assert!(
        notes.starts_with("HTTP/1.1 200"),
        "the schema is migrated: {notes}"
    );
    assert_eq!(json_body(&notes), serde_json::json!([]), "{notes}");
    assert!(
        dir.join("data/notes.db").exists(),
        "./data/notes.db is created"
    );

    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `seed-demo` twice gives one demo user with three notes, and prints the demo user's e-mail
/// address and a password they sign in with.
#[test]
fn seed_demo_is_idempotent() {
    let dir = workdir();
    let mut password = String::new();
    for _ in 0..2 {
        let output = output_within(api(&dir).arg("seed-demo"));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("johndoe@example.com"), "{stdout}");
        password = stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix("password"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, password)| password.trim().to_owned())
            .unwrap_or_else(|| panic!("no password printed: {stdout}"));
        assert!(!password.is_empty(), "{stdout}");
    }
    // An admin, to list the users.
    let (admin, admin_password) = ("admin@example.com", "the admin's password");
    let output = output_with_input(
        api(&dir).args(["create-admin", admin]),
        &format!("{admin_password}\n"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (mut child, address) = start(&dir);
    let admin_token = sign_in(&address, admin, admin_password);
    let users = http(&address, "GET", "/users", Some(&admin_token), None);
    assert!(users.starts_with("HTTP/1.1 200"), "{users}");
    assert_eq!(users.matches("johndoe@example.com").count(), 1, "{users}");
    let demo = sign_in(&address, "johndoe@example.com", &password);
    let notes = http(&address, "GET", "/notes", Some(&demo), None);
    assert!(notes.starts_with("HTTP/1.1 200"), "{notes}");
    assert_eq!(notes.matches("\"id\":").count(), 3, "{notes}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_arguments_exit_2() {
    let dir = workdir();
    let output = output_within(api(&dir).arg("serve-everything"));
    assert_eq!(output.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}
