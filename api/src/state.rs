//! What every handler can reach: the database source, the settings, and the process-wide
//! limits (one set per process, shared by every worker).

use std::sync::Arc;

use crate::{
    account::Hasher,
    config::Settings,
    db::DbSource,
    limits::{ExportSlots, InFlight, SigninThrottle},
    session_cache::SessionCache,
};

/// The application's shared state, registered once per worker as `web::Data<AppState>`;
/// clones share the limits.
#[derive(Clone)]
pub struct AppState {
    pub db: DbSource,
    pub settings: Arc<Settings>,
    pub hasher: Hasher,
    pub signin_throttle: Arc<SigninThrottle>,
    pub exports: ExportSlots,
    /// Who each bearer token signed in, for a moment (see [`SessionCache`]).
    pub sessions: Arc<SessionCache>,
    /// The `Idempotency-Key`s this instance is answering right now.
    pub in_flight: Arc<InFlight>,
}

impl AppState {
    /// The state for `db` and `settings`, with fresh limits sized by `settings`.
    pub fn new(db: DbSource, settings: Arc<Settings>) -> Self {
        Self {
            hasher: Hasher::new(settings.hash_concurrency, settings.db_acquire_timeout),
            signin_throttle: Arc::new(SigninThrottle::new(settings.signin_max_failures)),
            exports: ExportSlots::new(settings.export_max_concurrent),
            sessions: Arc::default(),
            in_flight: Arc::default(),
            db,
            settings,
        }
    }
}
