//! `/users`: sign-up, profile changes and deletion. Passwords are hashed with argon2id on a
//! blocking thread; responses never carry the password or its hash.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use argon2::{
    Argon2,
    password_hash::{PasswordHasher, SaltString, rand_core::OsRng},
};
use chrono::{DateTime, Utc};
use entity::user;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use validator::ValidateEmail;

use crate::{
    db::RequestDb,
    error::{ApiError, FieldError},
    input::{Fields, FromJson, Json, PathId},
    openapi::Problem,
    pagination::ListQuery,
};

const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 256;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_NAME_CHARS: usize = 200;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/users")
            .route(web::get().to(list))
            .route(web::post().to(create))
            .default_service(crate::routes::allow("GET, POST")),
    )
    .service(
        super::resource("/users/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete))
            .default_service(crate::routes::allow("GET, PATCH, DELETE")),
    );
}

/// A user as the API shows it: never the password or its hash.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<user::Model> for UserView {
    fn from(user: user::Model) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            is_active: user.is_active,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// A password that meets the length rule. Its `Debug` hides it.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// A random password nobody knows (for accounts that must exist but not be used).
    pub fn random() -> Self {
        Self(SaltString::generate(&mut OsRng).to_string())
    }

    /// Hash with argon2id into a PHC string, on a blocking thread: hashing takes tens of
    /// milliseconds of CPU and must not stall an async worker.
    pub async fn hash(self) -> Result<String, ApiError> {
        web::block(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(self.0.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing task failed: {e}")))?
    }
}

fn read_email(fields: &mut Fields, raw: Option<String>) -> Option<String> {
    let email = user::normalize_email(&raw?);
    if email.chars().count() > MAX_EMAIL_CHARS {
        fields.reject(
            "email",
            &format!("must be at most {MAX_EMAIL_CHARS} characters long"),
        );
        return None;
    }
    if !email.validate_email() {
        fields.reject("email", "must be a valid e-mail address");
        return None;
    }
    Some(email)
}

fn read_password(fields: &mut Fields, raw: Option<String>) -> Option<Password> {
    let raw = raw?;
    fields
        .check_text("password", &raw, MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS)
        .then_some(Password(raw))
}

fn read_name(fields: &mut Fields, raw: Option<String>) -> Option<String> {
    let raw = raw?;
    fields
        .check_text("name", &raw, 0, MAX_NAME_CHARS)
        .then_some(raw)
}

/// `POST /users` body.
#[derive(Debug, ToSchema)]
pub struct NewUser {
    /// Trimmed and lower-cased before it is stored; unique.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 256)]
    password: Password,
    #[schema(max_length = 200, required = false, nullable)]
    pub name: Option<String>,
}

impl FromJson for NewUser {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let email = fields.required_string("email");
        let password = fields.required_string("password");
        let name = fields.nullable_string("name").flatten();
        let email = read_email(&mut fields, email);
        let password = read_password(&mut fields, password);
        let name = read_name(&mut fields, name);
        fields.finish(|| {
            Some(Self {
                email: email?,
                password: password?,
                name,
            })
        })
    }
}

/// `PATCH /users/{id}` body: each field optional; `"name": null` clears the name.
#[derive(Debug, ToSchema)]
pub struct UserPatch {
    #[schema(format = Email, max_length = 254, required = false, nullable = false)]
    email: Option<String>,
    #[schema(value_type = Option<String>, max_length = 200, required = false, nullable)]
    name: Option<Option<String>>,
    #[schema(required = false, nullable = false)]
    is_active: Option<bool>,
    #[schema(value_type = Option<String>, format = Password, min_length = 8, max_length = 256, required = false, nullable = false)]
    password: Option<Password>,
}

impl FromJson for UserPatch {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::of(value, path)?;
        let email = fields.optional_string("email");
        let name = fields.nullable_string("name");
        let is_active = fields.optional_bool("is_active");
        let password = fields.optional_string("password");
        let email = read_email(&mut fields, email);
        let password = read_password(&mut fields, password);
        let name = name.map(|name| read_name(&mut fields, name));
        fields.finish(|| {
            Some(Self {
                email,
                name,
                is_active,
                password,
            })
        })
    }
}

fn email_taken() -> ApiError {
    ApiError::Conflict("a user with this e-mail address already exists".into())
}

/// Map a unique violation (decided by the index on `email`) to 409.
fn conflict_on_email(error: sea_orm::DbErr) -> ApiError {
    match ApiError::from_db(&error, "user write") {
        ApiError::Conflict(_) => email_taken(),
        other => other,
    }
}

#[utoipa::path(
    get, path = "/users", tag = "users",
    params(
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "page size (default 100)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "the last id seen"),
    ),
    responses(
        (status = 200, description = "users by id; a full page has a Link rel=next header", body = [UserView],
            headers(("link" = String, description = "<…>; rel=\"next\" when the page is full"))),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(req: HttpRequest, db: RequestDb) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let mut select = user::Entity::find()
        .order_by_asc(user::Column::Id)
        .limit(query.limit);
    if let Some(after) = query.after {
        select = select.filter(user::Column::Id.gt(after));
    }
    let users = select.all(&db.reader()).await?;
    let last_id = users.last().map(|u| u.id);
    let views: Vec<UserView> = users.into_iter().map(UserView::from).collect();
    Ok(query.respond(&req, &views, last_id))
}

/// Sign-up. The unique index decides duplicates, so racing sign-ups give exactly one 201.
#[utoipa::path(
    post, path = "/users", tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "signed up", body = UserView,
            headers(("location" = String, description = "/users/{id}"))),
        (status = 400, description = "malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "e-mail address taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid user", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(db: RequestDb, Json(new): Json<NewUser>) -> Result<HttpResponse, ApiError> {
    let hashed_password = new.password.hash().await?;
    let txn = db.writer().await?;
    let user = user::ActiveModel {
        email: Set(new.email),
        name: Set(new.name),
        hashed_password: Set(hashed_password),
        ..user::ActiveModel::new()
    }
    .insert(&*txn)
    .await
    .map_err(conflict_on_email)?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", user.id)))
        .json(UserView::from(user)))
}

#[utoipa::path(
    get, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "user id")),
    responses(
        (status = 200, description = "the user", body = UserView),
        (status = 404, description = "no such user", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(db: RequestDb, PathId(id): PathId) -> Result<HttpResponse, ApiError> {
    let user = user::Entity::find_by_id(id)
        .one(&db.reader())
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Profile change in the explicit style: begin, apply the profile fields, then the e-mail,
/// and commit — or roll back everything when any step fails (a taken e-mail address leaves
/// the name and flags unchanged too).
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "user id")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "the changed user", body = UserView),
        (status = 400, description = "malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "e-mail address taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid change", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    db: RequestDb,
    Json(patch): Json<UserPatch>,
    // After the body, so a bad body is reported (422) whatever the id.
    PathId(id): PathId,
) -> Result<HttpResponse, ApiError> {
    let hashed_password = match patch.password {
        Some(password) => Some(password.hash().await?),
        None => None,
    };
    let request_txn = db.writer().await?;
    let txn = request_txn.begin().await?;
    let changes = ProfileChanges {
        name: patch.name,
        is_active: patch.is_active,
        hashed_password,
        email: patch.email,
    };
    match apply_profile_changes(&txn, id, changes).await {
        Ok(user) => {
            txn.commit().await?;
            Ok(HttpResponse::Ok().json(UserView::from(user)))
        }
        Err(error) => {
            txn.rollback().await?;
            Err(error)
        }
    }
}

struct ProfileChanges {
    name: Option<Option<String>>,
    is_active: Option<bool>,
    hashed_password: Option<String>,
    email: Option<String>,
}

async fn apply_profile_changes(
    txn: &DatabaseTransaction,
    id: i64,
    changes: ProfileChanges,
) -> Result<user::Model, ApiError> {
    let mut user = user::Entity::find_by_id(id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound)?
        .into_active_model();
    if let Some(name) = changes.name {
        user.name = Set(name);
    }
    if let Some(is_active) = changes.is_active {
        user.is_active = Set(is_active);
    }
    if let Some(hashed_password) = changes.hashed_password {
        user.hashed_password = Set(hashed_password);
    }
    let user = user.update(txn).await?;
    let Some(email) = changes.email.filter(|email| *email != user.email) else {
        return Ok(user);
    };
    let mut user = user.into_active_model();
    user.email = Set(email);
    user.update(txn).await.map_err(conflict_on_email)
}

#[utoipa::path(
    delete, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "user id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such user", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(db: RequestDb, PathId(id): PathId) -> Result<HttpResponse, ApiError> {
    let txn = db.writer().await?;
    let result = user::Entity::delete_by_id(id).exec(&*txn).await?;
    if result.rows_affected == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::NoContent().finish())
}
