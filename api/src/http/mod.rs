//! HTTP plumbing shared by the routes: errors written as problem+json ([`error`]), the
//! caller ([`auth`]), conditional requests ([`conditional`]), request bodies and ids ([`input`]), keyset pages ([`pagination`]), metrics ([`metrics`]) and the
//! middleware every request goes through ([`middleware`]).

pub mod auth;
pub mod conditional;
pub mod error;
pub mod input;
pub mod metrics;
pub mod middleware;
pub mod pagination;
