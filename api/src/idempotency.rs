//! `Idempotency-Key` on `POST /notes`, `POST /notes/bulk` and `POST /users`: a retry of a
//! request that was answered gets the first answer again, and writes nothing.
//!
//! After the IETF httpapi draft "The Idempotency-Key HTTP Header Field". A keyed request:
//!
//! 1. *claims* its key — a row in `idempotency_keys` with no answer yet, committed on its
//!    own so that a concurrent repeat sees it (409) instead of waiting on it;
//! 2. does its work and *completes* the row with its answer (status, body, `Location`,
//!    `ETag`) in the same transaction as the work: the answer is stored exactly when the work
//!    is, and a crash between them leaves neither;
//! 3. on failure (any error, a 5xx above all) *releases* the claim, so a retry starts
//!    afresh; a request dropped midway (its client went away) releases it from a task, and
//!    one whose process died is taken over after the lease
//!    ([`entity::idempotency_key::IN_FLIGHT_LEASE_S`]).
//!
//! A repeat is compared by fingerprint: a digest of the route and the parsed body (so
//! `{"text":"a"}` and `{"completed":false,"text":"a"}` are one request). Where this deviates
//! from the draft: the key is taken as the header's raw value (1 to 255 visible ASCII
//! characters; a draft-style quoted string works, its quotes included), not parsed as a
//! structured-field string; a repeat in flight is 409 rather than waiting; only successful
//! answers are stored (an error releases the key, and the repeat is answered afresh, which
//! for a validation error is the same answer); and a sign-up's password never enters the
//! fingerprint — a repeated sign-up's password is checked against the argon2id hash stored
//! with the answer (the hash the account got, so no extra hashing).

use std::time::Duration;

use actix_web::{
    FromRequest, HttpRequest, HttpResponse,
    dev::Payload,
    http::{StatusCode, header},
    web,
};
use entity::idempotency_key::{self, Scope};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    sea_query::OnConflict,
};
use serde::Serialize;

use crate::{
    db::RequestDb,
    http::{conditional, error::ApiError},
    state::AppState,
};

/// The longest key taken.
const MAX_KEY_CHARS: usize = 255;
/// Claims tried before answering 409 (each lost only to a concurrent claim or clean-up).
const CLAIM_ATTEMPTS: usize = 3;
/// Response header of a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// Extractor: the request's `Idempotency-Key`, if it sent one; 400 when it is not 1 to 255
/// visible ASCII characters or comes more than once. Take it as
/// `Result<IdempotencyKey, ApiError>` in protected handlers (see `PathId`).
pub struct IdempotencyKey {
    key: Option<String>,
    ttl: Duration,
}

impl IdempotencyKey {
    fn parse(req: &HttpRequest) -> Result<Self, ApiError> {
        let ttl = req
            .app_data::<web::Data<AppState>>()
            .map_or(Duration::from_secs(86_400), |state| {
                state.settings.idempotency_ttl
            });
        let mut values = req.headers().get_all("idempotency-key");
        let Some(value) = values.next() else {
            return Ok(Self { key: None, ttl });
        };
        let malformed = || {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be one header of 1 to {MAX_KEY_CHARS} visible ASCII characters"
            ))
        };
        if values.next().is_some() {
            return Err(malformed());
        }
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_KEY_CHARS
            || !bytes.iter().all(|b| b.is_ascii_graphic())
        {
            return Err(malformed());
        }
        let key = String::from_utf8(bytes.to_vec()).map_err(|_| malformed())?;
        Ok(Self {
            key: Some(key),
            ttl,
        })
    }

    /// The key, if the request has one.
    pub fn get(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Claim the key for a request with `fingerprint` in `scope`: the stored answer when
    /// the same request was answered before, 409 while it is still in flight, 422 when the
    /// key was used for another request.
    pub async fn begin(
        &self,
        db: &RequestDb,
        scope: Scope,
        fingerprint: String,
    ) -> Result<Begun, ApiError> {
        let key = self.key.as_deref().expect("begin is called with a key");
        let claim = idempotency_key::new_claim()
            .map_err(|e| ApiError::Internal(format!("no random claim: {e}")))?;
        for _ in 0..CLAIM_ATTEMPTS {
            let now = entity::now();
            let expires_at =
                now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::days(1));
            let row = idempotency_key::ActiveModel {
                scope: Set(scope.as_str()),
                user_id: Set(scope.user_id()),
                key: Set(key.to_owned()),
                fingerprint: Set(fingerprint.clone()),
                claim: Set(claim.clone()),
                status: Set(None),
                location: Set(None),
                etag: Set(None),
                body: Set(None),
                password_hash: Set(None),
                created_at: Set(now),
                expires_at: Set(expires_at),
                ..Default::default()
            };
            // A conflict on (scope, key) is no error: the row is read back below. (MySQL
            // has no DO NOTHING; `scope = scope` changes nothing, and its affected-row count
            // does not tell an insert from a conflict, so it always reads back.)
            let mut on_conflict =
                OnConflict::columns([idempotency_key::Column::Scope, idempotency_key::Column::Key]);
            match db.backend() {
                DbBackend::MySql => on_conflict.do_nothing_on([idempotency_key::Column::Scope]),
                _ => on_conflict.do_nothing(),
            };
            let insert = idempotency_key::Entity::insert(row.clone()).on_conflict(on_conflict);
            let inserted = db.execute(insert).await?;
            if inserted == 1 && db.backend() != DbBackend::MySql {
                return Ok(Begun::Claimed(Claim::new(db, key, scope, claim)));
            }
            let Some(stored) = db.all(idempotency_key::find(scope, key)).await?.pop() else {
                continue; // released or purged meanwhile: claim again
            };
            if stored.claim == claim {
                return Ok(Begun::Claimed(Claim::new(db, key, scope, claim)));
            }
            if idempotency_key::is_stale(&stored, now) {
                // Expired, or claimed by a request that never completed: take it over, if
                // nobody else did first.
                let take_over = idempotency_key::Entity::update_many()
                    .set(idempotency_key::ActiveModel {
                        id: sea_orm::ActiveValue::NotSet,
                        scope: sea_orm::ActiveValue::NotSet,
                        key: sea_orm::ActiveValue::NotSet,
                        ..row
                    })
                    .filter(idempotency_key::Column::Id.eq(stored.id))
                    .filter(idempotency_key::Column::Claim.eq(stored.claim));
                if db.execute(take_over).await? == 1 {
                    return Ok(Begun::Claimed(Claim::new(db, key, scope, claim)));
                }
                continue;
            }
            if stored.fingerprint != fingerprint {
                return Err(reused());
            }
            if stored.status.is_none() {
                return Err(ApiError::InProgress);
            }
            return Ok(Begun::Replay(Replay(stored)));
        }
        Err(ApiError::InProgress)
    }
}

/// 422: the key was first used for another request.
pub fn reused() -> ApiError {
    ApiError::invalid(
        "Idempotency-Key",
        "was used for a different request; send a new key for a new request",
    )
}

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Self::parse(req))
    }
}

/// What claiming a key found.
pub enum Begun {
    /// The same request was answered before: send its answer again.
    Replay(Replay),
    /// The key is this request's: do the work with [`Claim::run`].
    Claimed(Claim),
}

/// A stored answer, to send again.
pub struct Replay(idempotency_key::Model);

impl Replay {
    /// The password hash a sign-up stored with its answer.
    pub fn password_hash(&self) -> Option<&str> {
        self.0.password_hash.as_deref()
    }

    /// The stored answer, marked `Idempotent-Replayed: true`.
    pub fn into_response(self) -> HttpResponse {
        let key = self.0;
        let answer = Answer {
            status: u16::try_from(key.status.unwrap_or(200)).unwrap_or(200),
            location: key.location,
            etag: key.etag,
            body: key.body.unwrap_or_default(),
            owner: None,
            password_hash: None,
        };
        let mut response = answer.into_response();
        response.headers_mut().insert(
            header::HeaderName::from_static(REPLAYED),
            header::HeaderValue::from_static("true"),
        );
        response
    }
}

/// A successful answer to a keyed request, as sent and as stored.
pub struct Answer {
    status: u16,
    location: Option<String>,
    etag: Option<String>,
    body: String,
    /// The account a sign-up created: the key goes with it when it is deleted.
    owner: Option<i64>,
    /// A sign-up's password hash, stored with the answer (never sent).
    password_hash: Option<String>,
}

impl Answer {
    /// 201 with `body`, and for a single resource its `Location` and `ETag`.
    pub fn created(
        location: Option<String>,
        version: Option<i64>,
        body: &impl Serialize,
    ) -> Result<Self, ApiError> {
        let body = serde_json::to_string(body)
            .map_err(|e| ApiError::Internal(format!("cannot serialise an answer: {e}")))?;
        Ok(Self {
            status: StatusCode::CREATED.as_u16(),
            location,
            etag: version.map(|v| conditional::etag(v).to_string()),
            body,
            owner: None,
            password_hash: None,
        })
    }

    /// The same answer, noting the account it created and that account's password hash: the
    /// key goes with the account, and a repeat must carry the same password.
    pub fn signed_up(mut self, user: i64, password_hash: String) -> Self {
        self.owner = Some(user);
        self.password_hash = Some(password_hash);
        self
    }

    /// The answer as a response.
    pub fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = HttpResponse::build(status);
        response.content_type("application/json");
        if let Some(location) = self.location {
            response.insert_header((header::LOCATION, location));
        }
        if let Some(etag) = self.etag {
            response.insert_header((header::ETAG, etag));
        }
        response.body(self.body)
    }
}

/// A claimed key: this request answers it. Dropped without completing (the request was
/// cancelled), it releases the key from a task.
pub struct Claim {
    db: RequestDb,
    scope: Scope,
    key: String,
    claim: String,
    armed: bool,
}

impl Claim {
    fn new(db: &RequestDb, key: &str, scope: Scope, claim: String) -> Self {
        Self {
            db: db.clone(),
            scope,
            key: key.to_owned(),
            claim,
            armed: true,
        }
    }

    /// Do `work` in the request's transaction and store its answer in the same one,
    /// committed before the answer is sent. When `work` (or the commit) fails, the key is
    /// released and the error answered.
    pub async fn run(
        mut self,
        work: impl AsyncFnOnce(&DatabaseTransaction) -> Result<Answer, ApiError>,
    ) -> Result<HttpResponse, ApiError> {
        let db = self.db.clone();
        let complete = self.complete_statement();
        let outcome = db
            .scoped(async move |txn| {
                let answer = work(txn).await?;
                let mut complete = complete;
                complete = complete.col_expr(
                    idempotency_key::Column::Status,
                    i32::from(answer.status).into(),
                );
                complete = complete.col_expr(
                    idempotency_key::Column::Location,
                    answer.location.clone().into(),
                );
                complete =
                    complete.col_expr(idempotency_key::Column::Etag, answer.etag.clone().into());
                complete =
                    complete.col_expr(idempotency_key::Column::Body, answer.body.clone().into());
                if let Some(owner) = answer.owner {
                    complete =
                        complete.col_expr(idempotency_key::Column::UserId, Some(owner).into());
                }
                if let Some(hash) = &answer.password_hash {
                    complete = complete.col_expr(
                        idempotency_key::Column::PasswordHash,
                        Some(hash.clone()).into(),
                    );
                }
                if complete.exec(txn).await?.rows_affected == 0 {
                    // Taken over after the lease: the other request answers this key.
                    return Err(ApiError::InProgress);
                }
                Ok(answer)
            })
            .await;
        match outcome {
            Ok(answer) => {
                self.armed = false;
                Ok(answer.into_response())
            }
            Err(error) => {
                self.release().await;
                Err(error)
            }
        }
    }

    /// Give the key up without an answer (the request failed before its work): a retry
    /// starts afresh.
    pub async fn release(mut self) {
        self.armed = false;
        if let Err(error) = self.db.execute(self.release_statement()).await {
            tracing::warn!(%error, "releasing an idempotency key failed");
        }
    }

    /// `UPDATE` of this claim's row, to which the answer's columns are added.
    fn complete_statement(&self) -> sea_orm::UpdateMany<idempotency_key::Entity> {
        idempotency_key::Entity::update_many()
            .filter(idempotency_key::Column::Scope.eq(self.scope.as_str()))
            .filter(idempotency_key::Column::Key.eq(self.key.as_str()))
            .filter(idempotency_key::Column::Claim.eq(self.claim.as_str()))
    }

    /// `DELETE` of this claim's row while it has no answer.
    fn release_statement(&self) -> sea_orm::DeleteMany<idempotency_key::Entity> {
        idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Scope.eq(self.scope.as_str()))
            .filter(idempotency_key::Column::Key.eq(self.key.as_str()))
            .filter(idempotency_key::Column::Claim.eq(self.claim.as_str()))
            .filter(idempotency_key::Column::Status.is_null())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            self.db.execute_later(self.release_statement());
        }
    }
}
