//! A small SMTP receiver for tests: a real RFC 5321 conversation over TCP on 127.0.0.1
//! (plain SMTP, no TLS, no authentication), so the mail queue's tests run the same client
//! code (lettre) as production. Its [`Mode`] makes it refuse or drop mail on demand, and
//! [`SmtpReceiver::stop`] then [`SmtpReceiver::start_on`] take it down and bring it back.

use std::{io, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{oneshot, watch},
    task::{JoinHandle, JoinSet},
};

/// The longest line read, line ending included (RFC 5321 §4.5.3.1.6: 1000 octets).
const MAX_LINE: usize = 1000;
/// The largest message read: a runaway client cannot grow the test's memory without end.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
const EHLO_REPLY: &str = "250-127.0.0.1 Hello\r\n250-8BITMIME\r\n250 SMTPUTF8";

/// How the receiver answers mail; changed at run time with [`SmtpReceiver::set_mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Accept and store every mail.
    #[default]
    Accept,
    /// `451` ("try again later") to `MAIL FROM`, or at the end of `DATA` if set mid-mail.
    RefuseTemporarily,
    /// `550` (never) to `MAIL FROM`, or at the end of `DATA` if set mid-mail.
    RefusePermanently,
    /// Read the whole `DATA`, then close the socket without replying or storing the mail:
    /// the client cannot tell whether it arrived.
    DropAfterData,
}

impl Mode {
    /// The reply refusing a mail in this mode, if it refuses.
    fn refusal(self) -> Option<&'static str> {
        match self {
            Self::RefuseTemporarily => Some("451 4.3.0 Try again later"),
            Self::RefusePermanently => Some("550 5.7.1 Refused"),
            Self::Accept | Self::DropAfterData => None,
        }
    }
}

/// A mail the receiver accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The `MAIL FROM` address (empty for the null sender `<>`).
    pub from: String,
    /// The `RCPT TO` addresses, in order.
    pub to: Vec<String>,
    /// The message as received: dot-unstuffed, line endings kept.
    pub data: String,
}

impl Received {
    /// The first header `name` (case-insensitive), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut lines = self.data.lines().take_while(|line| !line.is_empty());
        let named = |line: &&str| {
            line.split_once(':')
                .is_some_and(|(field, _)| field.eq_ignore_ascii_case(name))
        };
        let mut value = lines.find(named)?.split_once(':')?.1.to_owned();
        lines
            .take_while(|line| line.starts_with([' ', '\t']))
            .for_each(|folded| value.push_str(folded));
        Some(value.trim().to_owned())
    }

    /// The body (after the first empty line), decoded when `Content-Transfer-Encoding` is
    /// `quoted-printable`, as lettre sends non-ASCII text and long lines.
    pub fn body(&self) -> String {
        let body = ["\r\n\r\n", "\n\n"]
            .into_iter()
            .find_map(|blank| self.data.split_once(blank))
            .map_or("", |(_, body)| body);
        let encoding = self.header("Content-Transfer-Encoding").unwrap_or_default();
        if !encoding.eq_ignore_ascii_case("quoted-printable") {
            return body.to_owned();
        }
        String::from_utf8_lossy(&decode_quoted_printable(body)).into_owned()
    }
}

/// Quoted-printable (RFC 2045 §6.7): `=` ending a line joins it to the next; `=XX` is a byte.
fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let mut pieces = joined.split('=');
    let mut decoded = pieces.next().unwrap_or_default().as_bytes().to_vec();
    for piece in pieces {
        match piece.get(..2).map(|hex| u8::from_str_radix(hex, 16)) {
            Some(Ok(byte)) => decoded.extend([byte].iter().chain(&piece.as_bytes()[2..])),
            _ => decoded.extend(b"=".iter().chain(piece.as_bytes())),
        }
    }
    decoded
}

/// What the listener and every connection share with the [`SmtpReceiver`].
struct Shared {
    mode: watch::Sender<Mode>,
    /// Every accepted mail; a watch channel, so [`SmtpReceiver::wait_for`] wakes on each.
    mails: watch::Sender<Vec<Received>>,
}

/// A running SMTP receiver on `127.0.0.1:<port>`. Dropping it stops it, as
/// [`SmtpReceiver::stop`] does, without waiting.
pub struct SmtpReceiver {
    port: u16,
    shared: Arc<Shared>,
    /// Sending (or dropping) it stops the listener.
    stop: oneshot::Sender<()>,
    listener: JoinHandle<()>,
}

impl SmtpReceiver {
    /// A receiver on a free port, accepting and storing every mail.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// A receiver on `port` (0: a free one), e.g. the port of a stopped receiver: "the mail
    /// server is back".
    pub async fn start_on(port: u16) -> Self {
        let listener = bind(port).unwrap_or_else(|e| panic!("SMTP receiver on port {port}: {e}"));
        let port = listener
            .local_addr()
            .expect("the listener's address")
            .port();
        let shared = Arc::new(Shared {
            mode: watch::Sender::new(Mode::Accept),
            mails: watch::Sender::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let listener = tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        Self {
            port,
            shared,
            stop,
            listener,
        }
    }

    /// The port it listens on, to start it again there after [`SmtpReceiver::stop`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>`: plain SMTP in lettre's URL syntax.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How to answer from now on, on open connections too.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Every mail accepted so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.mails.borrow().clone()
    }

    /// The mails once at least `count` have been accepted; panics, naming them, after
    /// `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let mut mails = self.shared.mails.subscribe();
        let enough = mails.wait_for(|mails| mails.len() >= count);
        match tokio::time::timeout(timeout, enough).await {
            Ok(Ok(mails)) => Vec::clone(&mails),
            _ => panic!(
                "SMTP receiver: expected {count} mail(s) within {timeout:?}, got {:#?}",
                self.received()
            ),
        }
    }

    /// Close the listener (connections are refused from now on) and cut open connections.
    pub async fn stop(self) {
        let Self { stop, listener, .. } = self;
        drop(stop);
        let _ = listener.await;
    }
}

/// A listener on 127.0.0.1:`port`, with SO_REUSEADDR so that a stopped receiver's port can
/// be bound again while its closed connections wait in TIME_WAIT.
fn bind(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    socket.listen(64)
}

/// Accept connections, each in a task of its own, until `stopped`; then close them all.
async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { break };
        while connections.try_join_next().is_some() {}
        connections.spawn(converse(stream, Arc::clone(&shared)));
    }
    drop(listener);
    connections.shutdown().await;
}

/// One client's conversation, until `QUIT`, the end of the stream, an error or a dropped mail.
async fn converse(stream: TcpStream, shared: Arc<Shared>) {
    let (reader, mut writer) = stream.into_split();
    let result = conversation(&mut BufReader::new(reader), &mut writer, &shared).await;
    if let Err(error) = result
        && error.kind() == io::ErrorKind::InvalidData
    {
        let _ = reply(&mut writer, &error.to_string()).await;
    }
}

/// Greet, then answer commands; an `InvalidData` error is a violation, its message the last
/// reply ([`converse`] sends it).
async fn conversation(
    reader: &mut (impl AsyncBufRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    shared: &Shared,
) -> io::Result<()> {
    reply(writer, "220 127.0.0.1 ESMTP test receiver").await?;
    let mut session = Session::default();
    while let Some(line) = read_line(reader).await? {
        let mode = *shared.mode.borrow();
        let answer = match session.answer(&String::from_utf8_lossy(&line), mode) {
            Action::Reply(answer) => answer,
            Action::Quit => return reply(writer, "221 2.0.0 Bye").await,
            Action::ReadData => {
                reply(writer, "354 End data with <CR><LF>.<CR><LF>").await?;
                let mail = session.take_mail(&read_data(reader).await?);
                // The mode when the data ends: a test may change it while the client sends.
                let mode = *shared.mode.borrow();
                if mode == Mode::DropAfterData {
                    return Ok(());
                }
                match mode.refusal() {
                    Some(refusal) => refusal,
                    None => {
                        shared.mails.send_modify(|mails| mails.push(mail));
                        "250 2.0.0 Queued"
                    }
                }
            }
        };
        reply(writer, answer).await?;
    }
    Ok(())
}

/// A protocol violation: the conversation ends with `reply`.
fn violation(reply: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reply)
}

/// Send one reply (a multi-line one carries its inner CRLFs).
async fn reply(writer: &mut (impl AsyncWrite + Unpin), reply: &str) -> io::Result<()> {
    writer.write_all(format!("{reply}\r\n").as_bytes()).await
}

/// The next line, its ending (CRLF, or a bare LF) included; `None` at the end of the stream.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    match line.last() {
        Some(b'\n') => Ok(Some(line)),
        _ if line.len() == MAX_LINE => Err(violation("500 5.5.6 Line too long")),
        _ => Ok(None), // the end of the stream, perhaps in the middle of a line
    }
}

/// The message after `DATA`, up to the line `.`, dot-unstuffed (RFC 5321 §4.5.2).
async fn read_data(reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line = read_line(reader)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + line.len() > MAX_MESSAGE {
            return Err(violation("552 5.3.4 Message too big"));
        }
        data.extend_from_slice(line);
    }
}

/// One conversation's state: greeted yet, and the mail being built.
#[derive(Default)]
struct Session {
    greeted: bool,
    from: Option<String>,
    to: Vec<String>,
}

/// What the conversation does after a command.
enum Action {
    Reply(&'static str),
    ReadData,
    Quit,
}

impl Session {
    /// The answer to one command line, in `mode`.
    fn answer(&mut self, line: &str, mode: Mode) -> Action {
        let line = line.trim_end_matches(['\r', '\n']);
        let (verb, argument) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" | "HELO" if argument.trim().is_empty() => "501 5.5.4 Syntax: EHLO domain",
            "EHLO" | "HELO" => {
                *self = Self {
                    greeted: true,
                    ..Self::default()
                };
                if verb == "EHLO" {
                    EHLO_REPLY
                } else {
                    "250 127.0.0.1"
                }
            }
            "MAIL" if !self.greeted => "503 5.5.1 EHLO first",
            "MAIL" if self.from.is_some() => "503 5.5.1 Nested MAIL",
            "MAIL" => match (path(argument, "FROM:"), mode.refusal()) {
                (None, _) => "501 5.5.4 Syntax: MAIL FROM:<address>",
                (Some(_), Some(refusal)) => refusal,
                (Some(from), None) => {
                    self.from = Some(from.to_owned());
                    "250 2.1.0 OK"
                }
            },
            "RCPT" if self.from.is_none() => "503 5.5.1 MAIL first",
            "RCPT" => match path(argument, "TO:").filter(|to| !to.is_empty()) {
                None => "501 5.5.4 Syntax: RCPT TO:<address>",
                Some(to) => {
                    self.to.push(to.to_owned());
                    "250 2.1.5 OK"
                }
            },
            "DATA" if self.to.is_empty() => "503 5.5.1 RCPT first",
            "DATA" => return Action::ReadData,
            "RSET" => {
                (self.from, self.to) = (None, Vec::new());
                "250 2.0.0 OK"
            }
            "NOOP" => "250 2.0.0 OK",
            "QUIT" => return Action::Quit,
            "VRFY" | "EXPN" | "HELP" | "STARTTLS" | "AUTH" | "BDAT" => "502 5.5.1 Not implemented",
            _ => "500 5.5.2 Unknown command",
        };
        Action::Reply(reply)
    }

    /// The mail built with `data`; the session is ready for the next one.
    fn take_mail(&mut self, data: &[u8]) -> Received {
        Received {
            from: self.from.take().unwrap_or_default(),
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(data).into_owned(),
        }
    }
}

/// The address in `FROM:<address> PARAMETERS` (after `keyword`); the parameters
/// (`BODY=8BITMIME`, `SMTPUTF8`, …) are ignored.
fn path<'a>(argument: &'a str, keyword: &str) -> Option<&'a str> {
    let (head, rest) = argument.split_at_checked(keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest.trim_start().strip_prefix('<')?;
    rest.split_once('>').map(|(address, _)| address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOON: Duration = Duration::from_secs(5);
    const MAIL: &str = "Subject: a\r\n\tlong one\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                        ..caf=C3=A9 =\r\nau lait=3D\r\n.\r\n";

    /// A raw SMTP client: writes what it is given, reads whole (multi-line) replies.
    struct Client(BufReader<TcpStream>);

    impl Client {
        async fn connect(port: u16) -> Self {
            let stream = TcpStream::connect(("127.0.0.1", port)).await;
            let mut client = Self(BufReader::new(stream.expect("connected")));
            client.expect("", "220 ").await;
            client
        }

        /// Write `raw` and read the reply (empty once the server has hung up); panic unless
        /// it begins with `code`.
        async fn expect(&mut self, raw: &str, code: &str) -> String {
            self.0.write_all(raw.as_bytes()).await.expect("sent");
            let mut reply = String::new();
            let read = async {
                loop {
                    let mut line = String::new();
                    if self.0.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break; // hung up
                    }
                    reply.push_str(&line);
                    if line.get(3..4) != Some("-") {
                        break; // the reply's last line
                    }
                }
            };
            tokio::time::timeout(SOON, read)
                .await
                .expect("a reply or a hang-up");
            assert!(
                reply.starts_with(code),
                "{raw:?}: expected {code}, got {reply:?}"
            );
            reply
        }

        /// `EHLO`, `MAIL FROM`, `RCPT TO` and `DATA`, as lettre begins a mail.
        async fn begin_mail(&mut self) {
            self.expect("EHLO client.test\r\n", "250").await;
            self.expect("MAIL FROM:<a@example.com>\r\n", "250").await;
            self.expect("RCPT TO:<b@example.com>\r\n", "250").await;
            self.expect("DATA\r\n", "354").await;
        }
    }

    #[tokio::test]
    async fn stores_an_accepted_mail_with_its_envelope_as_sent() {
        let receiver = SmtpReceiver::start().await;
        let mut client = Client::connect(receiver.port()).await;

        let ehlo = client.expect("EHLO client.test\r\n", "250-").await;
        let from = "MAIL FROM:<alice@example.com> BODY=8BITMIME SMTPUTF8\r\n";
        client.expect(from, "250").await;
        client.expect("RCPT TO:<bob@example.com>\r\n", "250").await;
        client
            .expect("RCPT TO:<carol@example.com>\r\n", "250")
            .await;
        client.expect("DATA\r\n", "354").await;
        client.expect(MAIL, "250").await;
        client.expect("QUIT\r\n", "221").await;

        assert!(ehlo.contains("\r\n250-8BITMIME\r\n") && ehlo.ends_with("\r\n250 SMTPUTF8\r\n"));
        let mails = receiver.wait_for(1, SOON).await;
        assert_eq!(
            (mails[0].from.as_str(), mails.len()),
            ("alice@example.com", 1)
        );
        assert_eq!(mails[0].to, ["bob@example.com", "carol@example.com"]);
        assert!(
            mails[0]
                .data
                .ends_with("\r\n\r\n.caf=C3=A9 =\r\nau lait=3D\r\n")
        );
        assert_eq!(mails[0].header("SUBJECT").as_deref(), Some("a\tlong one"));
        assert_eq!(mails[0].header("To"), None);
        assert_eq!(mails[0].body(), ".café au lait=\r\n");
    }

    #[tokio::test]
    async fn refuses_mail_temporarily_or_permanently_as_the_mode_says() {
        let receiver = SmtpReceiver::start().await;
        let mut client = Client::connect(receiver.port()).await;
        client.expect("EHLO client.test\r\n", "250").await;

        receiver.set_mode(Mode::RefuseTemporarily);
        client.expect("MAIL FROM:<a@example.com>\r\n", "451").await;
        receiver.set_mode(Mode::RefusePermanently);
        client.expect("MAIL FROM:<a@example.com>\r\n", "550").await;
        receiver.set_mode(Mode::Accept);
        client.begin_mail().await;
        receiver.set_mode(Mode::RefuseTemporarily);
        client.expect(MAIL, "451").await;

        assert!(receiver.received().is_empty());
    }

    #[tokio::test]
    async fn drops_the_connection_after_data_without_replying() {
        let receiver = SmtpReceiver::start().await;
        receiver.set_mode(Mode::DropAfterData);
        let mut client = Client::connect(receiver.port()).await;
        client.begin_mail().await;

        let reply = client.expect(MAIL, "").await;

        assert_eq!(reply, "", "hung up without a reply");
        assert!(receiver.received().is_empty());
    }

    #[tokio::test]
    async fn enforces_the_command_order_and_answers_every_command() {
        let receiver = SmtpReceiver::start().await;
        let mut client = Client::connect(receiver.port()).await;

        client.expect("MAIL FROM:<a@example.com>\r\n", "503").await;
        client.expect("HELO\r\n", "501").await;
        client.expect("helo client.test\n", "250").await;
        client.expect("RCPT TO:<b@example.com>\r\n", "503").await;
        client.expect("MAIL FROM:a@example.com\r\n", "501").await;
        client.expect("MAIL FROM:<>\r\n", "250").await;
        client.expect("MAIL FROM:<>\r\n", "503").await;
        client.expect("DATA\r\n", "503").await;
        client.expect("RSET\r\n", "250").await;
        client.expect("NOOP\r\n", "250").await;
        client.expect("VRFY b@example.com\r\n", "502").await;
        client.expect("FROB\r\n", "500").await;
        client.expect(&"N".repeat(MAX_LINE), "500 5.5.6").await;
        assert_eq!(
            client.expect("", "").await,
            "",
            "hung up after an overlong line"
        );
    }

    #[tokio::test]
    async fn refuses_connections_once_stopped_and_restarts_on_the_same_port() {
        let receiver = SmtpReceiver::start().await;
        let port = receiver.port();
        let mut open = Client::connect(port).await;

        receiver.stop().await;

        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
        assert_eq!(open.expect("", "").await, "", "open connections are closed");
        let back = SmtpReceiver::start_on(port).await;
        assert_eq!(back.url(), format!("smtp://127.0.0.1:{port}"));
        Client::connect(port).await.expect("QUIT\r\n", "221").await;
    }

    #[tokio::test]
    #[should_panic(expected = "expected 1 mail(s) within 50ms, got []")]
    async fn wait_for_panics_naming_what_arrived() {
        let receiver = SmtpReceiver::start().await;

        receiver.wait_for(1, Duration::from_millis(50)).await;
    }
}
