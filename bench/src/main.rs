//! `baseline` — the hand-written comparison server of the benchmark (`bench/run.sh`).
//!
//! The same routes and JSON shapes as the `api` for the benchmarked scenarios, written
//! directly on actix-web + sqlx: no SeaORM, no per-request middleware, no transactions (each
//! statement autocommits), no logging or metrics. The pool is sized and configured like the
//! api's (`DB_POOL_MAX`/`DB_POOL_MIN`, SQLite 8/1, others 16/2; SQLite in WAL mode with a
//! busy timeout), so the difference measured is the api's own cost.
//!
//! Routes: `GET /notes/{id}`, `GET /notes?limit=&after=`, `POST /notes`, `GET /notes/export`,
//! each for a signed-in caller only, on the caller's own notes. The check is the api's, by
//! hand: every request's `Authorization: Bearer <token>` is hashed (SHA-256, lower-case hex,
//! as `entity::session::digest` stores it) and looked up in one query joining `sessions` and
//! `users` (unexpired session, active user) on the connection the request then uses for its
//! notes; no token, or no such session, is 401. Sessions are made by the api (`POST
//! /sessions`) on the database both servers share; this server only reads them.
//! Environment: `DATABASE_URL` (`sqlite:` or `postgres://`), `HOST`, `PORT`, `DB_POOL_MAX`,
//! `DB_POOL_MIN`, and for experiments `BASELINE_WRITES` — how `POST /notes` writes:
//!
//! - `autocommit` (default, what the benchmark compares with): one `INSERT … RETURNING`;
//! - `transaction`: `BEGIN` (`BEGIN IMMEDIATE` on SQLite), the insert, `COMMIT` — the shape of
//!   the api's per-request unit of work, to measure what that shape costs by itself;
//! - `serialized`: `transaction`, with writers queued one at a time on an in-process mutex
//!   instead of on SQLite's busy handler.

use std::{str::FromStr, time::Duration};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::header, web};
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::{StreamExt, TryStreamExt, stream::BoxStream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{
    Connection, PgPool, Row, SqlitePool,
    pool::PoolOptions,
    postgres::PgConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

/// The api's `DB_ACQUIRE_TIMEOUT_MS` default, used here for the pool and the SQLite lock.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(2000);
const MAX_TEXT_CHARS: usize = 10_000;
const EXPORT_CHUNK_BYTES: usize = 32 * 1024;

/// The caller: the active user whose unexpired session has this token digest.
const CALLER: &str = "SELECT users.id FROM sessions JOIN users ON users.id = sessions.user_id \
     WHERE sessions.token_digest = $1 AND sessions.expires_at > $2 AND users.is_active";
const SELECT_ONE: &str = "SELECT id, user_id, text, completed, created_at, updated_at FROM notes \
     WHERE id = $1 AND user_id = $2";
const SELECT_PAGE: &str = "SELECT id, user_id, text, completed, created_at, updated_at \
     FROM notes WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3";
const SELECT_ALL: &str = "SELECT id, user_id, text, completed, created_at, updated_at \
     FROM notes WHERE user_id = $1 ORDER BY id";
const INSERT: &str = "INSERT INTO notes (user_id, text, completed, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5) RETURNING id";

/// How `POST /notes` writes (`BASELINE_WRITES`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    Autocommit,
    Transaction,
    Serialized,
}

impl FromStr for Writes {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "autocommit" => Ok(Self::Autocommit),
            "transaction" => Ok(Self::Transaction),
            "serialized" => Ok(Self::Serialized),
            _ => Err(()),
        }
    }
}

/// Shared by every worker.
struct State {
    db: Db,
    writes: Writes,
    writer: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
enum Db {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// Run `$body` with `$pool` bound to whichever pool `$db` holds (each arm type-checks alone).
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Pg($pool) => $body,
            Db::Sqlite($pool) => $body,
        }
    };
}

#[derive(Serialize)]
struct Note {
    id: i64,
    user_id: i64,
    text: String,
    completed: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! note_from_row {
    ($row:expr) => {
        Note {
            id: $row.try_get(0)?,
            user_id: $row.try_get(1)?,
            text: $row.try_get(2)?,
            completed: $row.try_get(3)?,
            created_at: $row.try_get(4)?,
            updated_at: $row.try_get(5)?,
        }
    };
}

/// The SHA-256 digest (lower-case hex) of the request's bearer token, as the `sessions` table
/// stores it; `None` when there is no `Authorization: Bearer <token>` header.
fn token_digest(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    Some(hex::encode(Sha256::digest(token.as_bytes())))
}

/// The caller's user id (`Option<i64>`) for a token digest, looked up on `$conn` (a
/// connection of either pool); `?` returns database errors from the enclosing block.
macro_rules! caller {
    ($conn:expr, $digest:expr) => {
        sqlx::query_scalar::<_, i64>(CALLER)
            .bind($digest)
            .bind(Utc::now())
            .fetch_optional($conn)
            .await?
    };
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .finish()
}

/// What a handler's database work came to: the caller was not found, or its result.
enum Authed<T> {
    Unauthorized,
    Done(T),
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
    #[serde(default)]
    completed: bool,
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
    after: Option<i64>,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| {
            eprintln!("baseline: invalid {name}: {value:?}");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

async fn connect(url: &str) -> Result<Db, sqlx::Error> {
    let sqlite = url.starts_with("sqlite:");
    let (default_max, default_min) = if sqlite { (8, 1) } else { (16, 2) };
    let max = env_or("DB_POOL_MAX", default_max);
    let min = env_or("DB_POOL_MIN", default_min).min(max);
    fn options<DB: sqlx::Database>(max: u32, min: u32) -> PoolOptions<DB> {
        PoolOptions::new()
            .max_connections(max)
            .min_connections(min)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(600))
    }
    Ok(if sqlite {
        let connect = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(ACQUIRE_TIMEOUT)
            .foreign_keys(true);
        Db::Sqlite(options(max, min).connect_with(connect).await?)
    } else {
        let connect = PgConnectOptions::from_str(url)?;
        Db::Pg(options(max, min).connect_with(connect).await?)
    })
}

fn db_error(error: sqlx::Error) -> HttpResponse {
    eprintln!("baseline: database error: {error}");
    HttpResponse::ServiceUnavailable().finish()
}

async fn get_note(state: web::Data<State>, req: HttpRequest, id: web::Path<i64>) -> HttpResponse {
    let Some(digest) = token_digest(&req) else {
        return unauthorized();
    };
    let id = id.into_inner();
    let result: Result<Authed<Option<Note>>, sqlx::Error> = with_pool!(&state.db, pool => async {
        let mut conn = pool.acquire().await?;
        let Some(user_id) = caller!(&mut *conn, digest.as_str()) else {
            return Ok(Authed::Unauthorized);
        };
        let row = sqlx::query(SELECT_ONE).bind(id).bind(user_id).fetch_optional(&mut *conn).await?;
        match row {
            Some(row) => Ok(Authed::Done(Some(note_from_row!(row)))),
            None => Ok(Authed::Done(None)),
        }
    }.await);
    match result {
        Ok(Authed::Done(Some(note))) => HttpResponse::Ok().json(note),
        Ok(Authed::Done(None)) => HttpResponse::NotFound().finish(),
        Ok(Authed::Unauthorized) => unauthorized(),
        Err(error) => db_error(error),
    }
}

async fn list_notes(
    state: web::Data<State>,
    req: HttpRequest,
    page: web::Query<Page>,
) -> HttpResponse {
    let Some(digest) = token_digest(&req) else {
        return unauthorized();
    };
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) || page.after.is_some_and(|a| a < 0) {
        return HttpResponse::UnprocessableEntity().finish();
    }
    let after = page.after.unwrap_or(0);
    let result: Result<Authed<Vec<Note>>, sqlx::Error> = with_pool!(&state.db, pool => async {
        let mut conn = pool.acquire().await?;
        let Some(user_id) = caller!(&mut *conn, digest.as_str()) else {
            return Ok(Authed::Unauthorized);
        };
        let rows = sqlx::query(SELECT_PAGE)
            .bind(user_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
        let notes = rows.iter().map(|row| Ok(note_from_row!(row))).collect::<Result<_, sqlx::Error>>()?;
        Ok(Authed::Done(notes))
    }.await);
    let notes = match result {
        Ok(Authed::Done(notes)) => notes,
        Ok(Authed::Unauthorized) => return unauthorized(),
        Err(error) => return db_error(error),
    };
    let mut response = HttpResponse::Ok();
    if let Some(last) = notes.last().filter(|_| notes.len() as i64 == limit) {
        response.insert_header((
            header::LINK,
            format!(
                "<{}?limit={limit}&after={}>; rel=\"next\"",
                req.path(),
                last.id
            ),
        ));
    }
    response.json(notes)
}

async fn create_note(
    state: web::Data<State>,
    req: HttpRequest,
    new: web::Json<NewNote>,
) -> HttpResponse {
    let Some(digest) = token_digest(&req) else {
        return unauthorized();
    };
    let NewNote { text, completed } = new.into_inner();
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return HttpResponse::UnprocessableEntity().finish();
    }
    let now = Utc::now().trunc_subsecs(6);
    let _serialized = if state.writes == Writes::Serialized {
        Some(state.writer.lock().await)
    } else {
        None
    };
    let result: Result<Authed<(i64, i64)>, sqlx::Error> = with_pool!(&state.db, pool => async {
        let mut conn = pool.acquire().await?;
        let Some(user_id) = caller!(&mut *conn, digest.as_str()) else {
            return Ok(Authed::Unauthorized);
        };
        let insert = sqlx::query(INSERT)
            .bind(user_id)
            .bind(&text)
            .bind(completed)
            .bind(now)
            .bind(now);
        if state.writes == Writes::Autocommit {
            // The whole result, as the api reads it: `fetch_one` stops stepping at the first
            // row and resets the statement, and SQLite runs its WAL auto-checkpoint only for
            // a statement stepped to its end. With `fetch_one` the WAL grew by ~400 MB every
            // 3 s of POST and never shrank, which slowed this server's later reads and grew
            // the RSS of every process mapping the WAL index, the api's included.
            let rows = insert.fetch_all(&mut *conn).await?;
            let id = rows.first().ok_or(sqlx::Error::RowNotFound)?.try_get(0)?;
            return Ok(Authed::Done((id, user_id)));
        }
        let mut txn = if matches!(state.db, Db::Sqlite(_)) {
            conn.begin_with("BEGIN IMMEDIATE").await?
        } else {
            conn.begin().await?
        };
        let id = insert.fetch_one(&mut *txn).await?.try_get(0)?;
        txn.commit().await?;
        Ok(Authed::Done((id, user_id)))
    }.await);
    match result {
        Ok(Authed::Done((id, user_id))) => HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/notes/{id}")))
            .json(Note {
                id,
                user_id,
                text,
                completed,
                created_at: now,
                updated_at: now,
            }),
        Ok(Authed::Unauthorized) => unauthorized(),
        Err(error) => db_error(error),
    }
}

/// Every note of `user_id`, in id order, from a streaming `fetch` on a pooled connection.
fn all_notes(db: Db, user_id: i64) -> BoxStream<'static, Result<Note, sqlx::Error>> {
    with_pool!(db, pool => async_stream::try_stream! {
        let mut rows = sqlx::query(SELECT_ALL).bind(user_id).fetch(&pool);
        while let Some(row) = rows.try_next().await? {
            // try_stream! rewrites only its own `?`s, not those inside the row macro.
            let note = (|| Ok::<_, sqlx::Error>(note_from_row!(row)))()?;
            yield note;
        }
    }
    .boxed())
}

/// NDJSON, sent in chunks of about `EXPORT_CHUNK_BYTES`.
async fn export_notes(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    let Some(digest) = token_digest(&req) else {
        return unauthorized();
    };
    let caller: Result<Option<i64>, sqlx::Error> = with_pool!(&state.db, pool => async {
        Ok(caller!(pool, digest.as_str()))
    }.await);
    let user_id = match caller {
        Ok(Some(user_id)) => user_id,
        Ok(None) => return unauthorized(),
        Err(error) => return db_error(error),
    };
    let mut notes = all_notes(state.db.clone(), user_id);
    let body = async_stream::try_stream! {
        let mut chunk = Vec::with_capacity(EXPORT_CHUNK_BYTES + 1024);
        while let Some(note) = notes.try_next().await? {
            serde_json::to_writer(&mut chunk, &note)?;
            chunk.push(b'\n');
            if chunk.len() >= EXPORT_CHUNK_BYTES {
                yield web::Bytes::from(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(EXPORT_CHUNK_BYTES + 1024),
                ));
            }
        }
        if !chunk.is_empty() {
            yield web::Bytes::from(chunk);
        }
    };
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming::<_, ExportError>(body)
}

/// An error inside the export stream: it ends the response early.
#[derive(Debug)]
struct ExportError(String);

impl From<sqlx::Error> for ExportError {
    fn from(error: sqlx::Error) -> Self {
        Self(error.to_string())
    }
}

impl From<serde_json::Error> for ExportError {
    fn from(error: serde_json::Error) -> Self {
        Self(error.to_string())
    }
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExportError {}

fn main() -> std::io::Result<()> {
    let url: String = env_or("DATABASE_URL", "sqlite://data/notes.db?mode=rwc".to_owned());
    let host: String = env_or("HOST", "127.0.0.1".to_owned());
    let port: u16 = env_or("PORT", 8000);
    let writes = env_or("BASELINE_WRITES", Writes::Autocommit);
    actix_web::rt::System::new().block_on(async move {
        let db = connect(&url).await.map_err(|e| {
            std::io::Error::other(format!("baseline: cannot connect to the database: {e}"))
        })?;
        let state = web::Data::new(State {
            db,
            writes,
            writer: tokio::sync::Mutex::new(()),
        });
        HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/notes", web::get().to(list_notes))
                .route("/notes", web::post().to(create_note))
                .route("/notes/export", web::get().to(export_notes))
                .route("/notes/{id}", web::get().to(get_note))
        })
        .bind((host, port))?
        .run()
        .await
    })
}
