//! The notes service: an actix-web server over SeaORM.
//!
//! The modules are layers, listed bottom to top; each uses only the ones listed before it:
//!
//! - [`config`] — settings from the environment; [`telemetry`] — the log subscriber;
//!   [`password`] — the password rule and its bounded hashing (a domain type, no HTTP);
//!   [`limits`] — the sign-in throttle and the export slots; [`session_cache`] — who a
//!   token signed in, remembered for half a second;
//! - [`db`] — the pool and each request's handle on it ([`db::RequestDb`]): the one way
//!   handlers reach the database, in SeaORM's terms;
//! - [`state`] — what every handler can reach;
//! - [`http`] — plumbing shared by the routes: errors as problem+json, request parsing,
//!   pagination, conditional requests, metrics and the middleware every request goes through;
//! - [`idempotency`] — `Idempotency-Key`: answers stored with the write they answer, and replayed;
//! - [`routes`] — one module per resource; [`openapi`] — the document and the docs page;
//! - [`seed`] — the demo data; [`startup`] — the app, the server and the process's life.

pub mod config;
pub mod limits;
pub mod password;
pub mod session_cache;
pub mod telemetry;

pub mod db;
pub mod state;

pub mod http;
pub mod idempotency;

pub mod openapi;
pub mod routes;

pub mod seed;
pub mod startup;
