//! The notes service: an actix-web server over SeaORM.
//!
//! `startup::app` builds the application (tests use it as is), `startup::run` runs the
//! process. Each request's database work goes through the unit of work in [`db`].

pub mod config;
pub mod db;
pub mod error;
pub mod input;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod routes;
pub mod seed;
pub mod startup;
pub mod statements;
pub mod telemetry;
