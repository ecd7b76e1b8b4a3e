//! A [`Mail`] as an RFC 5322 message. lettre validates addresses but encodes any subject, so
//! line breaks are refused here first: user text never becomes a header line of its own.

use lettre::{
    Message,
    message::{Mailbox, header::ContentType},
};

use super::{Mail, SendError};

/// `mail` from `from`, with `Date`, a generated `Message-ID` and a UTF-8 plain-text body.
pub(super) fn build(from: &str, mail: &Mail) -> Result<Message, SendError> {
    let from = mailbox(from, "the sender is not one address on one line")?;
    let to = mailbox(&mail.to, "the recipient is not one address on one line")?;
    if spans_lines(&mail.subject) {
        return Err(SendError::Invalid("the subject holds a line break"));
    }
    Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject.clone())
        .date_now()
        .message_id(None)
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|_| SendError::Invalid("lettre cannot build the message"))
}

/// `raw` as one mailbox (`ann@example.com` or `Ann <ann@example.com>`), or `refusal`.
fn mailbox(raw: &str, refusal: &'static str) -> Result<Mailbox, SendError> {
    if spans_lines(raw) {
        return Err(SendError::Invalid(refusal));
    }
    raw.parse().map_err(|_| SendError::Invalid(refusal))
}

fn spans_lines(text: &str) -> bool {
    text.contains(['\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(to: &str, subject: &str) -> Mail {
        Mail {
            to: to.into(),
            subject: subject.into(),
            body: "Hello".into(),
        }
    }

    fn refusal(from: &str, mail: &Mail) -> SendError {
        build(from, mail).expect_err("a header injection was accepted")
    }

    #[test]
    fn refuses_a_line_break_in_the_subject_or_an_address() {
        let injected = "x@example.com\r\nBcc: victim@example.com";

        for error in [
            refusal(
                "notes@localhost",
                &mail("ann@example.com", "Hi\r\nBcc: victim@example.com"),
            ),
            refusal("notes@localhost", &mail("ann@example.com", "Hi\nX-Evil: 1")),
            refusal("notes@localhost", &mail(injected, "Hi")),
            refusal(injected, &mail("ann@example.com", "Hi")),
        ] {
            assert!(matches!(error, SendError::Invalid(_)), "{error:?}");
            assert!(error.is_permanent());
            assert!(!error.reason().contains("victim"), "{}", error.reason());
        }
    }

    #[test]
    fn builds_a_utf8_plain_text_mail_from_a_named_sender() {
        let message = build(
            "Notes <notes@localhost>",
            &mail("Ann <ann@example.com>", "Grüße"),
        )
        .unwrap();

        let text = String::from_utf8(message.formatted()).unwrap();

        assert!(text.contains("From: Notes <notes@localhost>"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert!(text.contains("Message-ID: <"), "{text}");
    }
}
