//! The notes service: an actix-web server over SeaORM.
//!
//! The modules are layers, listed bottom to top; each uses only the ones listed before it
//! (`api/tests/layers.rs` fails on an import that runs upward, and on a cycle between files):
//!
//! 1. [`config`] — settings from the environment; [`telemetry`] — the log subscriber;
//! 2. [`mail`] — a mail, and its delivery over SMTP or into `.eml` files; [`account`] — the
//!    e-mail, name and password rules, the bounded password hashing and the mails an account
//!    receives (domain rules: no HTTP, no database); [`search`] — the search query language, how a
//!    note matches it and its snippet, and the query as each backend's SQL;
//! 3. [`limits`] — the sign-in throttle, the export slots, the `Idempotency-Key`s in flight;
//!    [`session_cache`] — who a token signed in, remembered for half a second;
//! 4. [`db`] — the pool, each request's handle on it ([`db::RequestDb`], the one way handlers
//!    reach the database, in SeaORM's terms), the read replica, and what a database error
//!    means ([`db::error`]); [`jobs`] — the background jobs in the database (mail, purges) and
//!    the worker every instance runs; [`throttle`] — the throttles every instance shares
//!    (attempts counted in the database); [`feed`] — the event streams open on this instance
//!    and what wakes them (PostgreSQL notifications, or a poll of the change counters);
//! 5. [`state`] — what every handler can reach;
//! 6. [`http`] — what the routes share: errors as problem+json, the extractors (each with its
//!    OpenAPI parameter), the caller, conditional writes, idempotent POSTs, pages, metrics and
//!    the middleware every request goes through;
//! 7. [`routes`] — one module per resource;
//! 8. [`openapi`] — the document and the docs page;
//! 9. [`seed`] — the demo data and the first admin; [`startup`] — the app, the server and the
//!    process's life. The binary (`main.rs`) sits on top.

pub mod config;
pub mod telemetry;

pub mod mail;

pub mod account;
pub mod search;

pub mod limits;
pub mod session_cache;

pub mod db;
pub mod feed;
pub mod jobs;
pub mod throttle;

pub mod state;

pub mod http;

pub mod routes;

pub mod openapi;

pub mod seed;
pub mod startup;
