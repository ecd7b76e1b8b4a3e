//! Routes mounted only when `TESTING=true`, so tests can drive the failure paths of the
//! unit of work through the real stack: a panicking handler, an error midway through each
//! of the three transaction styles, and requests that hold the connection (with or without
//! a write) while their client goes away. The notes they write belong to the caller, so
//! every route but `panic` needs a bearer token like the real ones.

use actix_web::{HttpRequest, HttpResponse, web};
use entity::note;
use sea_orm::{ActiveModelBehavior, ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbErr};
use serde_json::json;

use crate::{
    db::RequestDb,
    http::{auth::CurrentUser, error::ApiError, input::parse_id},
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/__test/panic", crate::routes::get().to(panic))
        .route(
            "/__test/panic-after-write",
            web::post().to(panic_after_write),
        )
        .route("/__test/fail-midway/{style}", web::post().to(fail_midway))
        .route("/__test/hold/{ms}", web::post().to(hold))
        .route("/__test/commit-fails", web::post().to(commit_fails))
        .route("/__test/write-and-hold/{ms}", web::post().to(hold))
        .route(
            "/__test/single-statement/{mode}",
            web::post().to(single_statement),
        );
}

async fn panic() -> HttpResponse {
    panic!("test route panicked on purpose");
}

async fn panic_after_write(me: CurrentUser, db: RequestDb) -> Result<HttpResponse, ApiError> {
    let txn = db.transaction().await?;
    insert_marker(&*txn, &me, "panic-after-write").await?;
    panic!("test route panicked after writing");
}

/// Write a note, then fail, in the given style — what each style protects.
///
/// - `whole`: the request's unit of work. The handler writes, then fails (409): the
///   middleware rolls the write back.
/// - `scoped`: a first scope writes `midway-kept` and succeeds (committed at its end), a
///   second writes `midway-scoped` and fails (rolled back at its end); the handler answers
///   200 all the same. Only the failed scope's write is gone.
/// - `explicit`: the same with the handler committing, then rolling back, by hand.
async fn fail_midway(
    me: CurrentUser,
    db: RequestDb,
    style: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match style.as_str() {
        "whole" => {
            insert_marker(&*db.transaction().await?, &me, "midway-whole").await?;
            Err(ApiError::Conflict("failed midway on purpose".into()))
        }
        "scoped" => {
            db.scoped(async |db| db.insert(marker(&me, "midway-kept")).await)
                .await?;
            let outcome = db
                .scoped(async |db| {
                    db.insert(marker(&me, "midway-scoped")).await?;
                    Err::<(), _>(DbErr::Custom("failed midway on purpose".into()))
                })
                .await;
            Ok(HttpResponse::Ok().json(json!({ "rolled_back": outcome.is_err() })))
        }
        "explicit" => {
            let kept = db.begin().await?;
            db.insert(marker(&me, "midway-kept")).await?;
            kept.commit().await?;
            let undone = db.begin().await?;
            db.insert(marker(&me, "midway-explicit")).await?;
            undone.rollback().await?;
            Ok(HttpResponse::Ok().json(json!({ "rolled_back": true })))
        }
        _ => Err(ApiError::NotFound),
    }
}

/// `hold/{ms}`: take the request's connection and keep it for `ms` milliseconds (pool
/// exhaustion tests). `write-and-hold/{ms}`: write a note first — a client that goes away
/// meanwhile must leave no note and no open transaction behind.
async fn hold(me: CurrentUser, db: RequestDb, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let ms = parse_id(req.match_info().get("ms").unwrap_or_default())?.min(60_000) as u64;
    let txn = db.transaction().await?;
    if req.path().starts_with("/__test/write-and-hold/") {
        insert_marker(&*txn, &me, "write-and-hold").await?;
    }
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    Ok(HttpResponse::Ok().json(json!({ "held_ms": ms })))
}

/// Write a note, then lose the connection before the middleware commits (the server ends
/// this session), and answer 200: the commit fails, so the client must get a 503, not the 200.
async fn commit_fails(me: CurrentUser, db: RequestDb) -> Result<HttpResponse, ApiError> {
    let txn = db.transaction().await?;
    insert_marker(&*txn, &me, "commit-fails").await?;
    let kill = match txn.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "SELECT pg_terminate_backend(pg_backend_pid())",
        sea_orm::DatabaseBackend::MySql => "KILL CONNECTION_ID()",
        _ => return Err(ApiError::NotFound),
    };
    // The statement itself fails as the session ends; the handler still answers 200.
    let _ = txn.execute_unprepared(kill).await;
    Ok(HttpResponse::Ok().json(json!({ "wrote": "commit-fails" })))
}

/// Write one statement ([`RequestDb::insert`]), then fail (409). `alone`: the statement is the
/// request's only write, so it autocommitted on the pool and the note stays. `joined`: the
/// request began a transaction first, so the statement joins it and both notes are rolled back.
async fn single_statement(
    me: CurrentUser,
    db: RequestDb,
    mode: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match mode.as_str() {
        "alone" => {}
        "joined" => {
            insert_marker(&*db.transaction().await?, &me, "single-joined-first").await?;
        }
        _ => return Err(ApiError::NotFound),
    }
    db.insert(marker(&me, &format!("single-{mode}"))).await?;
    Err(ApiError::Conflict(
        "failed after the write on purpose".into(),
    ))
}

async fn insert_marker(
    db: &impl ConnectionTrait,
    me: &CurrentUser,
    text: &str,
) -> Result<note::Model, DbErr> {
    marker(me, text).insert(db).await
}

fn marker(me: &CurrentUser, text: &str) -> note::ActiveModel {
    note::ActiveModel {
        user_id: Set(me.id()),
        text: Set(text.to_owned()),
        ..note::ActiveModel::new()
    }
}
