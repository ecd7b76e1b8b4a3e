//! `/users`: sign-up, the caller's own account, profile changes and deletion. Passwords are
//! hashed with argon2id on a blocking thread, a few at a time; responses never carry the
//! password or its hash.
//!
//! Who may do what: anyone signs up; a signed-in user reads, changes and deletes their own
//! account; an admin any account, and only an admin lists accounts or changes `is_active` and
//! `is_admin`. Anyone else asking for an account gets 404, as if it did not exist.

use std::ops::RangeInclusive;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::{
    idempotency_key::{self, Scope},
    session, user,
};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait,
    IntoActiveModel, QueryFilter, QuerySelect, TryIntoModel,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    account::{
        MAX_NAME_CHARS, mails, parse_email,
        password::{self, Password},
    },
    db::{RequestDb, error::violates_unique},
    http::{
        auth::{CurrentUser, Signed, client_address},
        conditional::{self, Changed, Current, IfMatch, IfNoneMatch},
        error::{
            ApiError, BadBody, BadBodyOrNotFound, BadListQuery, Conditional, EmailTaken,
            FieldError, Idempotent, NotFound, Refused, SignedIn,
        },
        idempotency::{self, Answer, Created, IdempotencyKey, Outcome, Replay},
        input::{Fields, FromJson, Json, PathId},
        pagination::ListQuery,
    },
    jobs,
    routes::recovery,
    state::AppState,
    throttle,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/users/me")
            .route(crate::routes::get().to(me))
            .default_service(crate::routes::allow("GET, HEAD")),
    )
    .service(
        super::resource("/users")
            .route(crate::routes::get().to(list))
            .route(web::post().to(create))
            .default_service(crate::routes::allow("GET, HEAD, POST")),
    )
    .service(
        super::resource("/users/{id}")
            .route(crate::routes::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete))
            .default_service(crate::routes::allow("GET, HEAD, PATCH, DELETE")),
    );
}

/// A user as the API shows it: never the password or its hash.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    /// Positive, assigned by the server.
    pub id: i64,
    /// Trimmed and lower-cased.
    pub email: String,
    pub name: Option<String>,
    pub is_active: bool,
    /// Administrators manage every account (never other users' notes).
    pub is_admin: bool,
    /// Whether the owner of `email` followed the verification link mailed to it; false again
    /// after a change of address.
    pub email_verified: bool,
    /// When the user signed up (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When the user last changed (RFC 3339, UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<user::Model> for UserView {
    fn from(user: user::Model) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            is_active: user.is_active,
            is_admin: user.is_admin,
            email_verified: user.email_verified,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

fn read_email(fields: &mut Fields, raw: Option<String>) -> Option<String> {
    match parse_email(&raw?) {
        Ok(email) => Some(email),
        Err(why) => {
            fields.reject("email", &why);
            None
        }
    }
}

/// A new password's length in characters.
const NEW_PASSWORD_CHARS: RangeInclusive<usize> = password::MIN_CHARS..=password::MAX_CHARS;

fn read_name(fields: &mut Fields, raw: Option<String>) -> Option<String> {
    fields.checked_text("name", raw?, 0..=MAX_NAME_CHARS)
}

/// `POST /users` body.
#[derive(Debug, ToSchema)]
pub struct NewUser {
    /// Trimmed and lower-cased before it is stored; unique.
    #[schema(format = Email)]
    pub email: String,
    #[schema(value_type = String, format = Password)]
    password: Password,
    #[schema(required = false, nullable)]
    pub name: Option<String>,
}

impl FromJson for NewUser {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let email = fields.required_string("email");
        let password = fields.required_text("password", NEW_PASSWORD_CHARS);
        let name = fields.nullable_string("name").flatten();
        let email = read_email(&mut fields, email);
        let name = read_name(&mut fields, name);
        fields.finish(|| {
            Some(Self {
                email: email?,
                password: Password::new(password?),
                name,
            })
        })
    }
}

/// `PATCH /users/{id}` body: each field optional; `"name": null` clears the name. Changing
/// one's own password needs `current_password`; `is_active` and `is_admin` are for admins.
#[derive(Debug, ToSchema)]
pub struct UserPatch {
    #[schema(format = Email, required = false, nullable = false)]
    email: Option<String>,
    #[schema(value_type = Option<String>, required = false, nullable)]
    name: Option<Option<String>>,
    /// Admins only; `false` also signs the user out everywhere.
    #[schema(required = false, nullable = false)]
    is_active: Option<bool>,
    /// Admins only.
    #[schema(required = false, nullable = false)]
    is_admin: Option<bool>,
    /// The new password; every other session of the user is signed out.
    #[schema(value_type = Option<String>, format = Password, required = false, nullable = false)]
    password: Option<Password>,
    /// The present password: needed to change one's own password.
    #[schema(value_type = Option<String>, format = Password, required = false, nullable = false)]
    current_password: Option<Password>,
}

impl FromJson for UserPatch {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let email = fields.optional_string("email");
        let name = fields.nullable_string("name");
        let is_active = fields.optional_bool("is_active");
        let is_admin = fields.optional_bool("is_admin");
        let password = fields.optional_text("password", NEW_PASSWORD_CHARS);
        let current_password = fields.optional_text("current_password", 0..=password::MAX_CHARS);
        let email = read_email(&mut fields, email);
        let name = name.map(|name| read_name(&mut fields, name));
        fields.finish(|| {
            Some(Self {
                email,
                name,
                is_active,
                is_admin,
                password: password.map(Password::new),
                current_password: current_password.map(Password::new),
            })
        })
    }
}

fn email_taken() -> ApiError {
    ApiError::Conflict("a user with this e-mail address already exists".into())
}

/// 409 "e-mail taken" for a unique violation of the index on `email`; any other error as
/// it is (a lost race stays "retry", another constraint its own conflict).
fn conflict_on_email(error: sea_orm::DbErr) -> ApiError {
    if violates_unique(&error, migration::constraints::USERS_EMAIL, "users.email") {
        return email_taken();
    }
    ApiError::from_db(&error, "user write")
}

/// List users
///
/// A page of users in id order, paged like `GET /notes`. Admins only.
#[utoipa::path(
    get, path = "/users", tag = "users", operation_id = "list_users",
    params(ListQuery),
    responses(
        (status = 200, description = "the page, in id order", body = [UserView]),
        BadListQuery,
        SignedIn,
        Refused,
    )
)]
pub async fn list(
    me: CurrentUser,
    req: HttpRequest,
    db: RequestDb,
) -> Result<HttpResponse, ApiError> {
    if !me.is_admin() {
        return Err(ApiError::Forbidden("only admins list users".into()));
    }
    let query = ListQuery::parse(req.query_string())?;
    let select = query.page(user::Entity::find(), user::Column::Id, false);
    let users: Vec<UserView> = db
        .all(select)
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    Ok(query.respond(&req, &users, |item| item.id))
}

/// Sign up
///
/// Creates a user (not an admin); then sign in with `POST /sessions`. E-mail addresses are compared trimmed and lower-cased: of two sign-ups
/// with one address, even at the same moment, exactly one succeeds and the other gets 409.
#[utoipa::path(
    post, path = "/users", tag = "users", operation_id = "create_user",
    params(IdempotencyKey),
    request_body = NewUser,
    responses(
        Created<UserView>,
        BadBody,
        EmailTaken,
        Idempotent,
    )
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    db: RequestDb,
    key: IdempotencyKey,
    Json(new): Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    // The password stays out of the fingerprint (a fast digest of it would help guess it);
    // a repeat must match the argon2id hash stored with the answer instead.
    let fingerprint = || {
        let name = new
            .name
            .as_deref()
            .map_or("-".to_owned(), |name| format!("+{name}"));
        idempotency_key::fingerprint(&["POST /users", &new.email, &name])
    };
    let Some(keyed) = key.enter(Scope::SignUp, fingerprint)? else {
        let user = insert_user(&state, &db, new).await?;
        state.jobs.now();
        return Ok(signed_up(user)?.into_response());
    };
    // A replay with another password is a guess at the account's: it counts as a failed
    // sign-in for the address from this client.
    let throttled = state
        .signin_throttle
        .client_and_email(client_address(&req), &new.email);
    // A retry of a sign-up that was answered is answered before any hashing.
    if let Some(replay) = keyed.stored(&db).await? {
        return replay_sign_up(&state, &db, replay, new.password, &throttled).await;
    }
    // Hashed outside the transaction (it takes a while); a busy hasher is 503 and stores
    // nothing. The password is kept for a repeat that another instance answered meanwhile.
    let password = Password::new(new.password.expose().to_owned());
    let hashed_password = db.without_connection(state.hasher.hash(password)).await?;
    let model = new_user(new.email, new.name, hashed_password);
    let outcome = keyed
        .run(&db, async |db| {
            let user = db.insert(model.clone()).await.map_err(conflict_on_email)?;
            recovery::queue_verification(&state, db, &user).await?;
            let (id, hash) = (user.id, user.hashed_password.clone());
            Ok(signed_up(user)?.signed_up(id, hash))
        })
        .await?;
    state.jobs.now();
    match outcome {
        // The same sign-up, answered on another instance meanwhile.
        Outcome::Replay(replay) => {
            replay_sign_up(&state, &db, replay, new.password, &throttled).await
        }
        answered @ Outcome::Answered(_) => Ok(answered.into_response()),
    }
}

/// The stored answer to a sign-up, when `password` is the one it signed up with (422
/// otherwise: the key was used for another request).
async fn replay_sign_up(
    state: &AppState,
    db: &RequestDb,
    replay: Replay,
    password: Password,
    key: &throttle::Key,
) -> Result<HttpResponse, ApiError> {
    let throttle = &state.signin_throttle;
    super::within(
        throttle,
        db,
        key,
        "too many failed attempts for this e-mail address; retry later",
    )
    .await?;
    let stored = replay.password_hash().map(str::to_owned);
    if !db
        .without_connection(state.hasher.verify(password, stored))
        .await?
    {
        throttle.count(db, key).await?;
        return Err(idempotency::reused());
    }
    Ok(replay.into_response())
}

/// Hash the password, insert the user and queue the mail that verifies their address, in
/// one transaction.
async fn insert_user(
    state: &AppState,
    db: &RequestDb,
    new: NewUser,
) -> Result<user::Model, ApiError> {
    let hashed_password = db
        .without_connection(state.hasher.hash(new.password))
        .await?;
    db.scoped(async |db| {
        let user = db
            .insert(new_user(new.email, new.name, hashed_password))
            .await
            .map_err(conflict_on_email)?;
        recovery::queue_verification(state, db, &user).await?;
        Ok(user)
    })
    .await
}

fn new_user(email: String, name: Option<String>, hashed_password: String) -> user::ActiveModel {
    user::ActiveModel {
        email: Set(email),
        name: Set(name),
        hashed_password: Set(hashed_password),
        ..user::ActiveModel::new()
    }
}

/// 201 with the user, its `Location` and its `ETag`.
fn signed_up(user: user::Model) -> Result<Answer, ApiError> {
    let version = user.version;
    let view = UserView::from(user);
    Answer::created(Some(format!("/users/{}", view.id)), Some(version), &view)
}

/// The caller
///
/// The signed-in user's own account.
#[utoipa::path(
    get, path = "/users/me", tag = "users",
    params(IfNoneMatch),
    responses(
        Current<UserView>,
        SignedIn,
    )
)]
pub async fn me(
    me: CurrentUser,
    db: RequestDb,
    cached: IfNoneMatch,
) -> Result<HttpResponse, ApiError> {
    let user = me.account(&db).await?.ok_or(ApiError::Unauthorized)?;
    Ok(cached.respond(user.version, UserView::from(user)))
}

/// 404 unless the caller may see account `id`: their own, or any for an admin.
fn visible(me: &CurrentUser, id: i64) -> Result<(), ApiError> {
    if me.id() == id || me.is_admin() {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// Get a user
///
/// One's own account, or any for an admin; anyone else's is 404.
#[utoipa::path(
    get, path = "/users/{id}", tag = "users", operation_id = "get_user",
    params(PathId, IfNoneMatch),
    responses(
        Current<UserView>,
        NotFound,
        SignedIn,
    )
)]
pub async fn get(
    db: RequestDb,
    cached: IfNoneMatch,
    Signed(me, PathId(id)): Signed<PathId>,
) -> Result<HttpResponse, ApiError> {
    visible(&me, id)?;
    let user = db
        .find_by_id::<user::Entity>(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(cached.respond(user.version, UserView::from(user)))
}

/// Change a user
///
/// Changes any of the e-mail address, name (`null` clears it) and password of one's own
/// account (any account, for an admin); only admins change `is_active` and `is_admin` (403
/// for anyone else). Changing one's own password needs `current_password` (missing: 422,
/// wrong: 403) and signs out every other session; a new password set by an admin, or
/// `is_active: false`, signs out every session of the user. All or nothing: when the new
/// address is taken (409), nothing else changes either.
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users", operation_id = "update_user",
    params(PathId, IfMatch),
    request_body = UserPatch,
    responses(
        Changed<UserView>,
        BadBodyOrNotFound,
        EmailTaken,
        Conditional,
        SignedIn,
        Refused,
    )
)]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    db: RequestDb,
    condition: IfMatch,
    Signed(me, (Json(patch), PathId(id))): Signed<(Json<UserPatch>, PathId)>,
) -> Result<HttpResponse, ApiError> {
    visible(&me, id)?;
    if !me.is_admin() && (patch.is_active.is_some() || patch.is_admin.is_some()) {
        return Err(ApiError::Forbidden(
            "only admins change is_active or is_admin".into(),
        ));
    }
    let own = me.id() == id;
    if own && (patch.password.is_some() || patch.email.is_some()) {
        let account = me.account(&db).await?.ok_or(ApiError::Unauthorized)?;
        let new_email = patch
            .email
            .as_ref()
            .is_some_and(|email| *email != account.email);
        if patch.password.is_some() || new_email {
            check_current_password(&req, &state, &db, &account, patch.current_password).await?;
        }
    }
    let hashed_password = match patch.password {
        Some(password) => Some(db.without_connection(state.hasher.hash(password)).await?),
        None => None,
    };
    // Sessions to end: a new password ends every other one (every one, when an admin set
    // another user's); deactivation ends them all.
    let keep = (own && hashed_password.is_some()).then(|| me.token_digest.clone());
    let revoke = hashed_password.is_some() || patch.is_active == Some(false);
    let changes = ProfileChanges {
        name: patch.name,
        is_active: patch.is_active,
        is_admin: patch.is_admin,
        hashed_password,
        email: patch.email,
    };
    // Explicit: the change is read, then written; a failed step rolls back every step.
    let txn = db.begin().await?;
    let changed = async {
        let (user, old_email) = apply_profile_changes(&db, id, &condition, changes).await?;
        if revoke {
            revoke_sessions(&db, id, keep.as_deref()).await?;
        }
        if let Some(old_email) = old_email {
            // The new address is verified anew; the old one hears of the change.
            recovery::queue_verification(&state, &db, &user).await?;
            let notice = mails::address_changed(&old_email, &state.settings.mail.public_url);
            jobs::queue_mail(&db, notice).await?;
        }
        Ok::<_, ApiError>(user)
    }
    .await;
    match changed {
        Ok(user) => {
            txn.commit().await?;
            state.jobs.now();
            // After the commit: this instance's next requests see the account as changed
            // (its admin flag, whether it is active) and refuse its revoked tokens.
            state.sessions.forget_user(id);
            Ok(conditional::tagged(HttpResponse::Ok(), user.version).json(UserView::from(user)))
        }
        Err(error) => {
            txn.rollback().await?;
            Err(error)
        }
    }
}

/// Changing one's own password or e-mail address needs the present password: missing is
/// 422, wrong 403. A wrong one counts as a failed sign-in for the account's address from
/// this client, and past the sign-in limit the check answers 429 without looking.
async fn check_current_password(
    req: &HttpRequest,
    state: &AppState,
    db: &RequestDb,
    account: &user::Model,
    current: Option<Password>,
) -> Result<(), ApiError> {
    let current = current.ok_or_else(|| {
        ApiError::invalid(
            "current_password",
            "is required to change your own password or e-mail address",
        )
    })?;
    let throttle = &state.signin_throttle;
    let key = throttle.client_and_email(client_address(req), &account.email);
    super::within(
        throttle,
        db,
        &key,
        "too many failed password checks for this account; retry later",
    )
    .await?;
    let stored = Some(account.hashed_password.clone());
    if db
        .without_connection(state.hasher.verify(current, stored))
        .await?
    {
        Ok(())
    } else {
        throttle.count(db, &key).await?;
        Err(ApiError::Forbidden("the current password is wrong".into()))
    }
}

/// End every session of `user`, but the one with digest `keep`.
async fn revoke_sessions(
    db: &RequestDb,
    user: i64,
    keep: Option<&str>,
) -> Result<u64, sea_orm::DbErr> {
    let mut delete = session::Entity::delete_many().filter(session::Column::UserId.eq(user));
    if let Some(keep) = keep {
        delete = delete.filter(session::Column::TokenDigest.ne(keep));
    }
    db.execute(delete).await
}

struct ProfileChanges {
    name: Option<Option<String>>,
    is_active: Option<bool>,
    is_admin: Option<bool>,
    hashed_password: Option<String>,
    email: Option<String>,
}

/// Read the user, locked until the transaction ends, check `If-Match` on it and write every
/// change in one UPDATE; a taken e-mail address is 409. The lock (`FOR UPDATE`; SQLite's
/// write transaction holds the whole database) keeps a concurrent change or delete out
/// between the check and the write: a `PATCH` racing a `DELETE` finds no user (404) or
/// finishes first.
async fn apply_profile_changes(
    db: &RequestDb,
    id: i64,
    condition: &IfMatch,
    changes: ProfileChanges,
) -> Result<(user::Model, Option<String>), ApiError> {
    let current = db
        .all(user::Entity::find_by_id(id).lock_exclusive())
        .await?
        .pop()
        .ok_or(ApiError::NotFound)?;
    if !condition.holds(current.version) {
        return Err(ApiError::PreconditionFailed);
    }
    let old_email = current.email.clone();
    let mut user = current.into_active_model();
    if let Some(name) = changes.name {
        user.name.set_if_not_equals(name);
    }
    if let Some(is_active) = changes.is_active {
        user.is_active.set_if_not_equals(is_active);
    }
    if let Some(is_admin) = changes.is_admin {
        user.is_admin.set_if_not_equals(is_admin);
    }
    if let Some(hashed_password) = changes.hashed_password {
        // A new hash every time (a new salt), even for the same password: always a change.
        user.hashed_password = Set(hashed_password);
    }
    let new_email = changes.email.filter(|email| *email != old_email);
    if let Some(email) = &new_email {
        user.email = Set(email.clone());
        user.email_verified = Set(false);
    }
    if !user.is_changed() {
        // Nothing to change: no write, and `updated_at` and the tag stay as they are.
        return Ok((user.try_into_model()?, None));
    }
    // The row is locked: the update matches it.
    let user = db
        .update_where(user, Condition::all().add(user::Column::Id.eq(id)))
        .await
        .map_err(conflict_on_email)?
        .ok_or(ApiError::NotFound)?;
    Ok((user, new_email.map(|_| old_email)))
}

/// Delete a user
///
/// One's own account, or any for an admin; deletes the user's notes and sessions too.
#[utoipa::path(
    delete, path = "/users/{id}", tag = "users", operation_id = "delete_user",
    params(PathId, IfMatch),
    responses(
        (status = 204, description = "deleted, with the user's notes and sessions"),
        NotFound,
        Conditional,
        SignedIn,
    )
)]
pub async fn delete(
    db: RequestDb,
    state: web::Data<AppState>,
    condition: IfMatch,
    Signed(me, PathId(id)): Signed<PathId>,
) -> Result<HttpResponse, ApiError> {
    visible(&me, id)?;
    let delete = user::Entity::delete_many().filter(user::Column::Id.eq(id));
    let exists = async || Ok(db.find_by_id::<user::Entity>(id).await?.is_some());
    condition
        .delete(&db, delete, user::Column::Version, exists)
        .await?;
    // After the delete committed (autocommit): the user's tokens are refused here at once.
    state.sessions.forget_user(id);
    Ok(HttpResponse::NoContent().finish())
}
