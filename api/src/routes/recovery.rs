//! `/password-resets` and `/email-verifications`: recovering an account by mail, and
//! proving an address.
//!
//! A request for a reset answers the same 202 — status, body, headers and time — whether
//! or not the address has an account: the work for an account (a token, a queued mail) is
//! done inside a fixed time ([`ANSWER_AFTER`]) and the answer waits for it to pass either
//! way. Tokens are 256 random bits, stored as digests, good once, for one address, until
//! they expire; a newer token of the same purpose voids the older ones. Every unusable token
//! — unknown, used, expired, for an address the account no longer has — is the same 400.
//! The mails are queued in the transaction of the change ([`crate::jobs`]): a request never
//! waits for SMTP.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use entity::{
    account_token::{self, Purpose},
    session, user,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
    sea_query::Expr,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    account::{
        mails, parse_email,
        password::{self, Password},
    },
    db::RequestDb,
    http::{
        auth::{CurrentUser, client_address},
        error::{ApiError, BadBody, FieldError, SignedIn, Throttled},
        input::{Fields, FromJson, Json},
    },
    jobs,
    state::AppState,
};

/// Every answer to a reset request leaves after this long, whatever was done for it.
pub const ANSWER_AFTER: Duration = Duration::from_millis(250);
/// How long an address-verification link works.
pub const VERIFICATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest token accepted (a real one is 64 hex characters).
pub const MAX_TOKEN_CHARS: usize = 128;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/password-resets")
            .route(web::post().to(request_reset))
            .default_service(super::allow("POST")),
    )
    .service(
        super::resource("/password-resets/confirm")
            .route(web::post().to(confirm_reset))
            .default_service(super::allow("POST")),
    )
    .service(
        super::resource("/email-verifications")
            .route(web::post().to(request_verification))
            .default_service(super::allow("POST")),
    )
    .service(
        super::resource("/email-verifications/confirm")
            .route(web::post().to(confirm_verification))
            .default_service(super::allow("POST")),
    );
}

/// `POST /password-resets` body.
#[derive(Debug, ToSchema)]
pub struct ResetRequest {
    /// Compared trimmed and lower-cased.
    #[schema(format = Email)]
    pub email: String,
}

impl FromJson for ResetRequest {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let email = fields.required_string("email");
        // The address's form only: whether it has an account is never told.
        let email = email.and_then(|raw| match parse_email(&raw) {
            Ok(email) => Some(email),
            Err(why) => {
                fields.reject("email", &why);
                None
            }
        });
        fields.finish(|| Some(Self { email: email? }))
    }
}

/// `POST /password-resets/confirm` body.
#[derive(Debug, ToSchema)]
pub struct ResetConfirmation {
    /// The token of the mail's link (after `#reset-password=`).
    token: String,
    /// The new password.
    #[schema(value_type = String, format = Password)]
    password: Password,
}

impl FromJson for ResetConfirmation {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let token = fields.required_text("token", 1..=MAX_TOKEN_CHARS);
        let password = fields.required_text("password", password::MIN_CHARS..=password::MAX_CHARS);
        fields.finish(|| {
            Some(Self {
                token: token?,
                password: Password::new(password?),
            })
        })
    }
}

/// `POST /email-verifications/confirm` body.
#[derive(Debug, ToSchema)]
pub struct VerificationConfirmation {
    /// The token of the mail's link (after `#verify-email=`).
    token: String,
}

impl FromJson for VerificationConfirmation {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let token = fields.required_text("token", 1..=MAX_TOKEN_CHARS);
        fields.finish(|| Some(Self { token: token? }))
    }
}

/// The body of every 202 here.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    #[schema(example = "accepted")]
    pub status: &'static str,
}

fn accepted() -> HttpResponse {
    HttpResponse::Accepted().json(Accepted { status: "accepted" })
}

/// The one answer for a token that cannot be used.
fn unusable_token() -> ApiError {
    ApiError::BadRequest("the link is unknown, already used or expired".into())
}

/// Ask for a password reset
///
/// When the address belongs to an active account, mails it a link to
/// `{PUBLIC_URL}/#reset-password=TOKEN`, valid for `PASSWORD_RESET_TTL_S` (30 minutes by
/// default), once; a newer request voids older links. The answer is the same 202 either way.
/// Past `SIGNIN_MAX_FAILURES` requests for one address from one client within 15 minutes,
/// 429 — whether or not the address has an account.
#[utoipa::path(
    post, path = "/password-resets", tag = "accounts",
    request_body = ResetRequest,
    responses(
        (status = 202, description = "accepted (whether or not the address has an account)", body = Accepted),
        BadBody,
        Throttled,
    )
)]
pub async fn request_reset(
    req: HttpRequest,
    state: web::Data<AppState>,
    db: RequestDb,
    Json(request): Json<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let throttle = &state.reset_throttle;
    let key = throttle.client_and_email(client_address(&req), &request.email);
    super::within(
        throttle,
        &db,
        &key,
        "too many password resets asked for this e-mail address; retry later",
    )
    .await?;
    throttle.count(&db, &key).await?;
    let sent = send_reset(&state, &db, &request.email).await;
    // The same time on both paths; an error answers at once (it is not about the address).
    sent?;
    db.without_connection(tokio::time::sleep_until((started + ANSWER_AFTER).into()))
        .await;
    Ok(accepted())
}

/// A reset token and its mail for the active account at `email`, if there is one.
async fn send_reset(state: &AppState, db: &RequestDb, email: &str) -> Result<(), ApiError> {
    let found = db
        .all(
            user::Entity::find()
                .filter(user::Column::Email.eq(email))
                .filter(user::Column::IsActive.eq(true))
                .limit(1),
        )
        .await?
        .pop();
    let Some(account) = found else {
        return Ok(());
    };
    let ttl = state.settings.password_reset_ttl;
    let token = new_token()?;
    let mail = mails::password_reset(
        &account.email,
        &state.settings.mail.public_url,
        token.expose(),
        ttl.as_secs().div_ceil(60),
    );
    db.scoped(async |db| {
        issue(db, &account, Purpose::PasswordReset, &token, ttl).await?;
        jobs::queue_mail(db, mail).await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    state.jobs.now();
    Ok(())
}

fn new_token() -> Result<session::Token, ApiError> {
    session::Token::generate()
        .map_err(|e| ApiError::Internal(format!("no random bytes for a token: {e}")))
}

/// Store `token` for `account`'s present address, voiding its older tokens of `purpose`.
pub(crate) async fn issue(
    db: &RequestDb,
    account: &user::Model,
    purpose: Purpose,
    token: &session::Token,
    ttl: Duration,
) -> Result<(), ApiError> {
    let now = entity::now();
    void_tokens(db, account.id, purpose, now).await?;
    let ttl = chrono::Duration::from_std(ttl)
        .map_err(|e| ApiError::Internal(format!("token lifetime out of range: {e}")))?;
    db.insert(account_token::ActiveModel {
        user_id: Set(account.id),
        purpose: Set(purpose.as_str().to_owned()),
        token_digest: Set(token.digest()),
        email: Set(account.email.clone()),
        created_at: Set(now),
        expires_at: Set(now + ttl),
        used_at: Set(None),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Mark every unused token of `user` for `purpose` used.
///
/// Found by a plain read, then updated by primary key: an `UPDATE … WHERE user_id = ?` would
/// lock the index range on InnoDB (gap locks), and two sign-ups doing so at once, each then
/// inserting its token into the other's gap, deadlock.
async fn void_tokens(
    db: &RequestDb,
    user: i64,
    purpose: Purpose,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, ApiError> {
    let unused: Vec<i64> = db
        .all(
            account_token::Entity::find()
                .select_only()
                .column(account_token::Column::Id)
                .filter(account_token::Column::UserId.eq(user))
                .filter(account_token::Column::Purpose.eq(purpose.as_str()))
                .filter(account_token::Column::UsedAt.is_null())
                .into_tuple(),
        )
        .await?;
    if unused.is_empty() {
        return Ok(0);
    }
    Ok(db
        .execute(
            account_token::Entity::update_many()
                .col_expr(account_token::Column::UsedAt, Expr::value(Some(now)))
                .filter(account_token::Column::Id.is_in(unused))
                .filter(account_token::Column::UsedAt.is_null()),
        )
        .await?)
}

/// Queue a verification mail for `account`'s present address (in the request's
/// transaction).
pub(crate) async fn queue_verification(
    state: &AppState,
    db: &RequestDb,
    account: &user::Model,
) -> Result<(), ApiError> {
    let token = new_token()?;
    issue(
        db,
        account,
        Purpose::EmailVerification,
        &token,
        VERIFICATION_TTL,
    )
    .await?;
    let mail = mails::email_verification(
        &account.email,
        &state.settings.mail.public_url,
        token.expose(),
    );
    jobs::queue_mail(db, mail).await?;
    Ok(())
}

/// The token of `raw` for `purpose`, used now, and its account — if it can still be used:
/// unused, unexpired, and for the address the account has now. In the request's
/// transaction: marking it used is the claim, so of two requests with one token, one wins.
async fn redeem(db: &RequestDb, raw: &str, purpose: Purpose) -> Result<user::Model, ApiError> {
    let now = entity::now();
    let digest = session::digest(raw);
    let token = db
        .all(account_token::find_usable(&digest, purpose, now))
        .await?
        .pop()
        .ok_or_else(unusable_token)?;
    let account = db
        .find_by_id::<user::Entity>(token.user_id)
        .await?
        .filter(|account| account.email == token.email && account.is_active)
        .ok_or_else(unusable_token)?;
    let claimed = db
        .execute(
            account_token::Entity::update_many()
                .col_expr(account_token::Column::UsedAt, Expr::value(Some(now)))
                .filter(account_token::Column::Id.eq(token.id))
                .filter(account_token::Column::UsedAt.is_null()),
        )
        .await?;
    if claimed != 1 {
        return Err(unusable_token());
    }
    Ok(account)
}

/// Set a new password with a reset link
///
/// 204: the password is set, the link is used up, and every session of the user ends. An
/// unknown, used or expired link is one and the same 400; a password that breaks the rules
/// is 422.
#[utoipa::path(
    post, path = "/password-resets/confirm", tag = "accounts",
    request_body = ResetConfirmation,
    responses(
        (status = 204, description = "the password is set; every session of the user ended"),
        BadBody,
    )
)]
pub async fn confirm_reset(
    state: web::Data<AppState>,
    db: RequestDb,
    Json(confirmation): Json<ResetConfirmation>,
) -> Result<HttpResponse, ApiError> {
    // Hashed first, outside any transaction (it takes a while).
    let hashed_password = db
        .without_connection(state.hasher.hash(confirmation.password))
        .await?;
    let account = db
        .scoped(async |db| {
            let account = redeem(db, &confirmation.token, Purpose::PasswordReset).await?;
            void_tokens(db, account.id, Purpose::PasswordReset, entity::now()).await?;
            let mut changed = account.clone().into_active_model();
            changed.hashed_password = Set(hashed_password);
            db.update_where(
                changed,
                sea_orm::Condition::all().add(user::Column::Id.eq(account.id)),
            )
            .await?
            .ok_or_else(unusable_token)?;
            db.execute(
                session::Entity::delete_many().filter(session::Column::UserId.eq(account.id)),
            )
            .await?;
            Ok::<_, ApiError>(account)
        })
        .await?;
    // After the commit: this instance refuses the user's old tokens at once.
    state.sessions.forget_user(account.id);
    Ok(HttpResponse::NoContent().finish())
}

/// Ask for a new verification mail
///
/// Mails the caller's address a new link to `{PUBLIC_URL}/#verify-email=TOKEN` (older links
/// stop working). Past `SIGNIN_MAX_FAILURES` requests within 15 minutes, 429.
#[utoipa::path(
    post, path = "/email-verifications", tag = "accounts",
    responses(
        (status = 202, description = "a mail is on its way", body = Accepted),
        SignedIn,
        Throttled,
    )
)]
pub async fn request_verification(
    me: CurrentUser,
    state: web::Data<AppState>,
    db: RequestDb,
) -> Result<HttpResponse, ApiError> {
    let throttle = &state.verification_throttle;
    let key = throttle.user(me.id());
    super::within(
        throttle,
        &db,
        &key,
        "too many verification mails asked for; retry later",
    )
    .await?;
    throttle.count(&db, &key).await?;
    let account = me.account(&db).await?.ok_or(ApiError::Unauthorized)?;
    db.scoped(async |db| queue_verification(&state, db, &account).await)
        .await?;
    state.jobs.now();
    Ok(accepted())
}

/// Confirm an address with a verification link
///
/// 204: the account's address is verified (`email_verified`). An unknown, used or expired
/// link, or one for an address the account no longer has, is one and the same 400.
#[utoipa::path(
    post, path = "/email-verifications/confirm", tag = "accounts",
    request_body = VerificationConfirmation,
    responses(
        (status = 204, description = "the address is verified"),
        BadBody,
    )
)]
pub async fn confirm_verification(
    state: web::Data<AppState>,
    db: RequestDb,
    Json(confirmation): Json<VerificationConfirmation>,
) -> Result<HttpResponse, ApiError> {
    let account = db
        .scoped(async |db| {
            let account = redeem(db, &confirmation.token, Purpose::EmailVerification).await?;
            if !account.email_verified {
                let mut changed = account.clone().into_active_model();
                changed.email_verified = Set(true);
                db.update_where(
                    changed,
                    sea_orm::Condition::all().add(user::Column::Id.eq(account.id)),
                )
                .await?
                .ok_or_else(unusable_token)?;
            }
            Ok::<_, ApiError>(account)
        })
        .await?;
    state.sessions.forget_user(account.id);
    Ok(HttpResponse::NoContent().finish())
}
