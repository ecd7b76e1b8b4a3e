//! Conditional requests (RFC 9110 §13): a strong `ETag` made of a row's `version`,
//! `If-None-Match` on reads (304) and `If-Match` on writes (412).
//!
//! The tag is the row's version, which the database advances on every update, so it changes
//! whenever the resource does and never depends on how the JSON is written. `If-Match` is
//! compared with the version *in the write itself* (`UPDATE … WHERE version = ?`), never by a
//! read followed by a write that another request could slip between.

use std::{collections::BTreeMap, convert::Infallible, marker::PhantomData};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder,
    dev::Payload,
    http::header::{self, EntityTag, Header},
};
use sea_orm::{ColumnTrait, DbErr, DeleteMany, EntityTrait, QueryFilter};
use utoipa::{
    IntoResponses, ToSchema,
    openapi::{
        RefOr, ResponseBuilder,
        path::{Parameter, ParameterIn},
        response::Response,
    },
};

use super::error::ApiError;
use crate::db::RequestDb;

/// The strong entity tag of a row at `version`: `"<version>"`.
pub fn etag(version: i64) -> EntityTag {
    EntityTag::new_strong(version.to_string())
}

/// Add the `ETag` of `version` to a response.
pub fn tagged(mut response: HttpResponseBuilder, version: i64) -> HttpResponseBuilder {
    response.insert_header((header::ETAG, etag(version)));
    response
}

/// Extractor: what the request's `If-Match` asks of a write. Never fails: a header that
/// cannot be parsed names no current tag, so the write is refused (412) rather than done.
#[derive(Debug)]
pub enum IfMatch {
    /// No `If-Match`: the write proceeds as it would without one.
    Absent,
    /// `If-Match: *`: any existing resource.
    Any,
    /// The versions of the strong tags listed (weak tags never match a write).
    Versions(Vec<i64>),
}

impl IfMatch {
    fn parse(req: &HttpRequest) -> Self {
        if !req.headers().contains_key(header::IF_MATCH) {
            return Self::Absent;
        }
        match header::IfMatch::parse(req) {
            Ok(header::IfMatch::Any) => Self::Any,
            Ok(header::IfMatch::Items(tags)) => Self::Versions(
                tags.iter()
                    .filter(|tag| !tag.weak)
                    .filter_map(|tag| tag.tag().parse().ok())
                    .collect(),
            ),
            Err(_) => Self::Versions(Vec::new()),
        }
    }

    /// Whether a resource at `version` meets the condition.
    pub fn holds(&self, version: i64) -> bool {
        match self {
            Self::Absent | Self::Any => true,
            Self::Versions(versions) => versions.contains(&version),
        }
    }

    /// The versions a write must find, or `None` when any will do.
    pub fn versions(&self) -> Option<&[i64]> {
        match self {
            Self::Absent | Self::Any => None,
            Self::Versions(versions) => Some(versions),
        }
    }
}

impl IfMatch {
    /// Delete what `delete` matches (a resource, by id and owner), at a version `If-Match`
    /// names (its `version` column) when the request has one. When nothing was deleted: 412
    /// if the resource is there at another version (`exists`), else 404.
    pub async fn delete<E: EntityTrait>(
        &self,
        db: &RequestDb,
        delete: DeleteMany<E>,
        version: E::Column,
        exists: impl AsyncFnOnce() -> Result<bool, DbErr>,
    ) -> Result<(), ApiError> {
        let delete = match self.versions() {
            Some(versions) => delete.filter(version.is_in(versions.iter().copied())),
            None => delete,
        };
        if db.execute(delete).await? > 0 {
            return Ok(());
        }
        match self.versions() {
            Some(_) if exists().await? => Err(ApiError::PreconditionFailed),
            _ => Err(ApiError::NotFound),
        }
    }
}

impl FromRequest for IfMatch {
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self::parse(req)))
    }
}

/// Extractor: the request's `If-None-Match`, for a read. A header that cannot be parsed is
/// ignored (the full answer is sent).
#[derive(Debug)]
pub struct IfNoneMatch(Option<header::IfNoneMatch>);

impl IfNoneMatch {
    /// Whether the client already has the resource at `version` (weak comparison, as
    /// RFC 9110 asks for `If-None-Match`).
    pub fn has(&self, version: i64) -> bool {
        let current = etag(version);
        match &self.0 {
            None => false,
            Some(header::IfNoneMatch::Any) => true,
            Some(header::IfNoneMatch::Items(tags)) => tags.iter().any(|tag| tag.weak_eq(&current)),
        }
    }

    /// 304 with the tag when the client has `version`, else 200 with `body` and the tag.
    pub fn respond(&self, version: i64, body: impl serde::Serialize) -> HttpResponse {
        if self.has(version) {
            tagged(HttpResponse::NotModified(), version).finish()
        } else {
            tagged(HttpResponse::Ok(), version).json(body)
        }
    }
}

impl FromRequest for IfNoneMatch {
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = req
            .headers()
            .contains_key(header::IF_NONE_MATCH)
            .then(|| header::IfNoneMatch::parse(req).ok())
            .flatten();
        std::future::ready(Ok(Self(parsed)))
    }
}

impl utoipa::IntoParams for IfMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        super::header_parameter(
            "if-match",
            "Change only if the resource's current `ETag` is one of these (or `*`: if it \
             exists); 412 otherwise, and nothing changes.",
            super::string_schema(),
        )
    }
}

impl utoipa::IntoParams for IfNoneMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        super::header_parameter(
            "if-none-match",
            "304 with no body when the current `ETag` is one of these.",
            super::string_schema(),
        )
    }
}

/// The answers of a `GET` that honours `If-None-Match`, for the OpenAPI document: 200 with
/// the `T` and its `ETag`, or 304 with no body.
pub struct Current<T>(PhantomData<T>);

impl<T: ToSchema> IntoResponses for Current<T> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let found = super::json_response::<T>("found")
            .header("etag", super::string_header("its current tag"));
        let not_modified =
            ResponseBuilder::new().description("not modified: `If-None-Match` has the current tag");
        BTreeMap::from([
            ("200".to_owned(), found.build().into()),
            ("304".to_owned(), not_modified.build().into()),
        ])
    }
}

/// The 200 of a change, for the OpenAPI document: the changed `T` and its new `ETag`.
pub struct Changed<T>(PhantomData<T>);

impl<T: ToSchema> IntoResponses for Changed<T> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let changed = super::json_response::<T>("changed")
            .header("etag", super::string_header("its new tag"));
        BTreeMap::from([("200".to_owned(), changed.build().into())])
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn if_match(value: &str) -> IfMatch {
        IfMatch::parse(
            &TestRequest::default()
                .insert_header(("if-match", value))
                .to_http_request(),
        )
    }

    fn if_none_match(value: &str) -> IfNoneMatch {
        let req = TestRequest::default()
            .insert_header(("if-none-match", value))
            .to_http_request();
        IfNoneMatch::from_request(&req, &mut Payload::None)
            .into_inner()
            .unwrap()
    }

    #[test]
    fn if_match_compares_strong_tags_only() {
        assert!(if_match("\"3\"").holds(3));
        assert!(!if_match("\"3\"").holds(4));
        assert!(if_match("\"1\", \"4\"").holds(4));
        assert!(
            !if_match("W/\"3\"").holds(3),
            "a weak tag never matches a write"
        );
        assert!(if_match("*").holds(17));
        assert!(
            !if_match("not a tag").holds(1),
            "unparseable: nothing matches"
        );
        assert!(!if_match("\"abc\"").holds(1));
        let absent = IfMatch::parse(&TestRequest::default().to_http_request());
        assert!(absent.holds(1) && absent.versions().is_none());
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(if_none_match("\"3\"").has(3));
        assert!(if_none_match("W/\"3\"").has(3));
        assert!(!if_none_match("\"2\"").has(3));
        assert!(if_none_match("*").has(3));
        assert!(!if_none_match("garbage").has(3));
        assert_eq!(etag(12).to_string(), "\"12\"");
    }
}
