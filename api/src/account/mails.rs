//! The mails an account receives: a password-reset link, an address-verification link, and
//! the notice that the account's address changed. Plain text, no remote content; the links
//! carry their token in the URL fragment, which browsers send neither to servers nor in
//! `Referer`.

use crate::mail::Mail;

/// The mail holding `{public_url}/#reset-password=TOKEN`, valid for `minutes`.
pub fn password_reset(to: &str, public_url: &str, token: &str, minutes: u64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Reset your password".to_owned(),
        body: format!(
            "Someone asked to reset the password of the notes account {to}.\n\
             \n\
             To choose a new password, open this link within {minutes} minutes:\n\
             \n\
             {public_url}/#reset-password={token}\n\
             \n\
             The link works once. If you did not ask for it, ignore this mail: your password \
             stays as it is.\n"
        ),
    }
}

/// The mail holding `{public_url}/#verify-email=TOKEN`.
pub fn email_verification(to: &str, public_url: &str, token: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Confirm your e-mail address".to_owned(),
        body: format!(
            "Please confirm that {to} is the address of your notes account by opening this \
             link:\n\
             \n\
             {public_url}/#verify-email={token}\n\
             \n\
             If you did not sign up or change your address, ignore this mail.\n"
        ),
    }
}

/// The notice to the old address that the account's address changed.
pub fn address_changed(old: &str, public_url: &str) -> Mail {
    Mail {
        to: old.to_owned(),
        subject: "Your e-mail address was changed".to_owned(),
        body: format!(
            "The e-mail address of the notes account {old} was just changed; mail for the \
             account now goes to the new address.\n\
             \n\
             If you did not make this change, sign in at {public_url}/ or ask for a password \
             reset there, and tell your administrator.\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_token_in_the_fragment() {
        let mail = password_reset("a@example.com", "https://notes.example", "t0k3n", 30);
        assert!(
            mail.body
                .contains("https://notes.example/#reset-password=t0k3n\n"),
            "{}",
            mail.body
        );
        assert!(mail.body.contains("30 minutes"));
        let mail = email_verification("a@example.com", "https://notes.example", "t0k3n");
        assert!(
            mail.body
                .contains("https://notes.example/#verify-email=t0k3n\n")
        );
        assert_eq!(mail.to, "a@example.com");
    }
}
