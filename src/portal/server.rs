//! The portal's HTTP API over the job's ledger (axum on tokio).
//!
//! Takes: the job's config (its ledger file, grid CRS, sensor and output folder) and an
//! address to listen on. Gives: the page (`/`, its assets under `/assets/`) and the API it
//! uses: `POST /api/login`, `POST /api/logout`, `GET /api/options` (what the account may
//! filter by: periods with their map extent, counties, townships, types, statuses),
//! `GET /api/patches` (GeoJSON in WGS 84, optionally within a `bbox` and at most `limit`),
//! `GET /api/list` (one page of the filtered list), `GET /api/list.xlsx` (all of it as a
//! spreadsheet), `GET /api/patches/{tbbh}` (its card), `GET /api/patches/{tbbh}/chip.png`,
//! `POST /api/patches/{tbbh}/status`, `POST /api/patches/{tbbh}/evidence`,
//! `GET /api/patches/{tbbh}/evidence/{sha256}` (a stored file back),
//! `GET /api/packages/{period}/{XZQDM}.zip`, `POST /api/returns` (a county's returned list)
//! and `GET /api/tiles/{period}/{z}/{x}/{y}.png`
//! (the period's composite in true colour).
//!
//! Rules every endpoint keeps:
//! - no session: 401; a state change without the session's CSRF token (header
//!   `X-CSRF-Token`): 403, before anything else is looked at;
//! - a patch of a county the account may not read answers exactly as a patch that does not
//!   exist (404): no data, no hint;
//! - status changes go through the ledger's lifecycle rules, as `ledger set-status` does;
//!   an illegal one is refused (409) with the allowed ones; a change that names the status
//!   it was made from (`from`) is refused (409) when someone else moved the patch first;
//! - names from requests never become paths: a package is found by a parsed period and a
//!   six-digit county code, a chip by a patch number the ledger holds, an asset by its name
//!   in the table of embedded files;
//! - map tiles show the imagery of the whole job to every signed-in account: imagery is not
//!   a county's data, patches are;
//! - the session cookie is HttpOnly and SameSite=Strict, and Secure when served over TLS
//!   (`--tls-cert`, `--tls-key`); sessions live in this process and
//!   end after [`IDLE_SECONDS`] without a request, at logout, or when the account is
//!   disabled;
//! - failed logins are limited per address ([`ADDRESS_FAILURES`] per
//!   [`ADDRESS_WINDOW_SECONDS`]: 429) and lock the account after repeated failures
//!   ([`super::accounts`]).

use super::accounts::{Account, Accounts, LOCK_AFTER_FAILURES, LOCK_SECONDS};
use super::assets;
use super::evidence::{EvidenceStore, Kind, Patch, MAX_BYTES};
use super::tls::{TlsFiles, TlsListener};
use crate::domain::change::ChangeType;
use crate::domain::period::Period;
use crate::domain::status::{allowed_from, By, Evidence, Status};
use crate::engine::patch_record::{patch_values, PATCH_FIELDS};
use crate::engine::patches::SQM_PER_MU;
use crate::error::{Error, Result};
use crate::geo::sensor::SensorProfile;
use crate::job::config::JobConfig;
use crate::job::layout::OutputLayout;
use crate::ledger::{Entry, Filter, Ledger, Listed};
use crate::render::tiles::TrueColourTiles;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Multipart, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gdal::spatial_ref::{CoordTransform, SpatialRef};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// A session ends after this long without a request.
pub const IDLE_SECONDS: i64 = 8 * 3600;
/// Failed logins from one address within [`ADDRESS_WINDOW_SECONDS`] before it must wait.
pub const ADDRESS_FAILURES: u32 = 20;
pub const ADDRESS_WINDOW_SECONDS: i64 = 600;

const COOKIE: &str = "gengbao_session";
/// The answer to every refused login.
fn login_refused() -> String {
    format!(
        "name or password wrong (after {LOCK_AFTER_FAILURES} failures in a row an account waits {} minutes)",
        LOCK_SECONDS / 60
    )
}

struct Session {
    name: String,
    /// The account's generation at login: a reset or a disable since ends the session.
    generation: i64,
    csrf: String,
    last_seen: i64,
}

/// What the handlers share: the ledger and the accounts (one connection each, taken in
/// turn), the sessions, and failed logins per address.
struct Portal {
    ledger: Mutex<Ledger>,
    accounts: Mutex<Accounts>,
    evidence: Mutex<EvidenceStore>,
    /// How far from its patch a photo may be taken without a warning.
    evidence_distance_m: f64,
    /// Served over TLS: cookies are marked `Secure`.
    secure_cookies: bool,
    /// Where the dispatch packages are.
    layout: OutputLayout,
    /// The ledger's outlines are in the job's grid CRS (as WKT).
    grid_crs: String,
    /// The job's sensor: the band order of its composites.
    profile: &'static SensorProfile,
    /// Tiles of each period's composite, opened at its first tile.
    tiles: Mutex<HashMap<Period, Arc<TrueColourTiles>>>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, i64)>>,
}

/// How far from its patch a site photo may be taken without a warning, unless the portal is
/// told otherwise.
pub const DEFAULT_EVIDENCE_DISTANCE_M: f64 = 200.0;

/// How `gengbao serve` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A site photo taken farther than this from its patch (metres) is flagged.
    pub evidence_distance_m: f64,
    /// HTTPS with these files; plain HTTP without.
    pub tls: Option<TlsFiles>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            evidence_distance_m: DEFAULT_EVIDENCE_DISTANCE_M,
            tls: None,
        }
    }
}

/// The address a request came from: the login record, the per-address limit and the
/// history name it.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The portal's routes over the ledger and the dispatch packages of the job `cfg`.
pub fn router(cfg: &JobConfig, serving: &ServeOptions) -> Result<Router> {
    let ledger = cfg.layout().ledger_file();
    let portal = Portal {
        ledger: Mutex::new(Ledger::open_existing(&ledger)?),
        accounts: Mutex::new(Accounts::open(&ledger)?),
        evidence: Mutex::new(EvidenceStore::open(&ledger, &cfg.layout().evidence())?),
        evidence_distance_m: serving.evidence_distance_m,
        secure_cookies: serving.tls.is_some(),
        layout: cfg.layout(),
        grid_crs: SpatialRef::from_definition(&cfg.grid.crs)?.to_wkt()?,
        profile: SensorProfile::by_name(&cfg.imagery.sensor)?,
        tiles: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
    };
    Ok(Router::new()
        .route("/", get(assets::page))
        .route("/assets/{*name}", get(assets::asset))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/options", get(options))
        .route("/api/patches", get(patches))
        .route("/api/list", get(list))
        .route("/api/list.xlsx", get(list_xlsx))
        .route("/api/patches/{tbbh}", get(patch))
        .route("/api/patches/{tbbh}/chip.png", get(chip))
        .route("/api/tiles/{period}/{z}/{x}/{y}", get(tile))
        .route("/api/patches/{tbbh}/status", post(set_status))
        .route(
            "/api/patches/{tbbh}/evidence",
            post(add_evidence).layer(DefaultBodyLimit::max(MAX_BYTES + (64 << 10))),
        )
        .route("/api/patches/{tbbh}/evidence/{sha256}", get(evidence_file))
        .route("/api/packages/{period}/{file}", get(package))
        .route(
            "/api/returns",
            post(import_returns).layer(DefaultBodyLimit::max(MAX_BYTES + (64 << 10))),
        )
        .with_state(Arc::new(portal)))
}

/// Serves the portal on `listen` until the process ends.
pub fn serve(cfg: &JobConfig, listen: SocketAddr, options: &ServeOptions) -> Result<()> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        Error::usage(
            format!("cannot listen on {listen} ({e})"),
            "choose a free address with --listen, e.g. 127.0.0.1:8081",
        )
    })?;
    serve_on(listener, cfg, options)
}

/// Serves the portal on a bound listener until the process ends.
pub fn serve_on(
    listener: std::net::TcpListener,
    cfg: &JobConfig,
    options: &ServeOptions,
) -> Result<()> {
    let acceptor = options.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    let app = router(cfg, options)?;
    let failed =
        |e: std::io::Error| Error::usage(format!("the portal stopped ({e})"), "start it again");
    listener.set_nonblocking(true).map_err(failed)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(failed)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(failed)?;
        let service = app.into_make_service_with_connect_info::<Peer>();
        match acceptor {
            Some(acceptor) => {
                let tls = TlsListener::new(listener, acceptor).map_err(failed)?;
                axum::serve(tls, service).await.map_err(failed)
            }
            None => axum::serve(listener, service).await.map_err(failed),
        }
    })
}

type Shared = State<Arc<Portal>>;

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn refusal(code: StatusCode, message: &str) -> Response {
    answer(code, json!({ "error": message }))
}

fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "no such patch")
}

fn server_error(e: Error) -> Response {
    refusal(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

/// `s` when it is a county code (XZQDM, six digits): a name from a request that may then
/// become part of a path.
fn county_code(s: &str) -> Option<&str> {
    (s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(String::from)
        })
}

/// The signed-in account of a request, taken before anything else of the request is read:
/// no session (or one its account has outlived: disabled, password reset) is 401, and a
/// state change (any method but GET) without the session's CSRF token is 403.
struct Signed {
    account: Account,
    token: String,
}

impl axum::extract::FromRequestParts<Arc<Portal>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        portal: &Arc<Portal>,
    ) -> std::result::Result<Self, Response> {
        let no_session = || refusal(StatusCode::UNAUTHORIZED, "log in first");
        let token = session_token(&parts.headers).ok_or_else(no_session)?;
        let (name, generation) = {
            let mut sessions = portal.sessions.lock().expect("sessions");
            let now = unix_now();
            sessions.retain(|_, s| now - s.last_seen < IDLE_SECONDS);
            let session = sessions.get_mut(&token).ok_or_else(no_session)?;
            if parts.method != axum::http::Method::GET {
                let sent = parts
                    .headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok());
                if sent != Some(session.csrf.as_str()) {
                    return Err(refusal(
                        StatusCode::FORBIDDEN,
                        "missing or wrong CSRF token",
                    ));
                }
            }
            session.last_seen = now;
            (session.name.clone(), session.generation)
        };
        let account = portal
            .accounts
            .lock()
            .expect("accounts")
            .account(&name)
            .map_err(server_error)?;
        match account {
            Some(account) if !account.disabled && account.generation == generation => {
                Ok(Signed { account, token })
            }
            _ => {
                portal.sessions.lock().expect("sessions").remove(&token);
                Err(no_session())
            }
        }
    }
}

impl Portal {
    /// The session cookie's attributes: never readable by scripts, never sent from another
    /// site, and over TLS never sent without it.
    fn cookie_attributes(&self) -> &'static str {
        if self.secure_cookies {
            "HttpOnly; SameSite=Strict; Secure; Path=/"
        } else {
            "HttpOnly; SameSite=Strict; Path=/"
        }
    }

    /// The patch `tbbh` when the account may read it; None when it does not exist or
    /// belongs to a county the account may not read (the same answer for both).
    fn readable(&self, account: &Account, tbbh: &str) -> Option<Entry> {
        let entry = self.ledger.lock().expect("ledger").entry(tbbh).ok()?;
        account.may_read(&entry.county).then_some(entry)
    }

    fn to_lon_lat(&self) -> Result<std::rc::Rc<CoordTransform>> {
        let grid = self.grid_srs()?;
        Ok(crate::geo::raster::transform_between(
            &grid,
            &crate::geo::raster::lon_lat()?,
        )?)
    }

    fn grid_srs(&self) -> Result<SpatialRef> {
        let mut grid = SpatialRef::from_wkt(&self.grid_crs)?;
        grid.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
        Ok(grid)
    }

    /// The outline of patch `tbbh` in WGS 84 (longitude, latitude).
    fn outline_in_degrees(&self, ledger: &Ledger, tbbh: &str) -> Result<gdal::vector::Geometry> {
        let mut outline = ledger.outline(tbbh)?;
        let to_degrees = self.to_lon_lat()?;
        outline.transform_inplace(&to_degrees)?;
        Ok(outline)
    }

    /// A box in degrees (west, south, east, north) as a box in the grid CRS.
    fn box_in_grid(&self, [w, s, e, n]: [f64; 4]) -> Result<[f64; 4]> {
        let to_grid = crate::geo::raster::transform_between(
            &crate::geo::raster::lon_lat()?,
            &self.grid_srs()?,
        )?;
        let (x0, y0, x1, y1) = crate::geo::raster::transform_bounds(&to_grid, (w, s, e, n))?;
        Ok([x0, y0, x1, y1])
    }

    /// The filter of a request, scoped to what the account may read; None when the account
    /// asked for a county it may not read (an empty answer, as for a county without
    /// patches).
    fn scoped(
        &self,
        account: &Account,
        query: &PatchQuery,
    ) -> std::result::Result<Option<Filter>, Box<Response>> {
        let bad = |message: &str| Box::new(refusal(StatusCode::BAD_REQUEST, message));
        let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(Status::parse(s).ok_or_else(|| bad(&format!("no status {s}")))?),
            None => None,
        };
        let within = match query.bbox.as_deref() {
            Some(b) => {
                let numbers: Vec<f64> =
                    b.split(',').filter_map(|v| v.trim().parse().ok()).collect();
                let ([w, s, e, n], true) = (
                    numbers[..].try_into().unwrap_or([f64::NAN; 4]),
                    numbers.iter().all(|v| v.is_finite()),
                ) else {
                    return Err(bad("bbox is west,south,east,north in degrees"));
                };
                // A map zoomed out past the world's edge asks beyond it; Web Mercator ends
                // at 85.05°.
                let (w, e) = (w.clamp(-180.0, 180.0), e.clamp(-180.0, 180.0));
                let (s, n) = (s.clamp(-85.05, 85.05), n.clamp(-85.05, 85.05));
                Some(
                    self.box_in_grid([w, s, e, n])
                        .map_err(|e| Box::new(server_error(e)))?,
                )
            }
            None => None,
        };
        let asked = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        // A county's accounts see their county whatever they ask for.
        let county = match (account.own_county(), asked(&query.county)) {
            (Some(own), Some(asked)) if asked != own => return Ok(None),
            (Some(own), _) => Some(own.to_string()),
            (None, asked) => asked,
        };
        Ok(Some(Filter {
            county,
            change: asked(&query.change),
            status,
            period: asked(&query.period),
            township: asked(&query.township),
            within,
        }))
    }

    /// West, south, east, north in degrees of the patches matching `filter`.
    fn extent_in_degrees(&self, filter: &Filter) -> Result<Option<[f64; 4]>> {
        let Some([x0, y0, x1, y1]) = self.ledger.lock().expect("ledger").extent(filter)? else {
            return Ok(None);
        };
        let to_degrees = self.to_lon_lat()?;
        let (w, s, e, n) = crate::geo::raster::transform_bounds(&to_degrees, (x0, y0, x1, y1))?;
        Ok(Some([w, s, e, n]))
    }

    /// The patches matching `filter` that `account` may read, `limit` from `offset`.
    fn page(
        &self,
        account: &Account,
        filter: &Filter,
        offset: u64,
        limit: u64,
    ) -> Result<crate::ledger::Page> {
        let mut page = self
            .ledger
            .lock()
            .expect("ledger")
            .page(filter, offset, limit)?;
        // The filter is scoped already; this keeps a wrong scope from ever showing data.
        page.patches.retain(|l| account.may_read(&l.entry.county));
        Ok(page)
    }

    /// The map tiles of `period`'s composite.
    fn tiles(&self, period: Period) -> Result<Arc<TrueColourTiles>> {
        if let Some(t) = self.tiles.lock().expect("tiles").get(&period) {
            return Ok(t.clone());
        }
        let files = self.layout.period(period);
        if !files.summary().exists() {
            return Err(Error::usage(
                format!("no finished period {period}"),
                "see /api/options",
            ));
        }
        let tiles = Arc::new(TrueColourTiles::open(&files.look(), self.profile)?);
        self.tiles
            .lock()
            .expect("tiles")
            .insert(period, tiles.clone());
        Ok(tiles)
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    name: String,
    password: String,
}

async fn login(
    State(portal): Shared,
    ConnectInfo(Peer(from)): ConnectInfo<Peer>,
    Json(request): Json<LoginRequest>,
) -> Response {
    let now = unix_now();
    {
        let mut failures = portal.failures.lock().expect("failures");
        failures.retain(|_, (_, since)| now - *since < ADDRESS_WINDOW_SECONDS);
        if failures
            .get(&from.ip())
            .is_some_and(|(n, _)| *n >= ADDRESS_FAILURES)
        {
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins from this address: wait ten minutes",
            );
        }
    }
    // Checking a password takes tens of milliseconds of CPU: off the threads that serve the
    // other requests.
    // Its own connection: the shared one stays free for the requests of signed-in people.
    let ledger_file = portal.layout.ledger_file();
    let outcome = tokio::task::spawn_blocking(move || {
        Accounts::open(&ledger_file)?.log_in(
            &request.name,
            &request.password,
            &from.ip().to_string(),
            now,
        )
    })
    .await
    .unwrap_or_else(|e| {
        Err(Error::usage(
            format!("the login check failed ({e})"),
            "retry",
        ))
    });
    let account = match outcome {
        Ok(Ok(account)) => account,
        // One answer for every refusal: a locked or disabled account must not tell that
        // the name exists. The login record keeps the reason.
        Ok(Err(_)) => {
            let mut failures = portal.failures.lock().expect("failures");
            failures.entry(from.ip()).or_insert((0, now)).0 += 1;
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({
                    "error": login_refused(),
                    "lock_after_failures": LOCK_AFTER_FAILURES,
                    "lock_minutes": LOCK_SECONDS / 60,
                }),
            );
        }
        Err(e) => return server_error(e),
    };
    let (session, csrf) = (token(), token());
    portal.sessions.lock().expect("sessions").insert(
        session.clone(),
        Session {
            name: account.name.clone(),
            generation: account.generation,
            csrf: csrf.clone(),
            last_seen: now,
        },
    );
    let cookie = format!("{COOKIE}={session}; {}", portal.cookie_attributes());
    let mut response = answer(
        StatusCode::OK,
        json!({"csrf": csrf, "name": account.name, "role": account.role, "county": account.county}),
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(portal): Shared, Signed { token, .. }: Signed) -> Response {
    portal.sessions.lock().expect("sessions").remove(&token);
    let mut response = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{COOKIE}=; {}; Max-Age=0", portal.cookie_attributes());
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct PatchQuery {
    county: Option<String>,
    township: Option<String>,
    period: Option<String>,
    #[serde(rename = "type")]
    change: Option<String>,
    status: Option<String>,
    /// west,south,east,north in degrees.
    bbox: Option<String>,
    /// At most this many features (the map), or patches a page (the list).
    limit: Option<u64>,
    /// The list's page, from 1.
    page: Option<u64>,
}

/// Features the map asks for at most, unless it asks for fewer.
const MAP_LIMIT: u64 = 5_000;
/// Rows of a list page, unless the page asks for fewer.
const LIST_LIMIT: u64 = 100;

fn properties(e: &Entry) -> Value {
    json!({
        "tbbh": e.tbbh,
        "county": e.county,
        "type": e.change,
        "status": e.status.code(),
        "status_zh": e.status.label_zh(),
        "first_period": e.first_period,
        "last_period": e.last_period,
        "area_m2": e.area_m2,
        "area_mu": e.area_m2 / SQM_PER_MU,
        "evidence": e.evidence.map(|v| v.label_zh()),
    })
}

/// The properties of a listed patch, with the names its latest sighting gives.
fn listed_properties(l: &Listed) -> Value {
    let mut p = properties(&l.entry);
    if let Value::Object(m) = &mut p {
        let r = &l.record;
        for (k, v) in [
            ("county_name", r.county_name.as_str()),
            ("township", r.township_code.as_str()),
            ("township_name", r.township_name.as_str()),
            ("type_zh", r.change.label_zh()),
            ("before_zh", r.before.label_zh()),
            ("after_zh", r.after.label_zh()),
        ] {
            m.insert(k.into(), json!(v));
        }
        m.insert("confidence".into(), json!(r.confidence));
    }
    p
}

async fn patches(
    State(portal): Shared,
    Signed { account, .. }: Signed,
    Query(query): Query<PatchQuery>,
) -> Response {
    let empty =
        json!({"type": "FeatureCollection", "features": [], "total": 0, "truncated": false});
    let filter = match portal.scoped(&account, &query) {
        Ok(Some(f)) => f,
        Ok(None) => return answer(StatusCode::OK, empty),
        Err(refused) => return *refused,
    };
    let limit = query.limit.unwrap_or(MAP_LIMIT).min(MAP_LIMIT);
    let collected = portal.page(&account, &filter, 0, limit).and_then(|page| {
        let ledger = portal.ledger.lock().expect("ledger");
        let features = page
            .patches
            .iter()
            .map(|l| {
                let outline = portal.outline_in_degrees(&ledger, &l.entry.tbbh)?;
                let geometry: Value = serde_json::from_str(&outline.json()?).unwrap_or(Value::Null);
                Ok(json!({"type": "Feature", "geometry": geometry, "properties": listed_properties(l)}))
            })
            .collect::<Result<Vec<Value>>>()?;
        Ok((page.total, features))
    });
    match collected {
        Ok((total, features)) => answer(
            StatusCode::OK,
            json!({
                "type": "FeatureCollection",
                "features": features,
                "total": total,
                "truncated": (features.len() as u64) < total,
            }),
        ),
        Err(e) => server_error(e),
    }
}

async fn list(
    State(portal): Shared,
    Signed { account, .. }: Signed,
    Query(query): Query<PatchQuery>,
) -> Response {
    let per_page = query.limit.unwrap_or(LIST_LIMIT).clamp(1, LIST_LIMIT);
    let page = query.page.unwrap_or(1).max(1);
    let filter = match portal.scoped(&account, &query) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return answer(
                StatusCode::OK,
                json!({"total": 0, "page": page, "per_page": per_page, "bounds": null, "rows": []}),
            )
        }
        Err(refused) => return *refused,
    };
    let found = portal
        .page(
            &account,
            &filter,
            (page - 1).saturating_mul(per_page),
            per_page,
        )
        .and_then(|found| Ok((found, portal.extent_in_degrees(&filter)?)));
    match found {
        Ok((found, bounds)) => answer(
            StatusCode::OK,
            json!({
                "total": found.total,
                "page": page,
                "per_page": per_page,
                "bounds": bounds,
                "rows": found.patches.iter().map(listed_properties).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => server_error(e),
    }
}

async fn list_xlsx(
    State(portal): Shared,
    Signed { account, .. }: Signed,
    Query(query): Query<PatchQuery>,
) -> Response {
    let filter = match portal.scoped(&account, &query) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let records: Vec<_> = match filter.map(|f| portal.page(&account, &f, 0, u64::MAX)) {
        Some(Ok(page)) => page.patches.into_iter().map(|l| l.record).collect(),
        Some(Err(e)) => return server_error(e),
        None => Vec::new(),
    };
    match crate::dispatch::lists::xlsx_bytes(&records, chrono::Local::now().date_naive()) {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                ),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"tuban.xlsx\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => server_error(Error::usage(
            format!("the spreadsheet failed: {e}"),
            "retry",
        )),
    }
}

async fn options(State(portal): Shared, Signed { account, token }: Signed) -> Response {
    // The page reloaded with its session cookie learns its token again here; another site
    // cannot read this answer (same-origin policy) nor send the cookie (SameSite=Strict).
    let csrf = portal
        .sessions
        .lock()
        .expect("sessions")
        .get(&token)
        .map(|s| s.csrf.clone());
    let scope = account.own_county();
    let places = match portal.ledger.lock().expect("ledger").places(scope) {
        Ok(p) => p,
        Err(e) => return server_error(e),
    };
    let mut counties: Vec<(String, String)> = places
        .iter()
        .filter(|p| account.may_read(&p.county))
        .map(|p| (p.county.clone(), p.county_name.clone()))
        .collect();
    if let Some(own) = scope.filter(|c| !counties.iter().any(|(code, _)| code == c)) {
        counties.push((own.to_string(), String::new()));
    }
    counties.dedup();
    let townships: Vec<Value> = places
        .iter()
        .filter(|p| account.may_read(&p.county) && !p.township.is_empty())
        .map(|p| json!({"county": p.county, "code": p.township, "name": p.township_name}))
        .collect();
    // Opening a period's tiles reads its composite: off the threads that serve requests.
    let served = portal.clone();
    let periods: Vec<Value> = tokio::task::spawn_blocking(move || {
        served
            .layout
            .finished_periods()
            .into_iter()
            .map(|p| {
                let bounds = served.tiles(p).ok().map(|t| t.bounds());
                json!({"period": p.to_string(), "bounds": bounds})
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let colour = |c: [u8; 3]| format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
    answer(
        StatusCode::OK,
        json!({
            "account": {"name": account.name, "role": account.role, "county": account.county},
            "csrf": csrf,
            "imports_returns": account.role.imports_returns(),
            "periods": periods,
            "counties": counties.iter().map(|(code, name)| json!({"code": code, "name": name})).collect::<Vec<_>>(),
            "townships": townships,
            "types": ChangeType::ALL.map(|t| json!({
                "code": t.code(), "name": t.label_zh(), "colour": colour(crate::render::change_colour(t)),
            })),
            "statuses": Status::ALL.map(|s| json!({"code": s.code(), "name": s.label_zh(), "settled": s.is_settled()})),
            "evidence_kinds": Evidence::ALL.map(|e| json!({"code": e.code(), "name": e.label_zh()})),
        }),
    )
}

async fn tile(
    State(portal): Shared,
    Signed { .. }: Signed,
    UrlPath((period, z, x, y)): UrlPath<(String, u8, u32, String)>,
) -> Response {
    let missing = || refusal(StatusCode::NOT_FOUND, "no such tile");
    let (Ok(period), Some(Ok(y))) = (
        period.parse::<Period>(),
        y.strip_suffix(".png").map(str::parse::<u32>),
    ) else {
        return missing();
    };
    match tokio::task::spawn_blocking(move || portal.tiles(period)?.tile(z, x, y)).await {
        Ok(Ok(png)) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            png,
        )
            .into_response(),
        Ok(Err(Error::Usage { .. })) => missing(),
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(Error::usage(format!("the tile failed: {e}"), "retry")),
    }
}

/// The before/after chip of a patch from the newest dispatch package that carries it.
async fn chip(
    State(portal): Shared,
    Signed { account, .. }: Signed,
    UrlPath(tbbh): UrlPath<String>,
) -> Response {
    let Some(entry) = portal.readable(&account, &tbbh) else {
        return not_found();
    };
    let periods = portal.layout.finished_periods();
    let found = periods.iter().rev().find_map(|p| {
        let png = portal
            .layout
            .package(*p, &entry.county)
            .join("chips")
            .join(format!("{}.png", entry.tbbh));
        std::fs::read(png).ok()
    });
    match found {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        None => refusal(
            StatusCode::NOT_FOUND,
            "no chip yet: the patch has not been in a dispatch package (`gengbao export`)",
        ),
    }
}

async fn patch(
    State(portal): Shared,
    Signed { account, .. }: Signed,
    UrlPath(tbbh): UrlPath<String>,
) -> Response {
    let Some(entry) = portal.readable(&account, &tbbh) else {
        return not_found();
    };
    let ledger = portal.ledger.lock().expect("ledger");
    let found = ledger.sightings(&tbbh).and_then(|s| {
        let evidence = portal.evidence.lock().expect("evidence").of(&tbbh)?;
        let record = ledger.listed(&tbbh)?.record;
        let e = portal.outline_in_degrees(&ledger, &tbbh)?.envelope();
        let bounds = [e.MinX, e.MinY, e.MaxX, e.MaxY];
        Ok((
            s,
            ledger.history(Some(&tbbh), None)?,
            evidence,
            record,
            bounds,
        ))
    });
    let moves: Vec<Value> = allowed_from(entry.status, By::Inspector)
        .into_iter()
        .filter(|to| account.may_move(&entry.county, *to))
        .map(|to| json!({"code": to.code(), "name": to.label_zh()}))
        .collect();
    match found {
        Ok((sightings, history, evidence, record, bounds)) => answer(
            StatusCode::OK,
            json!({
                "patch": properties(&entry),
                // The patch's fields as the dispatch list names them (Chinese labels).
                "attributes": PATCH_FIELDS.iter().zip(patch_values(&record)).map(|((spec, _), v)| {
                    let value = match v {
                        gdal::vector::FieldValue::RealValue(x) => json!(x),
                        gdal::vector::FieldValue::IntegerValue(x) => json!(x),
                        gdal::vector::FieldValue::StringValue(s) => json!(s),
                        other => json!(format!("{other:?}")),
                    };
                    json!({"field": spec.name, "label": spec.alias, "value": value})
                }).collect::<Vec<_>>(),
                "moves": moves,
                // West, south, east, north in degrees: the map fits the patch.
                "bounds": bounds,
                "sightings": sightings.iter().map(|(period, area, confidence)| json!({
                    "period": period, "area_m2": area, "confidence": confidence,
                })).collect::<Vec<_>>(),
                "history": history,
                "evidence": evidence,
            }),
        ),
        Err(e) => server_error(e),
    }
}

#[derive(Deserialize)]
struct StatusRequest {
    status: String,
    #[serde(default)]
    note: String,
    evidence: Option<String>,
    /// The status the person saw: the change is refused when the patch has moved since.
    from: Option<String>,
}

async fn set_status(
    State(portal): Shared,
    ConnectInfo(Peer(from)): ConnectInfo<Peer>,
    Signed { account, .. }: Signed,
    UrlPath(tbbh): UrlPath<String>,
    Json(request): Json<StatusRequest>,
) -> Response {
    let Some(entry) = portal.readable(&account, &tbbh) else {
        return not_found();
    };
    let parse = |s: &str| Status::parse(s).ok_or(format!("no status {s}"));
    let (to, seen) = match (parse(&request.status), request.from.as_deref().map(parse)) {
        (Ok(to), None) => (to, None),
        (Ok(to), Some(Ok(seen))) => (to, Some(seen)),
        (Err(why), _) | (_, Some(Err(why))) => return refusal(StatusCode::BAD_REQUEST, &why),
    };
    let evidence = match request.evidence.as_deref().map(|e| (e, Evidence::parse(e))) {
        Some((e, None)) => {
            return refusal(StatusCode::BAD_REQUEST, &format!("no evidence kind {e}"));
        }
        Some((_, found)) => found,
        None => None,
    };
    if !account.may_move(&entry.county, to) {
        return refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "a {} account may not set {}",
                account.role.code(),
                to.code()
            ),
        );
    }
    if to == Status::EvidenceSubmitted && evidence.is_none() {
        return refusal(
            StatusCode::BAD_REQUEST,
            &format!(
                "evidence submitted without its kind: add \"evidence\": one of {}",
                Evidence::ALL.map(|e| e.label_zh()).join(" / ")
            ),
        );
    }
    let who = format!("{} (portal, {})", account.name, from.ip());
    // The ledger checks `from` in the transaction that writes: of two people changing one
    // patch at once, in this portal or with `ledger set-status`, the second is told.
    let changed = portal.ledger.lock().expect("ledger").set_status(
        &tbbh,
        &entry.county,
        to,
        &who,
        &request.note,
        evidence,
        &[],
        seen,
    );
    match changed {
        Ok(()) => answer(StatusCode::OK, json!({"tbbh": tbbh, "status": to.code()})),
        // The lifecycle's refusal names the allowed moves; "moved meanwhile" names the
        // status the patch has now.
        Err(e @ Error::Usage { .. }) => refusal(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => server_error(e),
    }
}

async fn package(
    State(portal): Shared,
    Signed { account, .. }: Signed,
    UrlPath((period, file)): UrlPath<(String, String)>,
) -> Response {
    let missing = || refusal(StatusCode::NOT_FOUND, "no such package");
    let county = file.strip_suffix(".zip").and_then(county_code);
    let (Ok(period), Some(county)) = (period.parse::<Period>(), county) else {
        return missing();
    };
    if !account.may_read(county) {
        return missing();
    }
    let zip = portal.layout.package(period, county).with_extension("zip");
    match std::fs::read(&zip) {
        Ok(bytes) => {
            let disposition = format!("attachment; filename=\"{county}_{period}.zip\"");
            (
                [
                    (header::CONTENT_TYPE, "application/zip".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => missing(),
    }
}

async fn evidence_file(
    State(portal): Shared,
    Signed { account, .. }: Signed,
    UrlPath((tbbh, sha256)): UrlPath<(String, String)>,
) -> Response {
    if portal.readable(&account, &tbbh).is_none() {
        return not_found();
    }
    match portal
        .evidence
        .lock()
        .expect("evidence")
        .file(&tbbh, &sha256)
    {
        Ok(Some((kind, bytes))) => {
            // A PDF is downloaded (a viewer in a sandboxed page cannot show it); a photo is
            // shown.
            let disposition = match kind {
                Kind::Pdf => format!("attachment; filename=\"{sha256}.pdf\""),
                _ => "inline".to_string(),
            };
            (
                [
                    (header::CONTENT_TYPE, kind.media_type().to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                    (header::CONTENT_SECURITY_POLICY, "sandbox".to_string()),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(None) => refusal(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => server_error(e),
    }
}

/// A file sent in a form (field `file`), the name its sender gave it and the form's `note`.
struct Upload {
    bytes: axum::body::Bytes,
    sent_name: String,
    note: String,
}

async fn uploaded(mut form: Multipart) -> std::result::Result<Upload, Box<Response>> {
    let refused = |code: StatusCode, message: &str| Box::new(refusal(code, message));
    let (mut file, mut note) = (None, String::new());
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let sent_name = field.file_name().unwrap_or("").to_string();
                match field.bytes().await {
                    Ok(bytes) if name == "file" => file = Some((bytes, sent_name)),
                    Ok(bytes) if name == "note" => {
                        note = String::from_utf8_lossy(&bytes).chars().take(2000).collect()
                    }
                    Ok(_) => {}
                    Err(e) => return Err(refused(e.status(), &e.body_text())),
                }
            }
            Ok(None) => break,
            Err(e) => return Err(refused(e.status(), &e.body_text())),
        }
    }
    let Some((bytes, sent_name)) = file else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "no `file` field in the form",
        ));
    };
    if bytes.len() > MAX_BYTES {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the file is larger than {} MiB", MAX_BYTES >> 20),
        ));
    }
    Ok(Upload {
        bytes,
        sent_name,
        note,
    })
}

#[derive(Deserialize)]
struct ReturnsQuery {
    /// The county the list is of (accounts of one county: theirs, whatever is asked).
    county: Option<String>,
}

/// A county's returned list (the dispatch spreadsheet or its CSV twin with the return
/// columns filled in), applied as `gengbao ledger import` applies it: every row checked
/// first, nothing applied when one is bad (422, with every bad row and why). The file is
/// kept by content under `<output>/returns/`. Attachments are not read from an upload
/// (they are added as evidence on a patch's card): a row naming one is bad.
async fn import_returns(
    State(portal): Shared,
    ConnectInfo(Peer(from)): ConnectInfo<Peer>,
    Signed { account, .. }: Signed,
    Query(query): Query<ReturnsQuery>,
    form: Multipart,
) -> Response {
    let not_allowed = || {
        refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "a {} account may not import a county's returns",
                account.role.code()
            ),
        )
    };
    if !account.role.imports_returns() {
        return not_allowed();
    }
    let asked = account.own_county().or(query.county.as_deref());
    let Some(county) = asked.and_then(county_code).map(String::from) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "name the county of the list: ?county=XZQDM (six digits)",
        );
    };
    if !account.may_import_returns(&county) {
        return refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "a {} account may not import a county's returns",
                account.role.code()
            ),
        );
    }
    let upload = match uploaded(form).await {
        Ok(upload) => upload,
        Err(refused) => return *refused,
    };
    // An .xlsx is a zip; anything else must be text to be a CSV.
    let extension = if upload.bytes.starts_with(b"PK\x03\x04") {
        "xlsx"
    } else if !upload.bytes.contains(&0) {
        "csv"
    } else {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the file is not a spreadsheet (.xlsx) or a CSV list (by its content)",
        );
    };
    let folder = portal.layout.returns();
    let stored = folder.join(format!(
        "{}.{extension}",
        crate::short_sha256(&upload.bytes, 32)
    ));
    let written = std::fs::create_dir_all(&folder)
        .map_err(|e| Error::io(&folder, e))
        .and_then(|()| crate::job::checkpoint::write_atomically(&stored, &upload.bytes));
    if let Err(e) = written {
        return server_error(e);
    }
    let rows = match crate::dispatch::read_returns(&stored) {
        Ok(rows) => rows,
        Err(e) => {
            return refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "{} cannot be read as a returned list: {e}",
                    upload.sent_name
                ),
            )
        }
    };
    let with_attachments: Vec<Value> = rows
        .iter()
        .filter(|r| !r.attachments.is_empty())
        .map(|r| json!({"row": r.row, "reason": "附件 (FJ) is not read from an upload: add the files as evidence on the patch's card"}))
        .collect();
    let who = format!("{} (portal, {})", account.name, from.ip());
    let report = if with_attachments.is_empty() {
        portal
            .ledger
            .lock()
            .expect("ledger")
            .import(&rows, &county, &who, &folder, false)
    } else {
        Ok(Default::default())
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => return server_error(e),
    };
    let bad_rows: Vec<Value> = with_attachments
        .into_iter()
        .chain(
            report
                .bad_rows
                .iter()
                .map(|(row, reason)| json!({"row": row, "reason": reason})),
        )
        .collect();
    let code = if bad_rows.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    answer(
        code,
        json!({
            "county": county,
            "rows": rows.len(),
            "applied": report.applied.iter().map(|(tbbh, steps)| json!({
                "tbbh": tbbh,
                "steps": steps.iter().map(|s| s.label_zh()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "unchanged": report.unchanged,
            "bad_rows": bad_rows,
        }),
    )
}

async fn add_evidence(
    State(portal): Shared,
    ConnectInfo(Peer(from)): ConnectInfo<Peer>,
    Signed { account, .. }: Signed,
    UrlPath(tbbh): UrlPath<String>,
    form: Multipart,
) -> Response {
    let Some(entry) = portal.readable(&account, &tbbh) else {
        return not_found();
    };
    if !account.may_add_evidence(&entry.county) {
        return refusal(
            StatusCode::FORBIDDEN,
            &format!("a {} account may not add evidence", account.role.code()),
        );
    }
    let Upload {
        bytes,
        sent_name,
        note,
    } = match uploaded(form).await {
        Ok(upload) => upload,
        Err(refused) => return *refused,
    };
    if bytes.len() > MAX_BYTES {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the file is larger than {} MiB", MAX_BYTES >> 20),
        );
    }
    if Kind::of(&bytes).is_none() {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the file is not a JPEG or PNG photo or a PDF document (by its content)",
        );
    }
    let outline = match portal.ledger.lock().expect("ledger").outline(&tbbh) {
        Ok(o) => o,
        Err(e) => return server_error(e),
    };
    let (Ok(grid_crs), Ok(period)) = (
        SpatialRef::from_wkt(&portal.grid_crs),
        entry.last_period.parse::<Period>(),
    ) else {
        return server_error(Error::usage("the ledger's CRS or period", "check the job"));
    };
    let patch = Patch {
        tbbh: &tbbh,
        outline: &outline,
        grid_crs: &grid_crs,
        period,
    };
    let who = format!("{} (portal, {})", account.name, from.ip());
    let added = portal.evidence.lock().expect("evidence").add(
        &patch,
        &bytes,
        &sent_name,
        &note,
        &who,
        portal.evidence_distance_m,
    );
    match added {
        Ok(file) => answer(StatusCode::CREATED, json!(file)),
        Err(e @ Error::Usage { .. }) => refusal(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => server_error(e),
    }
}
