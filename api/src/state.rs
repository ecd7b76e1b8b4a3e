//! What every handler can reach: the database source and the settings.

use std::sync::Arc;

use crate::{config::Settings, db::DbSource};

/// The application's shared state, registered once as `web::Data<AppState>`.
pub struct AppState {
    pub db: DbSource,
    pub settings: Arc<Settings>,
}
