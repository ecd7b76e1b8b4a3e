//! What every handler can reach: the database source, the settings, and the process-wide
//! limits (one set per process, shared by every worker).

use std::sync::Arc;

use crate::{
    account::Hasher,
    config::Settings,
    db::DbSource,
    feed::Feed,
    jobs::Wake,
    limits::{ExportSlots, InFlight},
    session_cache::SessionCache,
    throttle::Throttle,
};

/// The application's shared state, registered once per worker as `web::Data<AppState>`;
/// clones share the limits.
#[derive(Clone)]
pub struct AppState {
    pub db: DbSource,
    pub settings: Arc<Settings>,
    pub hasher: Hasher,
    /// Failed sign-ins per (client address, e-mail), in the database.
    pub signin_throttle: Throttle,
    /// Password-reset requests per (client address, e-mail).
    pub reset_throttle: Throttle,
    /// Verification mails asked for, per user.
    pub verification_throttle: Throttle,
    /// Wakes this instance's job worker when a request queued a job.
    pub jobs: Wake,
    pub exports: ExportSlots,
    /// Who each bearer token signed in, for a moment (see [`SessionCache`]).
    pub sessions: Arc<SessionCache>,
    /// The `Idempotency-Key`s this instance is answering right now.
    pub in_flight: Arc<InFlight>,
    /// The event streams open on this instance.
    pub feed: Arc<Feed>,
}

impl AppState {
    /// The state for `db` and `settings`, with fresh limits sized by `settings`.
    pub fn new(db: DbSource, settings: Arc<Settings>) -> Self {
        Self {
            hasher: Hasher::new(settings.hash_concurrency, settings.db_acquire_timeout),
            signin_throttle: Throttle::sign_in(settings.signin_max_failures),
            reset_throttle: Throttle::password_reset(settings.signin_max_failures),
            verification_throttle: Throttle::email_verification(settings.signin_max_failures),
            jobs: Wake::default(),
            exports: ExportSlots::new(settings.export_max_concurrent),
            sessions: Arc::default(),
            in_flight: Arc::default(),
            feed: Feed::new(settings.events_max_per_user, settings.events_max_concurrent),
            db,
            settings,
        }
    }
}
