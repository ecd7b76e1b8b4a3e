//! Who is calling: the signed-in user ([`CurrentUser`], an extractor every protected handler
//! takes, so a route cannot forget the check) and the client's address (for the sign-in
//! throttle).

use std::{future::Future, net::IpAddr, pin::Pin, sync::Arc, time::Instant};

use sea_orm::DbErr;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use entity::{session, user};

use super::{error::ApiError, input::PathId};
use crate::{db::RequestDb, session_cache::Caller, state::AppState};

/// The longest bearer token looked up; ours are 64 characters. A longer one is refused
/// without touching the database.
const MAX_TOKEN_CHARS: usize = 256;

/// The signed-in user, from `Authorization: Bearer <token>`: a session that exists, has not
/// expired, and belongs to an active user. Anything else is 401 with
/// `WWW-Authenticate: Bearer`. The lookup runs on the request's database handle, unless this
/// process read the same token less than half a second ago ([`crate::session_cache`]).
///
/// It knows who the caller is and whether they are an admin; a route that shows the account
/// or checks its password reads it with [`CurrentUser::account`].
#[derive(Debug)]
pub struct CurrentUser {
    caller: Caller,
    /// The digest of the token this request came with (its session's key).
    pub token_digest: String,
}

impl CurrentUser {
    pub fn id(&self) -> i64 {
        self.caller.id
    }

    pub fn is_admin(&self) -> bool {
        self.caller.is_admin
    }

    /// The caller's account as stored now (what the token lookup read may be half a second
    /// old, and a change made through another instance must show at once); `None` when it
    /// was deleted meanwhile.
    pub async fn account(&self, db: &RequestDb) -> Result<Option<user::Model>, DbErr> {
        db.find_by_id::<user::Entity>(self.id()).await
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case), if well-formed.
fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= MAX_TOKEN_CHARS
        && token.bytes().all(|b| b.is_ascii_graphic());
    well_formed.then_some(token)
}

impl FromRequest for CurrentUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let digest = bearer_token(req).map(session::digest);
        let db = RequestDb::from_request(req, payload).into_inner();
        let sessions = req
            .app_data::<web::Data<AppState>>()
            .map(|state| Arc::clone(&state.sessions));
        Box::pin(async move {
            let digest = digest.ok_or(ApiError::Unauthorized)?;
            if let Some(caller) = sessions.as_ref().and_then(|cache| cache.get(&digest)) {
                return Ok(Self {
                    caller,
                    token_digest: digest,
                });
            }
            let read_at = Instant::now();
            let found = db?
                .signed_in_user(&digest, entity::now())
                .await?
                .ok_or(ApiError::Unauthorized)?;
            let caller = Caller {
                id: found.id,
                is_admin: found.is_admin,
            };
            if let Some(cache) = sessions {
                cache.put(digest.clone(), caller, read_at);
            }
            Ok(Self {
                caller,
                token_digest: digest,
            })
        })
    }
}

/// Extractor: the caller, then `T` — one extractor, or a tuple of them extracted left to
/// right — so the first error is the caller's: an anonymous request is 401 whatever else is
/// wrong with it (a bad id, a bad body), and a bad body is reported before a bad id.
///
/// actix extracts a handler's arguments together and answers the first error to come: a bad
/// id is known at once while the token lookup waits for the database. Taking the id and the
/// body through `Signed` puts them after the caller.
pub struct Signed<T>(pub CurrentUser, pub T);

impl<T: InOrder + 'static> FromRequest for Signed<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = CurrentUser::from_request(req, &mut Payload::None);
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let me = caller.await?;
            let rest = T::extract(&req, &mut payload).await?;
            Ok(Self(me, rest))
        })
    }
}

/// What [`Signed`] extracts after the caller: an extractor that fails with an [`ApiError`],
/// or a tuple of them, extracted in order.
pub trait InOrder: Sized {
    fn extract(
        req: &HttpRequest,
        payload: &mut Payload,
    ) -> impl Future<Output = Result<Self, ApiError>>;
}

impl InOrder for PathId {
    async fn extract(req: &HttpRequest, payload: &mut Payload) -> Result<Self, ApiError> {
        Self::from_request(req, payload).await
    }
}

impl<A: FromRequest<Error = ApiError>, B: FromRequest<Error = ApiError>> InOrder for (A, B) {
    async fn extract(req: &HttpRequest, payload: &mut Payload) -> Result<Self, ApiError> {
        let a = A::from_request(req, payload).await?;
        let b = B::from_request(req, payload).await?;
        Ok((a, b))
    }
}

/// The client's address: the socket peer, or — when the peer is a proxy listed in
/// `FORWARDED_ALLOW_IPS` — the last address of `X-Forwarded-For` (the one that proxy saw).
/// A request with no peer address (not over TCP) counts as the unspecified address.
pub fn client_address(req: &HttpRequest) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |peer| {
            peer.ip()
        });
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.settings.forwarded_allow.trusts(peer));
    if !trusted {
        return peer;
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .last()
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    forwarded.unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn token_of(value: &str) -> Option<String> {
        let req = TestRequest::default()
            .insert_header((header::AUTHORIZATION, value))
            .to_http_request();
        bearer_token(&req).map(str::to_owned)
    }

    #[test]
    fn reads_bearer_tokens_only() {
        assert_eq!(token_of("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_of("bearer abc").as_deref(), Some("abc"));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc", "Bearer a b"] {
            assert_eq!(token_of(bad), None, "{bad:?}");
        }
        assert_eq!(token_of(&format!("Bearer {}", "a".repeat(257))), None);
    }
}
