//! Mail delivery: a plain-text [`Mail`] handed to an SMTP server, or written as an `.eml`
//! file when no server is configured, so `cargo run` works without one. No database here:
//! the queue that retries lives with its caller, which asks [`SendError::is_permanent`]
//! whether trying again can help and stores [`SendError::reason`].
//!
//! The SMTP password is in no `Debug` or `Display` text of this module.

mod eml;
mod message;
mod smtp;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use lettre::{AsyncSmtpTransport, Tokio1Executor};

pub use smtp::SMTP_TIMEOUT;

/// Most characters of a [`SendError::reason`].
const MAX_REASON_CHARS: usize = 200;

/// One plain-text mail to one recipient. Its `Debug` leaves the body out: it holds tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient (`ann@example.com` or `Ann <ann@example.com>`).
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The text, sent as `text/plain; charset=utf-8`.
    pub body: String,
}

/// Where mails go: an SMTP server (its connections pooled), or a directory of `.eml` files.
/// Built once at start; a clone shares the pool.
#[derive(Clone)]
pub struct Delivery {
    via: Via,
}

#[derive(Clone)]
enum Via {
    /// `server` describes it for `Debug`, without the password.
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        server: String,
    },
    Files(PathBuf),
}

/// Why the mail settings cannot be used. No variant holds the SMTP URL's password.
#[derive(Debug, thiserror::Error)]
pub enum MailConfigError {
    /// The SMTP URL is not one of the accepted forms (the text says what is wrong with it).
    #[error("the SMTP URL {0}")]
    Url(String),
    /// TLS towards the server could not be set up.
    #[error("TLS for the SMTP server cannot be set up: {0}")]
    Tls(lettre::transport::smtp::Error),
    /// The directory for `.eml` files cannot be created.
    #[error("the mail directory cannot be created: {0}")]
    MailDir(std::io::Error),
}

/// Why a mail was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The mail cannot be built: an address does not parse, or a header would span lines.
    #[error("the mail is not valid: {0}")]
    Invalid(&'static str),
    /// The SMTP server refused the mail, or could not be reached or understood.
    #[error("SMTP {0}")]
    Smtp(lettre::transport::smtp::Error),
    /// The SMTP conversation took longer than [`SMTP_TIMEOUT`].
    #[error("the SMTP server did not answer within {} s", SMTP_TIMEOUT.as_secs())]
    Timeout,
    /// The `.eml` file could not be written.
    #[error("the mail file cannot be written: {0}")]
    File(std::io::Error),
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.via {
            Via::Smtp { server, .. } => f.debug_tuple("Delivery::Smtp").field(server).finish(),
            Via::Files(dir) => f.debug_tuple("Delivery::Files").field(dir).finish(),
        }
    }
}

/// Whether `smtp_url` is one of the forms [`Delivery::new`] takes (checked at start, before
/// anything connects; no runtime needed).
pub fn check_smtp_url(smtp_url: &str) -> Result<(), MailConfigError> {
    smtp::Server::parse(smtp_url).map(|_| ())
}

impl Delivery {
    /// Delivery through the server at `smtp_url` — `smtp://host:port` (plain),
    /// `smtp://host:port?tls=starttls` (STARTTLS required) or `smtps://host:port` (TLS from
    /// the first byte), each with optional percent-encoded `user:password@` — or, with no
    /// URL, into `.eml` files under `mail_dir` (created here).
    ///
    /// Call it inside the tokio runtime: the SMTP pool starts its idle-connection sweeper.
    pub fn new(smtp_url: Option<&str>, mail_dir: &Path) -> Result<Self, MailConfigError> {
        let via = match smtp_url {
            Some(url) => {
                let server = smtp::Server::parse(url)?;
                let description = server.to_string();
                Via::Smtp {
                    transport: server.transport()?,
                    server: description,
                }
            }
            None => {
                std::fs::create_dir_all(mail_dir).map_err(MailConfigError::MailDir)?;
                Via::Files(mail_dir.to_path_buf())
            }
        };
        Ok(Self { via })
    }

    /// Deliver `mail` from `from` (`notes@localhost` or `Notes <notes@example.com>`), with
    /// `Date` and `Message-ID` headers. Returns within about [`SMTP_TIMEOUT`].
    pub async fn send(&self, from: &str, mail: &Mail) -> Result<(), SendError> {
        let message = message::build(from, mail)?;
        match &self.via {
            Via::Smtp { transport, .. } => smtp::send(transport, message, SMTP_TIMEOUT).await,
            Via::Files(dir) => eml::write(dir, message.formatted()).await,
        }
    }
}

impl SendError {
    /// Whether sending the same mail again cannot succeed: an invalid mail, or an SMTP 5xx
    /// reply. Connection failures, timeouts, 4xx replies and file errors are worth a retry.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Invalid(_) => true,
            Self::Smtp(error) => error.is_permanent(),
            Self::Timeout | Self::File(_) => false,
        }
    }

    /// One line of at most 200 characters, safe to store and log: the SMTP reply or what
    /// failed — never the password, never the body.
    pub fn reason(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_REASON_CHARS)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::{
        io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
        net::TcpListener,
        task::JoinHandle,
    };

    fn welcome() -> Mail {
        Mail {
            to: "ann@example.com".into(),
            subject: "Welcome".into(),
            body: "Verify: http://localhost/#verify-email=abc\n".into(),
        }
    }

    /// Delivery to a one-connection SMTP server answering `RCPT` with `rcpt_reply`, and what
    /// that server received once it has accepted a message.
    async fn fake_smtp_server(rcpt_reply: &'static str) -> (Delivery, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let delivery = Delivery::new(Some(&url), Path::new(".")).unwrap();
        let received = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let (mut lines, mut seen, mut in_data) =
                (BufReader::new(read).lines(), String::new(), false);
            write.write_all(b"220 fake\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push_str(&line);
                seen.push('\n');
                let reply = match line.get(..4).unwrap_or_default() {
                    _ if in_data && line != "." => continue,
                    _ if in_data => "250 queued",
                    "RCPT" => rcpt_reply,
                    "DATA" => "354 go on",
                    _ => "250 ok",
                };
                in_data = reply.starts_with("354");
                let answered = write.write_all(format!("{reply}\r\n").as_bytes()).await;
                if answered.is_err() || reply == "250 queued" {
                    break;
                }
            }
            seen
        });
        (delivery, received)
    }

    #[tokio::test]
    async fn writes_each_mail_as_a_whole_eml_file_when_no_smtp_url_is_set() {
        let dir = std::env::temp_dir().join(format!("mail-{}", uuid::Uuid::new_v4().simple()));
        let delivery = Delivery::new(None, &dir).unwrap();

        delivery.send("notes@localhost", &welcome()).await.unwrap();

        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let eml = std::fs::read_to_string(&files[0]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files.len(), 1, "one file and no temporary left: {files:?}");
        assert_eq!(files[0].extension().unwrap(), "eml");
        let lines: Vec<&str> = eml.split("\r\n").collect();
        for start in [
            "Date: ",
            "Message-ID: <",
            "From: notes@localhost",
            "To: ann@example.com",
            "Subject: Welcome",
            "Content-Type: text/plain; charset=utf-8",
            "Verify: http://localhost/#verify-email=abc",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(start)),
                "{start} missing: {eml}"
            );
        }
    }

    #[tokio::test]
    async fn debug_shows_the_server_but_not_the_password() {
        let url = "smtp://bob:s3cr%40t@relay:2525?tls=starttls";

        let shown = format!("{:?}", Delivery::new(Some(url), Path::new(".")).unwrap());

        assert_eq!(
            shown,
            r#"Delivery::Smtp("smtp://bob@relay:2525?tls=starttls")"#
        );
    }

    #[tokio::test]
    async fn sends_over_plain_smtp_with_date_and_message_id() {
        let (delivery, received) = fake_smtp_server("250 ok").await;

        delivery.send("notes@localhost", &welcome()).await.unwrap();

        let seen = received.await.unwrap();
        for line in [
            "MAIL FROM:<notes@localhost>",
            "RCPT TO:<ann@example.com>",
            "\nDate: ",
            "\nMessage-ID: <",
            "verify-email=abc",
        ] {
            assert!(seen.contains(line), "{line:?} missing from {seen}");
        }
    }

    #[tokio::test]
    async fn a_5xx_reply_is_permanent_and_a_4xx_reply_is_not() {
        for (reply, permanent) in [
            ("550 5.1.1 no such user", true),
            ("451 4.3.0 try later", false),
        ] {
            let (delivery, _) = fake_smtp_server(reply).await;

            let error = delivery
                .send("notes@localhost", &welcome())
                .await
                .unwrap_err();

            assert_eq!(error.is_permanent(), permanent, "{reply}: {error}");
            assert!(error.reason().contains(&reply[4..]), "{}", error.reason());
        }
    }
}
