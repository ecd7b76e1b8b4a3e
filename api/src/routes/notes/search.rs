//! `GET /notes?q=…`: the caller's notes that match a query, best first, each with a snippet
//! and where the matched words are in it. The language and the matching are
//! [`crate::search`]'s; this module pages through the index's candidates and keeps the
//! notes that match.

use actix_web::{HttpRequest, HttpResponse};
use entity::note;
use sea_orm::{DbErr, FromQueryResult, QueryResult};
use serde::Serialize;
use utoipa::ToSchema;

use super::NoteView;
use crate::{
    db::RequestDb,
    http::{auth::CurrentUser, error::ApiError, pagination::ListQuery},
    search::{
        Query,
        sql::{self, Page},
    },
};

/// How many batches of candidates one page reads, at most, before it answers with what it
/// found (and a `Link` to go on): PostgreSQL's rank tiers may take one each, and candidates
/// the text check refuses are rare.
const MAX_BATCHES: usize = 5;

/// A search result: the note, an excerpt of it, and the matched words in the excerpt.
#[derive(Serialize, ToSchema)]
pub struct FoundNote {
    #[serde(flatten)]
    pub note: NoteView,
    /// At most 200 characters around the first match (the whole text when shorter).
    pub snippet: String,
    /// Each matched word occurrence shown in `snippet`, as `[start, end)` offsets in
    /// characters (Unicode scalar values).
    #[schema(value_type = Vec<Vec<u64>>)]
    pub matches: Vec<[usize; 2]>,
}

/// A candidate row: the note as lists read it, then its rank.
struct Candidate {
    note: note::Listed,
    rank: i64,
}

impl FromQueryResult for Candidate {
    fn from_query_result(row: &QueryResult, _: &str) -> Result<Self, DbErr> {
        Ok(Self {
            note: note::Listed::from_query_result(row, "")?,
            rank: row.try_get_by_index(note::Listed::COLUMNS.len())?,
        })
    }
}

/// The page of the caller's notes matching `q` that `query` asks for (`rank`: the rank of the
/// last note of the previous page, given with its id in `after`).
pub async fn search(
    me: &CurrentUser,
    req: &HttpRequest,
    db: &RequestDb,
    query: &ListQuery,
    q: &str,
    rank: Option<i64>,
) -> Result<HttpResponse, ApiError> {
    let parsed = Query::parse(q).map_err(|error| ApiError::invalid("q", error.to_string()))?;
    let mut page = Page {
        owner: me.id(),
        completed: query.bool_param("completed")?,
        after: match (rank, query.after) {
            (Some(rank), Some(id)) => Some((rank, id)),
            (None, None) => None,
            _ => {
                return Err(ApiError::invalid(
                    "after",
                    "a search continues with both `after` and `rank`, from its `Link`",
                ));
            }
        },
        limit: query.limit,
        widen: false,
    };
    let mut found = Vec::new();
    let mut more = false;
    for _ in 0..MAX_BATCHES {
        let batch = sql::batch(&parsed, &page, db.backend());
        let candidates = db
            .all(Candidate::find_by_statement(batch.statement))
            .await?;
        let candidates_read = candidates.len();
        let full = candidates_read as u64 == page.limit;
        for candidate in candidates {
            page.after = Some((candidate.rank, candidate.note.id));
            if let Some(hit) = parsed.find(&candidate.note.text) {
                found.push(FoundNote {
                    note: candidate.note.into(),
                    snippet: hit.snippet,
                    matches: hit.matches,
                });
                if found.len() as u64 == query.limit {
                    break;
                }
            }
        }
        if found.len() as u64 == query.limit {
            more = true;
            break;
        }
        more = full || batch.then.is_some();
        if !full {
            match batch.then {
                Some(next) => {
                    page.widen = candidates_read == 0;
                    page.after = Some(next);
                }
                None => break,
            }
        }
    }
    let next = page
        .after
        .filter(|_| more)
        .map(|(rank, id)| vec![("after", id.to_string()), ("rank", rank.to_string())]);
    Ok(query.respond_with_next(req, &found, next))
}
