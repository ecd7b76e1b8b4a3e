//! The `api` binary as a process, for what only a process shows (its log, its signals, its
//! command line, a database that moves under it): started on a free port with its log kept,
//! asked over HTTP/1.1 on a connection per request, stopped with SIGTERM.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long the server has to say it serves, and to exit after SIGTERM.
const WITHIN: Duration = Duration::from_secs(60);

/// The `api` binary, serving; its log lines (standard error) are kept until it stops.
pub struct ApiProcess {
    child: Option<Child>,
    /// Where it serves (`host:port`).
    pub address: String,
    logs: Arc<Mutex<Vec<String>>>,
    drain: Option<JoinHandle<()>>,
}

/// One answer: status, headers (names in lower case), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Answer {
    /// The body as JSON (null when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(own, _)| own == name)
            .map(|(_, value)| value.clone())
    }
}

impl ApiProcess {
    /// Start `command` (with `PORT=0` and `LOG_FORMAT=json`, so it says where it serves) and
    /// wait until it logs `serving`; `Err` with its log lines when it exits first, or has not
    /// served within a minute.
    pub fn start(command: &mut Command) -> Result<Self, Vec<String>> {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (serving, address) = mpsc::channel();
        let collected = Arc::clone(&logs);
        let drain = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let log: Value = serde_json::from_str(&line).unwrap_or_default();
                if log["message"] == "serving" {
                    let _ = serving.send(log["address"].as_str().unwrap_or_default().to_owned());
                }
                collected.lock().unwrap().push(line);
            }
        });
        match address.recv_timeout(WITHIN) {
            Ok(address) => Ok(Self {
                child: Some(child),
                address,
                logs,
                drain: Some(drain),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = drain.join();
                let lines = logs.lock().unwrap().clone();
                Err(lines)
            }
        }
    }

    /// One request on a connection of its own, with `token` as its bearer token and
    /// `cookie` as its `Cookie`, if any.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        cookie: Option<&str>,
    ) -> Answer {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let cookie = cookie
            .map(|cookie| format!("Cookie: {cookie}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}{cookie}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|e| panic!("{method} {path}: no answer ({e})"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        Answer {
            status,
            headers,
            text: body.to_owned(),
        }
    }

    /// [`ApiProcess::send`] without a cookie: the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String) {
        let answer = self.send(method, path, token, body, None);
        (answer.status, answer.text)
    }

    /// SIGTERM; every log line it wrote. Panics (with its last lines) unless it exits
    /// successfully within a minute; it is killed then.
    pub fn stop(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let asked = Instant::now();
        let exit = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break exit;
            }
            if asked.elapsed() > WITHIN {
                let _ = child.kill();
                let _ = child.wait();
                let logs = self.logs();
                let tail = &logs[logs.len().saturating_sub(30)..];
                panic!("the api did not exit within {WITHIN:?} of SIGTERM: {tail:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(drain) = self.drain.take() {
            drain.join().unwrap();
        }
        assert!(exit.success(), "exit after SIGTERM: {exit:?}");
        self.logs()
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ApiProcess {
    /// A test that fails midway leaves no server running, and its log in a file.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            let path = std::env::temp_dir().join(format!("api-{}.log", child.id()));
            if std::fs::write(&path, self.logs().join("\n")).is_ok() {
                eprintln!("the api's log: {}", path.display());
            }
        }
    }
}
