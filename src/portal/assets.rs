//! The portal's page and its static files, embedded in the binary: nothing is fetched at run
//! time, so the portal works on an intranet without internet.
//!
//! Takes: a name from the request. Gives: the file of that exact name in [`ASSETS`], or 404.
//! Names are looked up in the table, never joined to a folder.
//!
//! Leaflet 1.9.4 is vendored from the npm registry (`npm pack leaflet@1.9.4`, its `dist`
//! files and licence, BSD-2-Clause) under `web/leaflet/`.

use axum::extract::Path as UrlPath;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Name under `/assets/`, media type, content.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("web/app.css"),
    ),
    (
        "leaflet.js",
        "text/javascript; charset=utf-8",
        include_bytes!("web/leaflet/leaflet.js"),
    ),
    (
        "leaflet.css",
        "text/css; charset=utf-8",
        include_bytes!("web/leaflet/leaflet.css"),
    ),
    (
        "leaflet-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("web/leaflet/LICENSE"),
    ),
    (
        "images/layers.png",
        "image/png",
        include_bytes!("web/leaflet/images/layers.png"),
    ),
    (
        "images/layers-2x.png",
        "image/png",
        include_bytes!("web/leaflet/images/layers-2x.png"),
    ),
];

const PAGE: &str = include_str!("web/index.html");

/// Headers every page answer carries: no framing by other sites, no guessing of types, and
/// scripts, styles and images from this server only.
fn guarded(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn page() -> Response {
    guarded("text/html; charset=utf-8", PAGE.as_bytes())
}

pub(super) async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => guarded(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
