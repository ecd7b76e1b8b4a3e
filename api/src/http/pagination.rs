//! Keyset pagination, shared by every list route.
//!
//! `?limit=` (1..=1000, default 100; for a search — a query with `q` — 1..=100, default 20)
//! and `?after=` (the last id seen). A full page carries `Link: <…>; rel="next"` pointing at
//! the same query with `after` set to the page's last id (and, for a search, `rank` to its
//! rank), so a client walks the table without offsets that shift under concurrent inserts.

use actix_web::{HttpRequest, HttpResponse, http::header};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use serde::Serialize;
use utoipa::openapi::path::{Parameter, ParameterIn};

use super::{
    error::{ApiError, FieldError},
    input::parse_decimal,
};

pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;
/// The page size of a search, whose results are heavier (a snippet each) and ranked.
pub const DEFAULT_SEARCH_LIMIT: u64 = 20;
pub const MAX_SEARCH_LIMIT: u64 = 100;

/// The longest query string accepted, to bound parsing work.
const MAX_QUERY_LEN: usize = 2048;

/// Parsed query parameters: the page, plus the route's own filters by name.
pub struct ListQuery {
    pub limit: u64,
    pub after: Option<i64>,
    pairs: Vec<(String, String)>,
}

impl ListQuery {
    /// Parse `limit` and `after`; the route reads its own filters later. Unknown
    /// parameters are ignored, as HTTP caches and proxies may add their own.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(ApiError::BadRequest(format!(
                "the query string is longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::BadRequest("the query string is malformed".into()))?;
        let mut errors = Vec::new();
        let (default, max) = match last(&pairs, "q") {
            Some(_) => (DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT),
            None => (DEFAULT_LIMIT, MAX_LIMIT),
        };
        let limit = match last(&pairs, "limit") {
            None => default,
            Some(raw) => match parse_decimal(raw) {
                Some(n) if (1..=max).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "limit",
                        format!("must be an integer from 1 to {max}"),
                    ));
                    default
                }
            },
        };
        let after = last(&pairs, "after").and_then(|raw| {
            let after = parse_decimal(raw).and_then(|n| i64::try_from(n).ok());
            if after.is_none() {
                errors.push(FieldError::new(
                    "after",
                    "must be a non-negative integer id",
                ));
            }
            after
        });
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Self {
            limit,
            after,
            pairs,
        })
    }

    /// The parameter `name` as given (its last value), if it is.
    pub fn param(&self, name: &str) -> Option<&str> {
        last(&self.pairs, name)
    }

    /// A non-negative integer parameter, absent when not given.
    pub fn integer_param(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.param(name)
            .map(|raw| {
                parse_decimal(raw)
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| ApiError::invalid(name, "must be a non-negative integer"))
            })
            .transpose()
    }

    /// A boolean filter (`true`/`false`), absent when not given.
    pub fn bool_param(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match last(&self.pairs, name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid(name, "must be true or false")),
        }
    }

    /// `order`: `asc` (the default: oldest first) or `desc` (newest first). With `desc`,
    /// `after` is the last id seen walking down, so the next page holds smaller ids.
    pub fn newest_first(&self) -> Result<bool, ApiError> {
        match last(&self.pairs, "order") {
            None | Some("asc") => Ok(false),
            Some("desc") => Ok(true),
            Some(_) => Err(ApiError::invalid("order", "must be asc or desc")),
        }
    }

    /// `select` narrowed to this page: ordered by its `id` column (descending when
    /// `newest_first`), past `after`, at most `limit` rows — keyset paging.
    pub fn page<E: EntityTrait>(
        &self,
        select: Select<E>,
        id: E::Column,
        newest_first: bool,
    ) -> Select<E> {
        let select = select.limit(self.limit);
        let select = if newest_first {
            select.order_by_desc(id)
        } else {
            select.order_by_asc(id)
        };
        match self.after {
            Some(after) if newest_first => select.filter(id.lt(after)),
            Some(after) => select.filter(id.gt(after)),
            None => select,
        }
    }

    /// 200 with `items` as a JSON array, and a `Link: rel="next"` header when the page is full.
    pub fn respond<T: Serialize>(
        &self,
        req: &HttpRequest,
        items: &[T],
        id: impl Fn(&T) -> i64,
    ) -> HttpResponse {
        let next = items
            .last()
            .filter(|_| items.len() as u64 == self.limit)
            .map(|last| vec![("after", id(last).to_string())]);
        self.respond_with_next(req, items, next)
    }

    /// 200 with `items` as a JSON array, and a `Link: rel="next"` header to the same query
    /// with the parameters of `next` (the next page's cursor) when there is one.
    pub fn respond_with_next<T: Serialize>(
        &self,
        req: &HttpRequest,
        items: &[T],
        next: Option<Vec<(&str, String)>>,
    ) -> HttpResponse {
        let mut response = HttpResponse::Ok();
        if let Some(cursor) = next {
            let mut next: Vec<(&str, String)> = self
                .pairs
                .iter()
                .filter(|(k, _)| k != "limit" && cursor.iter().all(|(name, _)| k != name))
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            next.push(("limit", self.limit.to_string()));
            next.extend(cursor);
            let query = serde_urlencoded::to_string(&next).unwrap_or_default();
            response.insert_header((
                header::LINK,
                format!("<{}?{query}>; rel=\"next\"", req.path()),
            ));
        }
        response.json(items)
    }
}

/// `limit` and `after`, for the list operations' `params(ListQuery, …)`.
impl utoipa::IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            super::parameter(
                "limit",
                ParameterIn::Query,
                &format!(
                    "page size (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}; for a search: \
                     default {DEFAULT_SEARCH_LIMIT}, at most {MAX_SEARCH_LIMIT})"
                ),
                super::integer_schema(1, Some(MAX_LIMIT)),
            ),
            super::parameter(
                "after",
                ParameterIn::Query,
                "return items with a larger id than this one (the last id of the previous page)",
                super::integer_schema(0, None),
            ),
        ]
    }
}

fn last<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let q = ListQuery::parse("").unwrap();
        assert_eq!((q.limit, q.after), (DEFAULT_LIMIT, None));
        let q = ListQuery::parse("limit=1000&after=7").unwrap();
        assert_eq!((q.limit, q.after), (1000, Some(7)));
        let q = ListQuery::parse("q=apple").unwrap();
        assert_eq!(q.limit, DEFAULT_SEARCH_LIMIT);
        assert!(ListQuery::parse("q=apple&limit=100").is_ok());
        assert!(ListQuery::parse("q=apple&limit=101").is_err());
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=abc",
            "limit=+5",
            "after=-1",
            "after=+1",
            "after=1.5",
            "after=9223372036854775808",
        ] {
            assert!(
                matches!(ListQuery::parse(bad), Err(ApiError::Validation(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn boolean_filters_take_true_or_false() {
        let q = ListQuery::parse("completed=true").unwrap();
        assert_eq!(q.bool_param("completed").unwrap(), Some(true));
        let q = ListQuery::parse("completed=yes").unwrap();
        assert!(q.bool_param("completed").is_err());
    }

    #[test]
    fn order_is_asc_or_desc() {
        for (query, newest_first) in [("", false), ("order=asc", false), ("order=desc", true)] {
            let q = ListQuery::parse(query).unwrap();
            assert_eq!(q.newest_first().unwrap(), newest_first, "{query}");
        }
        for bad in ["order=DESC", "order=", "order=newest"] {
            let q = ListQuery::parse(bad).unwrap();
            assert!(
                matches!(q.newest_first(), Err(ApiError::Validation(_))),
                "{bad}"
            );
        }
    }
}
