//! The notes web page (`GET /`) and its assets, embedded in the binary at build time.
//!
//! The page is a small script over the JSON API (api/web/UI.md says what is on it). Its
//! assets are served under names that carry a digest of their content
//! (`/assets/app.3f9c…​.js`), so a browser keeps them for a year and a new build is fetched
//! at once; the page itself is revalidated (`no-cache` with an `ETag`). Every response here
//! carries a Content-Security-Policy that allows only this server's own origin, and is
//! gzip-compressed when the browser accepts it.

use std::sync::LazyLock;

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue},
    middleware::Compress,
    web,
};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;

/// Only this origin: no inline script or style, no plugins, no framing, forms and `fetch`
/// to this server alone.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// Assets never change under one name: a year, and no revalidation.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A file of the page, as served.
struct Asset {
    /// `/assets/<stem>.<digest>.<extension>`.
    path: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// The page and its assets, named once per process.
struct Page {
    html: String,
    etag: HeaderValue,
    assets: Vec<Asset>,
}

/// The first 16 hex digits of the SHA-256 of `bytes`: enough to tell builds apart.
fn short_digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let files: [(&str, &str, &'static [u8]); 3] = [
        (
            "app.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../../web/app.js"),
        ),
        (
            "app.css",
            "text/css; charset=utf-8",
            include_bytes!("../../web/app.css"),
        ),
        (
            "icon.svg",
            "image/svg+xml",
            include_bytes!("../../web/icon.svg"),
        ),
    ];
    let mut html = include_str!("../../web/index.html").to_owned();
    let assets: Vec<Asset> = files
        .into_iter()
        .map(|(name, content_type, bytes)| {
            let (stem, extension) = name
                .rsplit_once('.')
                .expect("asset names have an extension");
            let path = format!("/assets/{stem}.{}.{extension}", short_digest(bytes));
            html = html.replace(&format!("{{{{{name}}}}}"), &path);
            Asset {
                path,
                content_type,
                bytes,
            }
        })
        .collect();
    assert!(
        !html.contains("{{"),
        "index.html names an asset that is not embedded"
    );
    let etag = HeaderValue::from_str(&format!("\"{}\"", short_digest(html.as_bytes())))
        .expect("a hex digest is a valid header value");
    Page { html, etag, assets }
});

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/")
            .wrap(Compress::default())
            .route(crate::routes::get().to(index))
            .default_service(super::allow("GET, HEAD")),
    )
    .service(
        super::resource("/assets/{name}")
            .wrap(Compress::default())
            .route(crate::routes::get().to(asset))
            .default_service(super::allow("GET, HEAD")),
    );
}

/// The notes web page
///
/// The notes app for people: sign up, sign in, and keep one's notes, in the browser. Its
/// script uses this JSON API with a bearer token.
#[utoipa::path(get, path = "/", tag = "operations",
    responses(
        (status = 200, description = "the page (HTML); its assets are under `/assets/`", body = String,
            content_type = "text/html"),
        (status = 304, description = "the page has not changed since the `ETag` given"),
    ))]
pub async fn index(req: HttpRequest) -> HttpResponse {
    let page = &*PAGE;
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags == page.etag || tags == "*");
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, page.etag.clone()))
        .insert_header((header::REFERRER_POLICY, "same-origin"));
    if unchanged {
        return response.finish();
    }
    response
        .content_type("text/html; charset=utf-8")
        .body(page.html.as_str())
}

/// An asset of the page, by its content-addressed name. Any other name is 404.
async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let wanted = format!("/assets/{name}");
    let asset = PAGE
        .assets
        .iter()
        .find(|asset| asset.path == wanted)
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .body(asset.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_linked_from_the_page_by_its_digest() {
        let page = &*PAGE;
        assert_eq!(page.assets.len(), 3);
        for asset in &page.assets {
            assert!(
                page.html.contains(&format!("\"{}\"", asset.path)),
                "{}",
                asset.path
            );
            assert!(asset.path.contains(&short_digest(asset.bytes)));
        }
        assert!(!page.html.contains("{{"));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = &PAGE.html;
        assert!(!html.contains("<style"), "inline style");
        assert!(!html.contains(" style="), "inline style attribute");
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src=\"/assets/"), "inline script: {tag}");
        }
        let handler = html.split(" on").skip(1).find(|rest| {
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert_eq!(handler, None, "inline event handler");
    }
}
