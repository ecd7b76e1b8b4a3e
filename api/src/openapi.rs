//! The OpenAPI 3 document, generated from the annotations on the handlers, and the docs page.
//!
//! `tests/tests/operability.rs` compares the routes this document lists with the routes the
//! app serves, so the two cannot drift apart.

use actix_web::{HttpResponse, web};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    openapi::{HeaderBuilder, ObjectBuilder, RefOr, Schema, Type, path::Operation},
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::{
    http::{
        error::{FieldError, Problem},
        idempotency::REPLAYED,
    },
    routes::{notes, ops, recovery, sessions, users, web as page},
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
    modifiers(&BearerAuth, &BodyLimits, &ResponseHeaders),
    paths(
        notes::list,
        notes::create,
        notes::bulk::bulk_create,
        notes::changes::changes,
        notes::events::events,
        notes::export::export,
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
        recovery::request_reset,
        recovery::confirm_reset,
        recovery::request_verification,
        recovery::confirm_verification,
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
        (name = "accounts", description = "Recovering an account and verifying its address by mail"),
        (name = "operations", description = "Health, readiness and metrics")
    )
)]
pub struct ApiDoc;

/// The operations anyone may call; every other one needs the bearer token (so a new route is
/// protected in the document unless it is listed here).
const PUBLIC_OPERATIONS: [&str; 11] = [
    "create_user",
    "sign_in",
    "request_reset",
    "confirm_reset",
    "confirm_verification",
    "healthz",
    "readyz",
    "metrics",
    "openapi_json",
    "docs_index",
    "index",
];

/// The `bearer` security scheme, named by every operation but the public ones.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        for operation in operations(openapi) {
            let id = operation.operation_id.as_deref().unwrap_or_default();
            if !PUBLIC_OPERATIONS.contains(&id) {
                operation.security = Some(vec![bearer.clone()]);
            }
        }
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

/// The response headers a parameter brings: an operation that takes an `Idempotency-Key`
/// marks a replayed 201 with `Idempotent-Replayed: true`; one that takes a page's `limit`
/// links its full 200 pages to the next with `Link`.
struct ResponseHeaders;

impl Modify for ResponseHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = |description: &str| {
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some(description))
                    .build(),
            )
        };
        let brought = [
            (
                "idempotency-key",
                "201",
                REPLAYED,
                header(
                    "`true` when this is the stored answer to an earlier request with the same \
                     `Idempotency-Key`",
                ),
            ),
            (
                "limit",
                "200",
                "link",
                header("`<…>; rel=\"next\"` when the page is full"),
            ),
        ];
        for operation in operations(openapi) {
            for (parameter, status, name, header) in &brought {
                let takes = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|taken| matches!(taken, RefOr::T(taken) if taken.name == *parameter));
                if let (true, Some(RefOr::T(response))) =
                    (takes, operation.responses.responses.get_mut(*status))
                {
                    response.headers.insert((*name).to_owned(), header.clone());
                }
            }
        }
    }
}

/// Every operation of the document.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
    })
}

/// The limits the body parsers enforce, written into the bodies' schemas: each limit is
/// defined once, as the constant its parser reads.
struct BodyLimits;

impl Modify for BodyLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::account::{MAX_EMAIL_CHARS, MAX_NAME_CHARS, password};
        use notes::{MAX_BULK_ITEMS, MAX_TEXT_CHARS};
        use recovery::MAX_TOKEN_CHARS;
        let (min_password, max_password) = (Some(password::MIN_CHARS), password::MAX_CHARS);
        let lengths = [
            ("Credentials", "email", Some(1), MAX_EMAIL_CHARS),
            ("Credentials", "password", Some(1), max_password),
            ("NewNote", "text", Some(1), MAX_TEXT_CHARS),
            ("NotePatch", "text", Some(1), MAX_TEXT_CHARS),
            ("NewUser", "email", None, MAX_EMAIL_CHARS),
            ("NewUser", "password", min_password, max_password),
            ("NewUser", "name", None, MAX_NAME_CHARS),
            ("UserPatch", "email", None, MAX_EMAIL_CHARS),
            ("UserPatch", "name", None, MAX_NAME_CHARS),
            ("UserPatch", "password", min_password, max_password),
            ("UserPatch", "current_password", None, max_password),
            ("ResetRequest", "email", None, MAX_EMAIL_CHARS),
            ("ResetConfirmation", "token", Some(1), MAX_TOKEN_CHARS),
            ("ResetConfirmation", "password", min_password, max_password),
            (
                "VerificationConfirmation",
                "token",
                Some(1),
                MAX_TOKEN_CHARS,
            ),
        ];
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (schema, field, min, max) in lengths {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Object(property))) = object.properties.get_mut(field)
            {
                property.min_length = min;
                property.max_length = Some(max);
            }
        }
        if let Some(RefOr::T(Schema::Array(notes))) = components.schemas.get_mut("NewNotes") {
            notes.min_items = Some(1);
            notes.max_items = Some(MAX_BULK_ITEMS);
        }
    }
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
            .route(crate::routes::get().to(openapi_json))
            .default_service(crate::routes::allow("GET, HEAD")),
    )
    .service(
        crate::routes::resource("/docs")
            .route(crate::routes::get().to(docs_index))
            .default_service(crate::routes::allow("GET, HEAD")),
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
