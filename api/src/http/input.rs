//! Request input: the JSON body extractor and the field-by-field readers behind it.
//!
//! A body is read in four steps, each with its own status: not JSON → 415, over the limit →
//! 413, malformed → 400, well-formed but wrong (missing field, wrong type, out of range) → 422
//! with every bad field named. Parsing straight into typed values ("parse, don't validate")
//! means a handler only ever sees input that holds.

use std::{future::Future, ops::RangeInclusive, pin::Pin};

use actix_web::mime;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use serde_json::{Map, Value};
use utoipa::openapi::path::{Parameter, ParameterIn};

use super::error::{ApiError, FieldError};
use crate::state::AppState;

/// A type that can be read from a JSON value, reporting every bad field.
pub trait FromJson: Sized {
    fn from_json(value: Value, path: &str) -> Result<Self, Vec<FieldError>>;
}

/// Extractor: a JSON body parsed into `T`.
pub struct Json<T>(pub T);

impl<T: FromJson + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req.mime_type().ok().flatten().is_some_and(|mime| {
            mime.type_() == mime::APPLICATION
                && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON))
        });
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(usize::MAX, |state| state.settings.body_limit_bytes);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::UnsupportedMediaType);
            }
            let bytes = body.await.map_err(|error| {
                if error.as_response_error().status_code().as_u16() == 413 {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::BadRequest("the request body could not be read".into())
                }
            })?;
            parse_json_body(&bytes).map(Json)
        })
    }
}

/// Parse a request body: 400 when it is not JSON, 422 with every bad field when it is JSON
/// but not a valid `T`. What the `Json` extractor does once the body is read (and what the
/// property tests drive with arbitrary bytes).
pub fn parse_json_body<T: FromJson>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::BadRequest(format!(
            "the request body is not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    T::from_json(value, "").map_err(ApiError::Validation)
}

/// The JSON path of `field` under `path` (`text`, `[3].text`).
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else if field.starts_with('[') {
        format!("{path}{field}")
    } else {
        format!("{path}.{field}")
    }
}

/// Reads the fields of one JSON object, collecting every error before giving up.
pub struct Fields {
    object: Map<String, Value>,
    path: String,
    pub errors: Vec<FieldError>,
}

impl Fields {
    /// Start reading `value`, which must be an object.
    pub fn of(value: Value, path: &str) -> Result<Self, Vec<FieldError>> {
        match value {
            Value::Object(object) => Ok(Self {
                object,
                path: path.to_owned(),
                errors: Vec::new(),
            }),
            _ => Err(vec![FieldError::new(
                if path.is_empty() { "body" } else { path },
                "must be a JSON object",
            )]),
        }
    }

    fn error(&mut self, field: &str, message: &str) {
        self.errors
            .push(FieldError::new(join(&self.path, field), message));
    }

    /// A field that must be present and a string.
    pub fn required_string(&mut self, field: &str) -> Option<String> {
        match self.object.remove(field) {
            None => {
                self.error(field, "is required");
                None
            }
            Some(value) => self.string_value(field, value),
        }
    }

    /// A field that may be absent; when present it must be a string.
    pub fn optional_string(&mut self, field: &str) -> Option<String> {
        let value = self.object.remove(field)?;
        self.string_value(field, value)
    }

    /// A field that may be absent (outer `None`), `null` (`Some(None)`) or a string.
    pub fn nullable_string(&mut self, field: &str) -> Option<Option<String>> {
        match self.object.remove(field)? {
            Value::Null => Some(None),
            value => self.string_value(field, value).map(Some),
        }
    }

    /// A field that may be absent; when present it must be a boolean.
    pub fn optional_bool(&mut self, field: &str) -> Option<bool> {
        match self.object.remove(field)? {
            Value::Bool(b) => Some(b),
            _ => {
                self.error(field, "must be a boolean");
                None
            }
        }
    }

    fn string_value(&mut self, field: &str, value: Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            _ => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    /// A field that must be present: a string of `chars` characters ([`Self::checked_text`]).
    pub fn required_text(&mut self, field: &str, chars: RangeInclusive<usize>) -> Option<String> {
        let value = self.required_string(field)?;
        self.checked_text(field, value, chars)
    }

    /// A field that may be absent; when present, a string of `chars` characters
    /// ([`Self::checked_text`]).
    pub fn optional_text(&mut self, field: &str, chars: RangeInclusive<usize>) -> Option<String> {
        let value = self.optional_string(field)?;
        self.checked_text(field, value, chars)
    }

    /// `value` if its length in characters is in `chars` and it has no NUL character (which
    /// PostgreSQL cannot store); else an error for `field`.
    pub fn checked_text(
        &mut self,
        field: &str,
        value: String,
        chars: RangeInclusive<usize>,
    ) -> Option<String> {
        let (min, max) = chars.into_inner();
        let length = value.chars().count();
        let message = if length < min {
            if min == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {min} characters long")
            }
        } else if length > max {
            format!("must be at most {max} characters long")
        } else if value.contains('\0') {
            "must not contain NUL characters".to_owned()
        } else {
            return Some(value);
        };
        self.error(field, &message);
        None
    }

    /// Add a custom error for `field`.
    pub fn reject(&mut self, field: &str, message: &str) {
        self.error(field, message);
    }

    /// The parsed value, or every error found.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        value().ok_or_else(|| vec![FieldError::new(self.path, "is not valid")])
    }
}

/// Extractor: the route's `{id}`, a positive 64-bit integer ([`parse_id`]; 404 otherwise).
///
/// Read from the matched path as it is, where `web::Path<String>` would copy the segment into
/// a new `String` on every request. Percent-decoding changes nothing here: a decoded digit was
/// already decoded in the path, and any other escape decodes to something that is no id.
///
/// Protected handlers take it as `Result<PathId, ApiError>` and unwrap it after
/// [`CurrentUser`](super::auth::CurrentUser): actix extracts a handler's arguments together
/// and answers the first error, and a bad id is known at once while the token lookup waits for
/// the database, so an anonymous caller would learn 404 instead of 401.
pub struct PathId(pub i64);

impl FromRequest for PathId {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("id").unwrap_or_default();
        std::future::ready(parse_id(raw).map(PathId))
    }
}

/// `{id}`, for an operation's `params(PathId, …)`.
impl utoipa::IntoParams for PathId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let id = super::integer_schema(1, None);
        vec![super::parameter(
            "id",
            ParameterIn::Path,
            "the resource's id",
            id,
        )]
    }
}

/// A resource id from the path: a positive 64-bit integer. Anything else names no resource.
pub fn parse_id(raw: &str) -> Result<i64, ApiError> {
    parse_decimal(raw)
        .and_then(|n| i64::try_from(n).ok())
        .filter(|id| *id > 0)
        .ok_or(ApiError::NotFound)
}

/// A number written in decimal digits only. Rust's own parser also takes a leading `+`,
/// which would let `/notes/+1` name note 1 and `limit=+5` pass as 5.
pub fn parse_decimal(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_must_be_positive_64_bit_integers() {
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in [
            "0",
            "-1",
            "+1",
            "abc",
            "1.5",
            "9223372036854775808",
            "18446744073709551616",
            "",
            " 1",
        ] {
            assert!(matches!(parse_id(bad), Err(ApiError::NotFound)), "{bad}");
        }
    }

    #[test]
    fn fields_collect_every_error_with_its_path() {
        let mut fields = Fields::of(json!({"text": 5, "completed": "yes"}), "[2]").unwrap();
        assert_eq!(fields.required_string("text"), None);
        assert_eq!(fields.optional_bool("completed"), None);
        let errors = fields.finish(|| Some(())).unwrap_err();
        let names: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["[2].text", "[2].completed"]);
    }

    #[test]
    fn non_objects_are_rejected() {
        for value in [json!(null), json!([]), json!("str"), json!(1)] {
            let errors = Fields::of(value, "").err().unwrap();
            assert_eq!(errors[0].field, "body");
        }
    }
}
