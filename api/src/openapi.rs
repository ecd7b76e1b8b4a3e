//! The OpenAPI 3 document, generated from the annotations on the handlers, and the docs page.
//!
//! `tests/tests/operability.rs` compares the routes this document lists with the routes the
//! app serves, so the two cannot drift apart.

use actix_web::{HttpResponse, web};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::{
    http::error::{FieldError, Problem},
    routes::{notes, ops, sessions, users, web as page},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "notes-api",
        description = "Notes and users. Bodies are JSON; times are RFC 3339 in UTC; ids are \
                       positive 64-bit integers. Every error is `application/problem+json` \
                       (RFC 9457) with `type`, `title`, `status` and `detail`, plus `errors` \
                       naming each invalid field on 422. Every response carries \
                       `x-request-id` (yours, when you send a sensible one): quote it when \
                       reporting a problem. A 503 carries `Retry-After`; nothing was written. \
                       Sign up with `POST /users`, sign in with `POST /sessions`, and send \
                       `Authorization: Bearer <token>` on every other route but the operational \
                       ones; each user sees only their own notes."
    ),
    modifiers(&BearerAuth),
    paths(
        notes::list,
        notes::create,
        notes::bulk_create,
        notes::export,
        notes::get,
        notes::update,
        notes::delete,
        sessions::sign_in,
        sessions::sign_out,
        users::me,
        users::list,
        users::create,
        users::get,
        users::update,
        users::delete,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
        docs_index,
        page::index,
    ),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "notes", description = "Notes"),
        (name = "sessions", description = "Signing in and out"),
        (name = "users", description = "Users"),
        (name = "operations", description = "Health, readiness and metrics")
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme the protected operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the `token` of `POST /sessions`"))
                    .build(),
            ),
        );
    }
}

/// A request header an operation reads, for its `params(…)`.
fn header_param(
    name: &str,
    description: &str,
    pattern: Option<&str>,
) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::{
        ObjectBuilder, Required, Type,
        path::{ParameterBuilder, ParameterIn},
    };
    let mut schema = ObjectBuilder::new().schema_type(Type::String);
    if let Some(pattern) = pattern {
        schema = schema
            .pattern(Some(pattern))
            .min_length(Some(1))
            .max_length(Some(255));
    }
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// Declares a request header as a parameter set an operation lists (`params(IfMatchHeader)`).
macro_rules! header_params {
    ($($name:ident = ($header:literal, $pattern:expr, $description:literal);)+) => {$(
        pub struct $name;

        impl utoipa::IntoParams for $name {
            fn into_params(
                _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
            ) -> Vec<utoipa::openapi::path::Parameter> {
                vec![header_param($header, $description, $pattern)]
            }
        }
    )+};
}

header_params! {
    IfMatchHeader = ("if-match", None,
        "Change only if the resource's current `ETag` is one of these (or `*`: if it exists); \
         412 otherwise, and nothing changes.");
    IfNoneMatchHeader = ("if-none-match", None,
        "304 with no body when the current `ETag` is one of these.");
    IdempotencyKeyHeader = ("idempotency-key", Some("^[!-~]{1,255}$"),
        "1 to 255 visible ASCII characters, new for each new request. A retry with the same \
         key and body gets the first answer again (`Idempotent-Replayed: true`) and writes \
         nothing; the same key with another body is 422; a retry while the first request is \
         still running is 409. Kept for IDEMPOTENCY_TTL_S (a day by default), per user.");
}

/// `/openapi.json`, `/docs` and the docs page's assets (served from the binary: no internet
/// access needed).
pub fn routes(cfg: &mut web::ServiceConfig) {
    let config = Config::new(["/openapi.json"])
        // The default validator badge calls an outside service.
        .validator_url("none")
        .try_it_out_enabled(true);
    let document = web::Data::new(
        serde_json::to_vec(&ApiDoc::openapi()).expect("the OpenAPI document serialises"),
    );
    cfg.service(
        crate::routes::resource("/openapi.json")
            .app_data(document)
            .route(web::get().to(openapi_json))
            .default_service(crate::routes::allow("GET")),
    )
    .service(
        crate::routes::resource("/docs")
            .route(web::get().to(docs_index))
            .default_service(crate::routes::allow("GET")),
    )
    .service(SwaggerUi::new("/docs/{_:.*}").config(config));
}

/// This document
///
/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3 document", body = Object)))]
pub async fn openapi_json(document: web::Data<Vec<u8>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.get_ref().clone())
}

/// API explorer
///
/// Swagger UI for this document, served by this server (works offline).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "Swagger UI, served by this server", body = String,
        content_type = "text/html")))]
pub async fn docs_index() -> HttpResponse {
    // Served at `/docs` without the trailing slash: relative asset links are anchored under
    // `/docs/` by a <base>.
    let config = std::sync::Arc::new(Config::new(["/openapi.json"]).validator_url("none"));
    match utoipa_swagger_ui::serve("index.html", config) {
        Ok(Some(file)) => {
            let html = String::from_utf8_lossy(&file.bytes).replacen(
                "<head>",
                "<head><base href=\"/docs/\">",
                1,
            );
            HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .body(html)
        }
        _ => HttpResponse::Found()
            .insert_header(("location", "/docs/"))
            .finish(),
    }
}
