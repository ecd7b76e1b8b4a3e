//! Background jobs: work queued in the database ([`entity::job`]) that a worker in every
//! instance runs — mails to send, and the purge of expired rows.
//!
//! - **Queued with the change.** A handler inserts the job through its request's handle, in
//!   the transaction of the change that causes it ([`queue_mail`]): a change that rolls back
//!   leaves no job, and no job exists without its change.
//! - **Claimed with a lease.** A worker takes up to [`BATCH`] due jobs in one short
//!   transaction — `FOR UPDATE SKIP LOCKED` on PostgreSQL and MariaDB, so two instances
//!   never take the same row; SQLite has one writer at a time — and sets `locked_until` to
//!   now + [`LEASE`]. A job whose instance dies is due again when its lease has passed, so a
//!   mail is sent at least once, and normally by one instance only.
//! - **Retried, then given up.** A failure that may pass (the SMTP server down, a 4xx) is
//!   tried again after [`backoff`] (5 s, doubling, at most 10 minutes), up to
//!   [`MAX_ATTEMPTS`]; one that cannot (a 5xx) or the last attempt marks the job `failed`
//!   with its reason.
//! - **Stopped cleanly.** On shutdown the worker finishes the job it is running and hands the
//!   rest of its batch back (lease cleared, attempt not counted).
//!
//! Requests never wait for any of it: the worker runs beside them, woken at once by a
//! handler of its own instance ([`Wake`]) and otherwise every [`POLL`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use entity::job::{self, State};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
    sea_query::{Expr, ExprTrait, Func, LockBehavior, LockType},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::{
    config::Settings,
    db::{RequestDb, error::violates_unique},
    mail::{Delivery, Mail, SendError},
};

/// Jobs claimed at once by one worker.
pub const BATCH: u64 = 10;
/// How long a claim holds: longer than any one job takes (a mail's SMTP timeout is 10 s).
pub const LEASE: Duration = Duration::from_secs(60);
/// How often an idle worker looks for due jobs queued by other instances.
pub const POLL: Duration = Duration::from_secs(1);
/// Attempts before a job that keeps failing is given up.
pub const MAX_ATTEMPTS: i32 = 10;
/// How often the purge of expired rows runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The kind of a mail job.
const MAIL: &str = "mail";
/// The kind, and the unique key, of the one recurring purge job.
const PURGE: &str = "purge";

/// The wait before attempt `attempts + 1`: 5 s after the first failure, doubling, at most
/// 10 minutes.
pub fn backoff(attempts: i32) -> Duration {
    let doublings = attempts.clamp(1, 16) as u32 - 1;
    Duration::from_secs(5)
        .saturating_mul(1 << doublings)
        .min(Duration::from_secs(600))
}

/// A mail job's payload.
#[derive(Serialize, Deserialize)]
struct MailPayload {
    to: String,
    subject: String,
    body: String,
}

/// Queue `mail` in the request's transaction (begin one first: the mail belongs to the
/// change beside it). Wake the worker after the commit ([`Wake::now`]).
pub async fn queue_mail(db: &RequestDb, mail: Mail) -> Result<(), DbErr> {
    let payload = serde_json::to_string(&MailPayload {
        to: mail.to,
        subject: mail.subject,
        body: mail.body,
    })
    .map_err(|e| DbErr::Custom(format!("a mail that is not JSON: {e}")))?;
    db.insert(job::new(MAIL, payload, entity::now())).await?;
    Ok(())
}

/// Tells this instance's worker that a job was queued, so it does not wait for [`POLL`].
#[derive(Clone, Debug, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Wake the worker (after the commit of the job's transaction).
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// What a job's attempt came to.
enum Outcome {
    Done,
    /// Try again later: why it failed.
    Retry(String),
    /// Never try again: why.
    GiveUp(String),
    /// A recurring job: due again at this instant.
    Again(DateTime<Utc>),
}

/// The worker of one instance.
pub struct Worker {
    db: DatabaseConnection,
    delivery: Arc<Delivery>,
    mail_from: String,
    /// How long note changes are kept.
    changes_retention: Duration,
    /// This instance's name in `locked_by`.
    instance: String,
    wake: Wake,
}

impl Worker {
    pub fn new(
        db: DatabaseConnection,
        delivery: Delivery,
        settings: &Settings,
        wake: Wake,
    ) -> Self {
        Self {
            db,
            delivery: Arc::new(delivery),
            mail_from: settings.mail.from.clone(),
            changes_retention: settings.changes_retention,
            instance: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            wake,
        }
    }

    /// Run until `stop` turns true: claim due jobs, run them, and wait for a wake-up or the
    /// next poll when there are none.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if let Err(error) = self.ensure_purge().await {
            tracing::warn!(%error, "cannot queue the purge of expired rows");
        }
        while !*stop.borrow() {
            let claimed = match self.claim().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming jobs failed");
                    Vec::new()
                }
            };
            let idle = claimed.is_empty();
            let mut jobs = claimed.into_iter();
            for job in jobs.by_ref() {
                let outcome = self.attempt(&job).await;
                if let Err(error) = self.settle(&job, outcome).await {
                    tracing::warn!(%error, job = job.id, "recording a job's outcome failed");
                }
                if *stop.borrow() {
                    break;
                }
            }
            let rest: Vec<i64> = jobs.map(|job| job.id).collect();
            if !rest.is_empty()
                && let Err(error) = self.release(&rest).await
            {
                tracing::warn!(%error, "handing jobs back failed; their lease will pass");
            }
            self.observe().await;
            if idle {
                tokio::select! {
                    () = self.wake.0.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Due jobs, claimed for this instance until the lease passes.
    async fn claim(&self) -> Result<Vec<job::Model>, DbErr> {
        let now = entity::now();
        let backend = self.db.get_database_backend();
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                // InnoDB's default (repeatable read) locks the gaps of the range it scans, so
                // a request inserting a job into that range and the claim deadlock; read
                // committed locks the claimed rows only.
                isolation_level: (backend == DatabaseBackend::MySql)
                    .then_some(IsolationLevel::ReadCommitted),
                ..Default::default()
            })
            .await?;
        let mut due = job::Entity::find()
            .filter(job::Column::State.eq(State::Pending.as_str()))
            .filter(job::Column::RunAt.lte(now))
            .filter(
                Condition::any()
                    .add(job::Column::LockedUntil.is_null())
                    .add(job::Column::LockedUntil.lte(now)),
            )
            .order_by_asc(job::Column::RunAt)
            .order_by_asc(job::Column::Id)
            .limit(BATCH);
        if backend != DatabaseBackend::Sqlite {
            due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let mut jobs = due.all(&txn).await?;
        if jobs.is_empty() {
            txn.commit().await?;
            return Ok(jobs);
        }
        let until = now + chrono::Duration::from_std(LEASE).expect("a short lease");
        job::Entity::update_many()
            .col_expr(job::Column::LockedUntil, Expr::value(until))
            .col_expr(job::Column::LockedBy, Expr::value(self.instance.clone()))
            .col_expr(
                job::Column::Attempts,
                Expr::col(job::Column::Attempts).add(1),
            )
            .filter(job::Column::Id.is_in(jobs.iter().map(|job| job.id)))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        for job in &mut jobs {
            job.attempts += 1;
        }
        Ok(jobs)
    }

    async fn attempt(&self, job: &job::Model) -> Outcome {
        match job.kind.as_str() {
            MAIL => self.send(job).await,
            PURGE => self.purge().await,
            other => Outcome::GiveUp(format!("no handler for jobs of kind {other:?}")),
        }
    }

    async fn send(&self, job: &job::Model) -> Outcome {
        let payload: MailPayload = match serde_json::from_str(&job.payload) {
            Ok(payload) => payload,
            Err(error) => return Outcome::GiveUp(format!("unreadable mail payload: {error}")),
        };
        let mail = Mail {
            to: payload.to,
            subject: payload.subject,
            body: payload.body,
        };
        match self.delivery.send(&self.mail_from, &mail).await {
            Ok(()) => {
                metrics::counter!("mail_sent_total").increment(1);
                Outcome::Done
            }
            Err(error) => {
                // The class first: `mail_failed_total{reason}` is labelled by it.
                let class = match &error {
                    SendError::Invalid(_) => "invalid",
                    SendError::Smtp(_) if error.is_permanent() => "rejected",
                    SendError::Smtp(_) => "smtp",
                    SendError::Timeout => "timeout",
                    SendError::File(_) => "file",
                };
                let reason = format!("{class}: {}", error.reason());
                if error.is_permanent() {
                    Outcome::GiveUp(reason)
                } else {
                    Outcome::Retry(reason)
                }
            }
        }
    }

    /// Delete expired sessions, idempotency keys and account tokens, finished jobs a week
    /// old, throttle events a day old (every throttle's window is shorter) and note changes
    /// older than their retention. The deletes are idempotent: any instance may run them.
    async fn purge(&self) -> Outcome {
        let now = entity::now();
        let week_ago = now - chrono::Duration::days(7);
        let changes_before = now
            - chrono::Duration::from_std(self.changes_retention).unwrap_or(chrono::Duration::MAX);
        let finished = job::Entity::delete_many()
            .filter(job::Column::State.ne(State::Pending.as_str()))
            .filter(job::Column::FinishedAt.lte(week_ago));
        let results = [
            (
                "sessions",
                entity::session::delete_expired(now).exec(&self.db).await,
            ),
            (
                "idempotency keys",
                entity::idempotency_key::delete_expired(now)
                    .exec(&self.db)
                    .await,
            ),
            (
                "account tokens",
                entity::account_token::delete_expired(now)
                    .exec(&self.db)
                    .await,
            ),
            ("finished jobs", finished.exec(&self.db).await),
            (
                "throttle events",
                entity::throttle_event::delete_before(now - chrono::Duration::days(1))
                    .exec(&self.db)
                    .await,
            ),
        ];
        let changes = entity::note_change::purge_before(&self.db, changes_before).await;
        let results = results
            .into_iter()
            .map(|(what, done)| (what, done.map(|done| done.rows_affected)))
            .chain([("note changes", changes)]);
        for (what, done) in results {
            match done {
                Ok(purged) if purged > 0 => {
                    tracing::info!(purged, what, "expired rows deleted");
                }
                Ok(_) => {}
                Err(error) => {
                    return Outcome::Retry(format!("purging {what} failed: {error}"));
                }
            }
        }
        Outcome::Again(now + chrono::Duration::from_std(PURGE_EVERY).expect("minutes"))
    }

    /// Record `outcome` on the job, if this instance still holds it.
    async fn settle(&self, job: &job::Model, outcome: Outcome) -> Result<(), DbErr> {
        let now = entity::now();
        let mut update = job::ActiveModel {
            locked_until: Set(None),
            ..Default::default()
        };
        match outcome {
            Outcome::Done => {
                update.state = Set(State::Done.as_str().to_owned());
                update.finished_at = Set(Some(now));
            }
            Outcome::Again(at) => {
                update.run_at = Set(at);
                update.attempts = Set(0);
                update.last_error = Set(None);
            }
            Outcome::Retry(reason) if job.attempts < MAX_ATTEMPTS => {
                tracing::warn!(job = job.id, kind = job.kind, attempts = job.attempts, %reason, "job failed; will retry");
                let wait = chrono::Duration::from_std(backoff(job.attempts)).expect("minutes");
                update.run_at = Set(now + wait);
                update.last_error = Set(Some(reason));
            }
            Outcome::Retry(reason) | Outcome::GiveUp(reason) => {
                tracing::error!(job = job.id, kind = job.kind, attempts = job.attempts, %reason, "job given up");
                if job.kind == MAIL {
                    metrics::counter!("mail_failed_total", "reason" => failure_class(&reason))
                        .increment(1);
                }
                update.state = Set(State::Failed.as_str().to_owned());
                update.finished_at = Set(Some(now));
                update.last_error = Set(Some(reason));
            }
        }
        job::Entity::update_many()
            .set(update)
            .filter(job::Column::Id.eq(job.id))
            .filter(job::Column::LockedBy.eq(self.instance.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Hand claimed jobs back: due at once for any instance, the attempt not counted.
    async fn release(&self, ids: &[i64]) -> Result<(), DbErr> {
        job::Entity::update_many()
            .col_expr(
                job::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                job::Column::Attempts,
                Expr::col(job::Column::Attempts).sub(1),
            )
            .filter(job::Column::Id.is_in(ids.iter().copied()))
            .filter(job::Column::LockedBy.eq(self.instance.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The one purge job, queued if no instance has yet.
    async fn ensure_purge(&self) -> Result<(), DbErr> {
        let exists = job::Entity::find()
            .filter(job::Column::UniqueKey.eq(PURGE))
            .one(&self.db)
            .await?
            .is_some();
        if !exists {
            let mut purge = job::new(PURGE, "{}".to_owned(), entity::now());
            purge.unique_key = Set(Some(PURGE.to_owned()));
            // Another instance may queue it at the same moment: the unique key keeps one.
            if let Err(error) = job::Entity::insert(purge).exec(&self.db).await
                && !violates_unique(&error, "jobs_unique_key_key", "jobs.unique_key")
            {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Mails waiting to be sent, and the age of the oldest, for `/metrics`.
    async fn observe(&self) {
        let waiting = job::Entity::find()
            .select_only()
            .column_as(
                Expr::expr(Func::count(Expr::col(job::Column::Id))),
                "waiting",
            )
            .column_as(
                Expr::expr(Func::min(Expr::col(job::Column::CreatedAt))),
                "oldest",
            )
            .filter(job::Column::Kind.eq(MAIL))
            .filter(job::Column::State.eq(State::Pending.as_str()))
            .into_tuple::<(i64, Option<DateTime<Utc>>)>()
            .one(&self.db)
            .await;
        match waiting {
            Ok(Some((count, oldest))) => {
                metrics::gauge!("mail_queued").set(count as f64);
                let age = oldest.map_or(0.0, |oldest| {
                    Ord::max((Utc::now() - oldest).num_milliseconds(), 0) as f64 / 1000.0
                });
                metrics::gauge!("mail_oldest_unsent_age_seconds").set(age);
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "counting unsent mail failed"),
        }
    }
}

/// A bounded label for a failure reason: its first word (`rejected`, `smtp`, `timeout`, …).
fn failure_class(reason: &str) -> String {
    let class: String = reason
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    if class.is_empty() {
        "other".to_owned()
    } else {
        class.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_ten_minutes() {
        let waits: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(backoff(0).as_secs(), 5);
    }
}
