//! `/sessions`: sign in for a bearer token, sign out.
//!
//! A sign-in answers the same 401 for an unknown e-mail address, a wrong password and an
//! inactive account, after the same hashing work (an unknown address is verified against a
//! dummy hash), so neither the answer nor its time tells which. Failures are counted per
//! (client address, e-mail): past `SIGNIN_MAX_FAILURES` within 15 minutes, 429.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::{session, user};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::users::UserView;
use crate::{
    account::{
        MAX_EMAIL_CHARS,
        password::{self, Password},
    },
    db::RequestDb,
    http::{
        auth::{CurrentUser, client_address},
        error::{ApiError, BadBody, FieldError, SignedIn, Throttled},
        input::{Fields, FromJson, Json},
    },
    state::AppState,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/sessions")
            .route(web::post().to(sign_in))
            .default_service(super::allow("POST")),
    )
    .service(
        super::resource("/sessions/current")
            .route(web::delete().to(sign_out))
            .default_service(super::allow("DELETE")),
    );
}

/// `POST /sessions` body.
#[derive(Debug, ToSchema)]
pub struct Credentials {
    /// Compared trimmed and lower-cased.
    #[schema(format = Email)]
    pub email: String,
    #[schema(value_type = String, format = Password)]
    password: Password,
}

impl FromJson for Credentials {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let email = fields.required_text("email", 1..=MAX_EMAIL_CHARS);
        let password = fields.required_text("password", 1..=password::MAX_CHARS);
        fields.finish(|| {
            Some(Self {
                email: user::normalize_email(&email?),
                password: Password::new(password?),
            })
        })
    }
}

/// A new session: the token to send as `Authorization: Bearer <token>`.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// Opaque; shown only here. Keep it secret.
    pub token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// After this instant the token is refused (RFC 3339, UTC).
    pub expires_at: DateTime<Utc>,
    /// The signed-in user.
    pub user: UserView,
}

/// Sign in
///
/// Exchanges an e-mail address and password for a bearer token, valid for `SESSION_TTL_S`
/// (14 days by default) or until signed out. An unknown address, a wrong password and an
/// inactive account all answer the same 401. After `SIGNIN_MAX_FAILURES` (5) failures for one
/// address from one client within 15 minutes, 429 until the window passes.
#[utoipa::path(
    post, path = "/sessions", tag = "sessions",
    request_body = Credentials,
    responses(
        (status = 201, description = "signed in", body = SessionView),
        BadBody,
        SignedIn,
        Throttled,
    )
)]
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    db: RequestDb,
    Json(credentials): Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let throttle = &state.signin_throttle;
    let key = throttle.client_and_email(client_address(&req), &credentials.email);
    let failures = super::within(
        throttle,
        &db,
        &key,
        "too many failed sign-ins for this e-mail address; retry later",
    )
    .await?;
    let found = db
        .all(
            user::Entity::find()
                .filter(user::Column::Email.eq(credentials.email.as_str()))
                .limit(1),
        )
        .await?
        .into_iter()
        .next();
    let stored = found.as_ref().map(|user| user.hashed_password.clone());
    let matches = db
        .without_connection(state.hasher.verify(credentials.password, stored))
        .await?;
    let user = match found {
        Some(user) if matches && user.is_active => user,
        _ => {
            throttle.count(&db, &key).await?;
            return Err(ApiError::BadCredentials);
        }
    };
    if failures > 0 {
        throttle.clear(&db, &key).await?;
    }
    let token = session::Token::generate()
        .map_err(|e| ApiError::Internal(format!("no random bytes for a token: {e}")))?;
    let now = entity::now();
    let ttl = chrono::Duration::from_std(state.settings.session_ttl)
        .map_err(|e| ApiError::Internal(format!("session lifetime out of range: {e}")))?;
    let created = db
        .insert(session::ActiveModel {
            user_id: Set(user.id),
            token_digest: Set(token.digest()),
            created_at: Set(now),
            expires_at: Set(now + ttl),
            ..Default::default()
        })
        .await?;
    Ok(HttpResponse::Created().json(SessionView {
        token: token.expose().to_owned(),
        token_type: "Bearer",
        expires_at: created.expires_at,
        user: UserView::from(user),
    }))
}

/// Sign out
///
/// Ends the session of the token this request carries: it is refused from now on, by every
/// instance. Other sessions of the user stay.
#[utoipa::path(
    delete, path = "/sessions/current", tag = "sessions",
    responses(
        (status = 204, description = "signed out"),
        SignedIn,
    )
)]
pub async fn sign_out(
    me: CurrentUser,
    db: RequestDb,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    db.execute(
        session::Entity::delete_many()
            .filter(session::Column::TokenDigest.eq(me.token_digest.as_str())),
    )
    .await?;
    // After the delete committed (autocommit), so no lookup can bring the token back.
    state.sessions.forget(&me.token_digest);
    Ok(HttpResponse::NoContent().finish())
}
