//! `Idempotency-Key` on `POST /notes`, `POST /notes/bulk` and `POST /users`: a retry of a
//! request that was answered gets the first answer again, and writes nothing.
//!
//! After the IETF httpapi draft "The Idempotency-Key HTTP Header Field". A keyed request:
//!
//! 1. *enters* its key in this instance's set of keys in flight ([`InFlight`]): a repeat
//!    that arrives here while it runs is 409 at once, before any work (422 if its body
//!    differs);
//! 2. does its work in the request's transaction and, as the transaction's last statement,
//!    *inserts* its answer (status, body, `Location`, `ETag`) under the key — one more
//!    statement, no extra commit: the answer is stored exactly when the work is, and a
//!    request that fails (any error, a 5xx above all), is cancelled or dies leaves nothing;
//! 3. when the key is already stored (the unique index on `(scope, key)` refuses the
//!    insert), rolls its work back and answers with what is stored: the first answer again
//!    (`Idempotent-Replayed: true`), or 422 when the key was used for another request.
//!
//! A repeat is compared by fingerprint: a digest of the route and the parsed body (so
//! `{"text":"a"}` and `{"completed":false,"text":"a"}` are one request).
//!
//! Where this deviates from the draft:
//! - the key is taken as the header's raw value (1 to 255 visible ASCII characters; a
//!   draft-style quoted string works, its quotes included), not parsed as a structured-field
//!   string;
//! - a repeat is 409 while the first runs *on the same instance*; on another instance it
//!   does its own work, and when it reaches its key the database decides: if the first has
//!   committed, the repeat's work is rolled back and it answers the first answer; if the
//!   first is about to commit, the repeat waits for that commit (never longer: the key is
//!   each transaction's last statement) and then does the same. Exactly one of them writes;
//! - only successful answers are stored: an error leaves the key free, and the repeat is
//!   answered afresh (for a validation error, the same answer);
//! - a sign-up's password never enters the fingerprint: a repeated sign-up's password is
//!   checked against the argon2id hash stored with the answer (the hash the account got, so
//!   no extra hashing).

use std::{collections::BTreeMap, marker::PhantomData, sync::Arc, time::Duration};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse,
    dev::Payload,
    http::{StatusCode, header},
    web,
};
use entity::idempotency_key::{self, Scope};
use sea_orm::{ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, SqlErr};
use serde::Serialize;
use utoipa::openapi::{
    RefOr,
    path::{Parameter, ParameterIn},
    response::Response,
};

use super::{conditional, error::ApiError};
use crate::{
    db::RequestDb,
    limits::{InFlight, KeyInFlight, KeyTaken},
    state::AppState,
};

/// The longest key taken.
const MAX_KEY_CHARS: usize = 255;
/// Tries of a keyed request's work: a second one only after an expired key was cleared or a
/// conflict found nothing stored.
const ATTEMPTS: usize = 2;
/// Response header of a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// Extractor: the request's `Idempotency-Key`, if it sent one; 400 when it is not 1 to 255
/// visible ASCII characters or comes more than once. Take it as
/// `Result<IdempotencyKey, ApiError>` in protected handlers (see `PathId`).
pub struct IdempotencyKey {
    key: Option<String>,
    ttl: Duration,
    in_flight: Arc<InFlight>,
}

impl IdempotencyKey {
    fn parse(req: &HttpRequest) -> Result<Self, ApiError> {
        let state = req.app_data::<web::Data<AppState>>();
        let ttl = state.map_or(Duration::from_secs(86_400), |state| {
            state.settings.idempotency_ttl
        });
        let in_flight = state.map_or_else(Arc::default, |state| Arc::clone(&state.in_flight));
        let mut values = req.headers().get_all("idempotency-key");
        let Some(value) = values.next() else {
            return Ok(Self {
                key: None,
                ttl,
                in_flight,
            });
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
            in_flight,
        })
    }

    /// Take up the key in `scope` for a request whose fingerprint `fingerprint` computes:
    /// 409 while the same request runs on this instance, 422 while another one with the key
    /// does. `None` (and no fingerprint
    /// computed) when the request has no key.
    pub fn enter(
        self,
        scope: Scope,
        fingerprint: impl FnOnce() -> String,
    ) -> Result<Option<Keyed>, ApiError> {
        let Some(key) = self.key else {
            return Ok(None);
        };
        let fingerprint = fingerprint();
        let entry = self
            .in_flight
            .enter(scope.as_str(), &key, &fingerprint)
            .map_err(|taken| match taken {
                KeyTaken::BySameRequest => ApiError::InProgress,
                KeyTaken::ByOtherRequest => reused(),
            })?;
        Ok(Some(Keyed {
            key,
            scope,
            fingerprint,
            ttl: self.ttl,
            _entry: entry,
        }))
    }
}

impl IdempotencyKey {
    /// Answer a `POST` that may carry a key, with the answer `work` gives. Without a key,
    /// `work` runs as any request's writes do (a single statement in autocommit, more in the
    /// request's transaction); with one, as [`Keyed::run`] runs it: stored with its answer,
    /// or replayed. `fingerprint` digests the request (route and parsed body).
    pub async fn answer(
        self,
        db: &RequestDb,
        scope: Scope,
        fingerprint: impl FnOnce() -> String,
        work: impl AsyncFn(&RequestDb) -> Result<Answer, ApiError>,
    ) -> Result<HttpResponse, ApiError> {
        match self.enter(scope, fingerprint)? {
            None => Ok(work(db).await?.into_response()),
            Some(keyed) => Ok(keyed.run(db, work).await?.into_response()),
        }
    }
}

impl utoipa::IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        super::header_parameter(
            "idempotency-key",
            "1 to 255 visible ASCII characters, new for each new request. A retry with the \
             same key and body gets the first answer again (`Idempotent-Replayed: true`) and \
             writes nothing; the same key with another body is 422; a retry while the first \
             request is still running is 409. Kept for IDEMPOTENCY_TTL_S (a day by default), \
             per user.",
            super::string_schema()
                .pattern(Some("^[!-~]{1,255}$"))
                .min_length(Some(1))
                .max_length(Some(MAX_KEY_CHARS)),
        )
    }
}

/// The 201 of a keyed `POST` that makes one `T`, for the OpenAPI document: the resource, its
/// `Location` and its `ETag` (`responses(Created<NoteView>, …)`).
pub struct Created<T>(PhantomData<T>);

impl<T: utoipa::ToSchema> utoipa::IntoResponses for Created<T> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let created = super::json_response::<T>(
            "created (or, with `Idempotent-Replayed: true`, the answer to the first request \
             with this `Idempotency-Key`)",
        )
        .header(
            "location",
            super::string_header("where the new resource is: `/…/{id}`"),
        )
        .header(
            "etag",
            super::string_header("its current tag, for `If-Match`"),
        );
        BTreeMap::from([("201".to_owned(), created.build().into())])
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

/// What the database holds under a key.
enum Stored {
    /// Nothing.
    Nothing,
    /// An expired answer, not purged yet: row id.
    Expired(i64),
    /// The answer to the same request.
    Same(Replay),
    /// The answer to another request (422).
    Other,
}

/// Why a keyed transaction failed.
enum Failed {
    /// The work, or the commit.
    Work(ApiError),
    /// The key is stored already (by an earlier request, or one that just committed).
    KeyTaken,
}

impl From<DbErr> for Failed {
    fn from(error: DbErr) -> Self {
        Self::Work(error.into())
    }
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Self {
        Self::Work(error)
    }
}

/// A key taken up by this request ([`IdempotencyKey::enter`]), until it is dropped.
pub struct Keyed {
    key: String,
    scope: Scope,
    fingerprint: String,
    ttl: Duration,
    _entry: KeyInFlight,
}

/// How a keyed request was answered.
pub enum Outcome {
    /// It did the work: its own answer, now stored.
    Answered(HttpResponse),
    /// The same request was answered before: its answer, to send again.
    Replay(Replay),
}

impl Outcome {
    /// The response to send.
    pub fn into_response(self) -> HttpResponse {
        match self {
            Self::Answered(response) => response,
            Self::Replay(replay) => replay.into_response(),
        }
    }
}

impl Keyed {
    /// The stored answer to this request, if there is one; 422 when the key was used for
    /// another request. For work worth skipping even once (a sign-up's password hashing):
    /// [`Keyed::run`] finds a stored answer by itself.
    pub async fn stored(&self, db: &RequestDb) -> Result<Option<Replay>, ApiError> {
        match self.lookup(db).await? {
            Stored::Same(replay) => Ok(Some(replay)),
            Stored::Other => Err(reused()),
            Stored::Nothing | Stored::Expired(_) => Ok(None),
        }
    }

    /// Do `work` in the request's transaction and store its answer under the key, in the
    /// same transaction, committed before the answer is sent. When the key turns out to be
    /// stored already, the work is rolled back and the stored answer replayed (422 for
    /// another request's). `work` may run twice: again after an expired key was cleared, or
    /// after a conflict when nothing is stored under the key.
    pub async fn run(
        self,
        db: &RequestDb,
        work: impl AsyncFn(&RequestDb) -> Result<Answer, ApiError>,
    ) -> Result<Outcome, ApiError> {
        let mut last = ApiError::InProgress;
        for _ in 0..ATTEMPTS {
            let outcome = db
                .scoped(async |db| {
                    let answer = work(db).await?;
                    db.execute(idempotency_key::Entity::insert(self.row(&answer)))
                        .await
                        .map_err(|error| match error.sql_err() {
                            Some(SqlErr::UniqueConstraintViolation(_)) => Failed::KeyTaken,
                            _ => Failed::Work(error.into()),
                        })?;
                    Ok::<_, Failed>(answer)
                })
                .await;
            let error = match outcome {
                Ok(answer) => return Ok(Outcome::Answered(answer.into_response())),
                Err(Failed::KeyTaken) => None,
                // A conflict in the work itself may be the key's twin on another instance
                // (the same sign-up's e-mail address): what the key holds decides.
                Err(Failed::Work(error @ ApiError::Conflict(_))) => Some(error),
                Err(Failed::Work(error)) => return Err(error),
            };
            match (self.lookup(db).await?, error) {
                (Stored::Same(replay), _) => return Ok(Outcome::Replay(replay)),
                (Stored::Other, _) => return Err(reused()),
                (Stored::Expired(id), None) => self.clear(db, id).await?,
                // Purged meanwhile: the key is free again.
                (Stored::Nothing, None) => last = ApiError::InProgress,
                // A conflict with nothing stored: a real one (an address another account
                // has), or a deadlock with the twin that is about to commit (MariaDB, when a
                // third transaction held both up). Once more tells them apart.
                (Stored::Nothing, Some(error)) => last = error,
                (Stored::Expired(_), Some(error)) => return Err(error),
            }
        }
        Err(last)
    }

    /// What the database holds under the key.
    async fn lookup(&self, db: &RequestDb) -> Result<Stored, ApiError> {
        let Some(stored) = db
            .all(idempotency_key::find(self.scope, &self.key))
            .await?
            .pop()
        else {
            return Ok(Stored::Nothing);
        };
        Ok(if idempotency_key::is_expired(&stored, entity::now()) {
            Stored::Expired(stored.id)
        } else if stored.fingerprint != self.fingerprint {
            Stored::Other
        } else {
            Stored::Same(Replay(Box::new(stored)))
        })
    }

    /// Delete the expired answer `id` (unless someone stored a fresh one meanwhile).
    async fn clear(&self, db: &RequestDb, id: i64) -> Result<(), ApiError> {
        let expired = idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Id.eq(id))
            .filter(idempotency_key::Column::ExpiresAt.lte(entity::now()));
        db.execute(expired).await?;
        Ok(())
    }

    /// The row that stores `answer` under the key.
    fn row(&self, answer: &Answer) -> idempotency_key::ActiveModel {
        let now = entity::now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::days(1));
        idempotency_key::ActiveModel {
            scope: Set(self.scope.as_str()),
            user_id: Set(answer.owner.or(self.scope.user_id())),
            key: Set(self.key.clone()),
            fingerprint: Set(self.fingerprint.clone()),
            status: Set(i32::from(answer.status)),
            location: Set(answer.location.clone()),
            etag: Set(answer.etag.clone()),
            body: Set(answer.body.clone()),
            password_hash: Set(answer.password_hash.clone()),
            created_at: Set(now),
            expires_at: Set(now + ttl),
            ..Default::default()
        }
    }
}

/// A stored answer, to send again.
pub struct Replay(Box<idempotency_key::Model>);

impl Replay {
    /// The password hash a sign-up stored with its answer.
    pub fn password_hash(&self) -> Option<&str> {
        self.0.password_hash.as_deref()
    }

    /// The stored answer, marked `Idempotent-Replayed: true`.
    pub fn into_response(self) -> HttpResponse {
        let key = *self.0;
        let answer = Answer {
            status: u16::try_from(key.status).unwrap_or(200),
            location: key.location,
            etag: key.etag,
            body: key.body,
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
