//! The SMTP server an `SMTP_URL` names, and one conversation with it.

use std::{fmt, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};
use url::{Host, Url};

use super::{MailConfigError, SendError};

/// Longest a whole SMTP conversation may take. lettre bounds only the connect with its own
/// timeout, so a server that accepts and then stalls is cut off here.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the connection is protected.
#[derive(Clone, Copy)]
enum Security {
    /// No TLS (`smtp://`), for a relay on the same host or network.
    Plain,
    /// STARTTLS, refused if the server does not offer it (`smtp://…?tls=starttls`).
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// A parsed SMTP URL. No `Debug`: it holds the password; its `Display` leaves it out.
pub(super) struct Server {
    host: String,
    port: u16,
    security: Security,
    /// User name and password, percent-decoded.
    credentials: Option<(String, String)>,
}

/// An error about the URL's form; `problem` never quotes the URL.
fn invalid(problem: &str) -> MailConfigError {
    MailConfigError::Url(problem.to_owned())
}

impl Server {
    /// `raw` as a server, or what is wrong with it (never quoting it: it may hold a password).
    pub(super) fn parse(raw: &str) -> Result<Self, MailConfigError> {
        let url = Url::parse(raw).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
        let (security, default_port) = match (url.scheme(), url.query()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("tls=starttls")) => (Security::StartTls, 587),
            ("smtps", None) => (Security::Implicit, 465),
            ("smtp" | "smtps", Some(_)) => {
                return Err(invalid("takes one option only, `?tls=starttls` on smtp://"));
            }
            _ => return Err(invalid("must start with smtp:// or smtps://")),
        };
        if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(invalid(
                "has a path; expected smtp[s]://[user:password@]host[:port]",
            ));
        }
        let host = match url.host() {
            Some(Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => address.to_string(),
            _ => return Err(invalid("has no host")),
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(invalid("has a password but no user name")),
            (user, password) => Some((decode(user)?, decode(password.unwrap_or_default())?)),
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            credentials,
        })
    }

    /// A pooled transport to this server.
    pub(super) fn transport(self) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailConfigError> {
        let tls_parameters = || TlsParameters::new(self.host.clone()).map_err(MailConfigError::Tls);
        let tls = match self.security {
            Security::Plain => Tls::None,
            Security::StartTls => Tls::Required(tls_parameters()?),
            Security::Implicit => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = self.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(builder.build())
    }
}

/// The URL without its password: `smtps://bob@mail.example.com:465`.
impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, option) = match self.security {
            Security::Plain => ("smtp", ""),
            Security::StartTls => ("smtp", "?tls=starttls"),
            Security::Implicit => ("smtps", ""),
        };
        let user = self
            .credentials
            .as_ref()
            .map(|(user, _)| format!("{user}@"));
        let (host, port) = (&self.host, self.port);
        write!(
            f,
            "{scheme}://{}{host}:{port}{option}",
            user.unwrap_or_default()
        )
    }
}

/// `%XX` escapes decoded, as UTF-8.
fn decode(encoded: &str) -> Result<String, MailConfigError> {
    let bad = || invalid("has a user name or password that is not percent-encoded UTF-8");
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'%' {
            bytes.push(byte);
            continue;
        }
        let hex = rest.get(..2).and_then(|h| std::str::from_utf8(h).ok());
        let hex = hex.filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        bytes.push(
            hex.and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?,
        );
        rest = &rest[2..];
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// Hand `message` to the server within `limit` ([`SMTP_TIMEOUT`]).
pub(super) async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
    limit: Duration,
) -> Result<(), SendError> {
    match tokio::time::timeout(limit, transport.send(message)).await {
        Ok(sent) => sent.map(drop).map_err(SendError::Smtp),
        Err(_) => Err(SendError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form_and_shows_it_without_the_password() {
        for (raw, shown) in [
            ("smtp://localhost:1025", "smtp://localhost:1025"),
            (
                "smtp://relay/?tls=starttls",
                "smtp://relay:587?tls=starttls",
            ),
            (
                "smtps://bob:hunter2@mail.example.com",
                "smtps://bob@mail.example.com:465",
            ),
            ("smtp://10.0.0.5", "smtp://10.0.0.5:25"),
            ("smtp://[::1]:2525", "smtp://::1:2525"),
        ] {
            assert_eq!(Server::parse(raw).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn percent_decodes_the_credentials() {
        for (raw, user, password) in [
            (
                "smtps://bob:p%40ss%3Aw%25rd@mail.example.com",
                "bob",
                "p@ss:w%rd",
            ),
            (
                "smtp://ann%40example.com:pw@relay?tls=starttls",
                "ann@example.com",
                "pw",
            ),
            ("smtp://bob@relay", "bob", ""),
        ] {
            let credentials = Server::parse(raw).unwrap().credentials;
            assert_eq!(credentials, Some((user.into(), password.into())), "{raw}");
        }
    }

    #[test]
    fn refuses_malformed_urls_without_quoting_the_password() {
        for raw in [
            "mail.example.com:hunter2",
            "http://bob:hunter2@mail.example.com",
            "smtp://bob:hunter2@mail.example.com?tls=required",
            "smtps://bob:hunter2@mail.example.com?tls=starttls",
            "smtp://bob:hunter2@mail.example.com/inbox",
            "smtp://bob:hunter2@mail.example.com:99999",
            "smtp://:hunter2@mail.example.com",
            "smtp://bob:hunter2%ff@mail.example.com",
            "smtp://bob:hunter2%zz@mail.example.com",
            "smtps://bob:hun/ter2@mail.example.com",
            "smtp://",
        ] {
            let error = Server::parse(raw).err().expect(raw);
            let text = format!("{error} {error:?}");
            assert!(
                !text.contains("hunter2") && !text.contains("ter2"),
                "{raw}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn gives_up_on_a_server_that_accepts_and_then_says_nothing() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", silent.local_addr().unwrap());
        let transport = Server::parse(&url).unwrap().transport().unwrap();
        let to: lettre::message::Mailbox = "ann@example.com".parse().unwrap();
        let message = Message::builder()
            .from(to.clone())
            .to(to)
            .body(String::new())
            .unwrap();

        let error = send(&transport, message, Duration::from_millis(200))
            .await
            .unwrap_err();

        assert!(matches!(error, SendError::Timeout), "{error:?}");
        assert!(!error.is_permanent());
    }
}
