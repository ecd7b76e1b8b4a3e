//! HTTP plumbing shared by the routes: errors written as problem+json ([`error`]), the
//! caller ([`auth`]), request bodies and ids ([`input`]), conditional requests
//! ([`conditional`]), `Idempotency-Key` ([`idempotency`]), keyset pages ([`pagination`]),
//! metrics ([`metrics`]) and the middleware every request goes through ([`middleware`]).
//!
//! Each extractor of a request header describes itself to the OpenAPI document too
//! (`utoipa::IntoParams`), so an operation lists it as `params(IfMatch)`.

pub mod auth;
pub mod conditional;
pub mod error;
pub mod idempotency;
pub mod input;
pub mod metrics;
pub mod middleware;
pub mod pagination;
pub mod streaming;

use utoipa::{
    ToSchema,
    openapi::{
        ContentBuilder, KnownFormat, ObjectBuilder, Ref, Required, ResponseBuilder, SchemaFormat,
        Type,
        header::{Header, HeaderBuilder},
        path::{Parameter, ParameterBuilder, ParameterIn},
    },
};

/// An OpenAPI parameter: `name` in `place` (required in the path, optional elsewhere),
/// `description`, its value described by `schema`.
fn parameter(
    name: &str,
    place: ParameterIn,
    description: &str,
    schema: ObjectBuilder,
) -> Parameter {
    let required = if place == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(required)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// An optional request header, as an OpenAPI parameter.
fn header_parameter(name: &str, description: &str, schema: ObjectBuilder) -> Vec<Parameter> {
    vec![parameter(name, ParameterIn::Header, description, schema)]
}

/// A response for the OpenAPI document: `description`, and a `T` as JSON.
fn json_response<T: ToSchema>(description: &str) -> ResponseBuilder {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(T::name())))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
}

/// A response header for the OpenAPI document: its value described by `schema`.
fn response_header(schema: ObjectBuilder, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// A response header whose value is a string, for the OpenAPI document.
fn string_header(description: &str) -> Header {
    response_header(string_schema(), description)
}

/// A header value: a string.
fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// An id or a count: a 64-bit integer from `minimum`, up to `maximum` if any.
fn integer_schema(minimum: u64, maximum: Option<u64>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(minimum as f64))
        .maximum(maximum.map(|m| m as f64))
}
