//! `/users`: sign-up, profile changes and deletion. Passwords are hashed with argon2id on a
//! blocking thread; responses never carry the password or its hash.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use entity::user;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use validator::ValidateEmail;

use crate::{
    db::RequestDb,
    http::{
        error::{
            ApiError, BadBody, BadBodyOrNotFound, BadListQuery, EmailTaken, FieldError, NotFound,
        },
        input::{Fields, FromJson, Json, PathId},
        pagination::ListQuery,
    },
    password::{self, Password},
};
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
    /// Positive, assigned by the server.
    pub id: i64,
    /// Trimmed and lower-cased.
    pub email: String,
    pub name: Option<String>,
    pub is_active: bool,
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
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
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
        .check_text("password", &raw, password::MIN_CHARS, password::MAX_CHARS)
        .then(|| Password::new(raw))
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

/// List users
///
/// A page of users in id order, paged like `GET /notes`.
#[utoipa::path(
    get, path = "/users", tag = "users",
    params(
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "page size (default 100)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "return users with a larger id than this one (the last id of the previous page)"),
    ),
    responses(
        (status = 200, description = "the page, in id order", body = [UserView],
            headers(("link" = String, description = "`<…>; rel=\"next\"` when the page is full"))),
        BadListQuery,
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
    let users: Vec<UserView> = db
        .all(select)
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    let last_id = users.last().map(|u| u.id);
    Ok(query.respond(&req, &users, last_id))
}

/// Sign up
///
/// Creates a user. E-mail addresses are compared trimmed and lower-cased: of two sign-ups
/// with one address, even at the same moment, exactly one succeeds and the other gets 409.
#[utoipa::path(
    post, path = "/users", tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "signed up", body = UserView,
            headers(("location" = String, description = "/users/{id}"))),
        BadBody,
        EmailTaken,
    )
)]
pub async fn create(db: RequestDb, Json(new): Json<NewUser>) -> Result<HttpResponse, ApiError> {
    let hashed_password = new.password.hash().await?;
    let user = db
        .insert(user::ActiveModel {
            email: Set(new.email),
            name: Set(new.name),
            hashed_password: Set(hashed_password),
            ..user::ActiveModel::new()
        })
        .await
        .map_err(conflict_on_email)?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", user.id)))
        .json(UserView::from(user)))
}

/// Get a user
#[utoipa::path(
    get, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "user id")),
    responses(
        (status = 200, description = "the user", body = UserView),
        NotFound,
    )
)]
pub async fn get(db: RequestDb, PathId(id): PathId) -> Result<HttpResponse, ApiError> {
    let user = db
        .find_by_id::<user::Entity>(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

/// Change a user
///
/// Changes any of the e-mail address, name (`null` clears it), active flag and password.
/// All or nothing: when the new address is taken (409), nothing else changes either.
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "user id")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "the changed user", body = UserView),
        BadBodyOrNotFound,
        EmailTaken,
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
    let changes = ProfileChanges {
        name: patch.name,
        is_active: patch.is_active,
        hashed_password,
        email: patch.email,
    };
    // Explicit: the change is read, then written; a failed step rolls back every step.
    let txn = db.begin().await?;
    let changed = apply_profile_changes(&*txn.get().await?, id, changes).await;
    match changed {
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

/// Read the user and write every change in one UPDATE; a taken e-mail address is 409.
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
    if let Some(email) = changes.email {
        user.email = Set(email);
    }
    user.update(txn).await.map_err(conflict_on_email)
}

/// Delete a user
#[utoipa::path(
    delete, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "user id")),
    responses(
        (status = 204, description = "deleted"),
        NotFound,
    )
)]
pub async fn delete(db: RequestDb, PathId(id): PathId) -> Result<HttpResponse, ApiError> {
    if db.execute(user::Entity::delete_by_id(id)).await? == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::NoContent().finish())
}
