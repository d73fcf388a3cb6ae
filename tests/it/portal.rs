//! The portal's HTTP API on loopback, over the ledger of a generated city's job: who may read
//! and change what, tried for every role on its own county, the other county and without a
//! session; logins locked after repeated failures; every change in the ledger's history with
//! who and from where.

use crate::common::{city, run_all};
use gengbao::ledger::{Filter, Ledger};
use gengbao::portal::{Accounts, Role};
use serde_json::{json, Value};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// A client of the portal at `base`, holding one session's cookie and CSRF token.
struct Client {
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
}

/// A response's status and JSON body (Null when it has none).
fn reply(result: Result<ureq::Response, ureq::Error>) -> (u16, Value, Option<String>) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("no answer: {e}"),
    };
    let code = response.status();
    let cookie = response.header("set-cookie").map(String::from);
    let body = response.into_string().unwrap_or_default();
    (
        code,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        cookie,
    )
}

impl Client {
    fn anonymous(base: &str) -> Client {
        Client {
            base: base.to_string(),
            cookie: None,
            csrf: None,
        }
    }

    fn logged_in(base: &str, name: &str) -> Client {
        let mut c = Client::anonymous(base);
        let (code, body) = c.log_in(name, PASSWORD);
        assert_eq!(code, 200, "{name}: {body}");
        c
    }

    fn log_in(&mut self, name: &str, password: &str) -> (u16, Value) {
        let (code, body, cookie) = reply(
            ureq::post(&format!("{}api/login", self.base))
                .set("Content-Type", "application/json")
                .send_string(&json!({"name": name, "password": password}).to_string()),
        );
        if code == 200 {
            let cookie = cookie.expect("a session cookie");
            assert!(
                cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
                "{cookie}"
            );
            self.cookie = Some(cookie.split(';').next().unwrap().to_string());
            self.csrf = body["csrf"].as_str().map(String::from);
        }
        (code, body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut request = ureq::get(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            request = request.set("Cookie", c);
        }
        let (code, body, _) = reply(request.call());
        (code, body)
    }

    /// A GET whose answer is a file: its status, media type and bytes.
    fn get_bytes(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut request = ureq::get(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            request = request.set("Cookie", c);
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("no answer: {e}"),
        };
        let (code, media) = (response.status(), response.content_type().to_string());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
        (code, media, bytes)
    }

    /// A POST with the session's CSRF token, or with `csrf` instead when given.
    fn post(&self, path: &str, body: Value, csrf: Option<&str>) -> (u16, Value) {
        let mut request = ureq::post(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            request = request.set("Cookie", c);
        }
        if let Some(token) = csrf.or(self.csrf.as_deref()) {
            request = request.set("X-CSRF-Token", token);
        }
        let (code, body, _) = reply(
            request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
        );
        (code, body)
    }

    /// Uploads `bytes` as the form field `file` named `name`, with a note.
    fn upload(&self, tbbh: &str, name: &str, bytes: &[u8]) -> (u16, Value) {
        self.upload_to(&format!("api/patches/{tbbh}/evidence"), name, bytes)
    }

    /// Posts `bytes` as the form field `file` named `name` to `path`, with a note.
    fn upload_to(&self, path: &str, name: &str, bytes: &[u8]) -> (u16, Value) {
        let boundary = "gengbao-test-boundary-7f3a";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n现场照片\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut request = ureq::post(&format!("{}{path}", self.base)).set(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        );
        if let Some(c) = &self.cookie {
            request = request.set("Cookie", c);
        }
        if let Some(token) = &self.csrf {
            request = request.set("X-CSRF-Token", token);
        }
        let (code, body, _) = reply(request.send_bytes(&body));
        (code, body)
    }

    fn set_status(&self, tbbh: &str, status: &str) -> (u16, Value) {
        self.post(
            &format!("api/patches/{tbbh}/status"),
            json!({"status": status, "note": "checked on site"}),
            None,
        )
    }
}

/// A small JPEG whose EXIF says it was taken at (lon, lat) at `taken` (`YYYY:MM:DD HH:MM:SS`).
pub(crate) fn site_photo(dir: &std::path::Path, lon: f64, lat: f64, taken: &str) -> Vec<u8> {
    use gdal::Metadata;
    let dms = |v: f64| {
        let d = v.abs().floor();
        let m = ((v.abs() - d) * 60.0).floor();
        let s = ((v.abs() - d) * 60.0 - m) * 60.0;
        format!("({d}) ({m}) ({s:.4})")
    };
    let mem = gdal::DriverManager::get_driver_by_name("MEM").unwrap();
    let mut m = mem.create_with_band_type::<u8, _>("", 16, 16, 3).unwrap();
    for (key, value) in [
        ("EXIF_GPSLatitude", dms(lat)),
        ("EXIF_GPSLatitudeRef", "N".to_string()),
        ("EXIF_GPSLongitude", dms(lon)),
        ("EXIF_GPSLongitudeRef", "E".to_string()),
        ("EXIF_DateTimeOriginal", taken.to_string()),
    ] {
        m.set_metadata_item(key, &value, "").unwrap();
    }
    let path = dir.join(format!("photo-{lon}-{lat}.jpg"));
    let jpeg = gdal::DriverManager::get_driver_by_name("JPEG").unwrap();
    m.create_copy(&jpeg, &path, &Default::default()).unwrap();
    std::fs::read(&path).unwrap()
}

/// The counties of the features of a GeoJSON answer.
fn counties(collection: &Value) -> Vec<String> {
    let mut found: Vec<String> = collection["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["county"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A generated city's job, run, with the portal serving it on loopback and these accounts:
/// `admin`, `auditor`, `xihe-officer` and `xihe-inspector` (county 320901) and
/// `donghu-officer` (320902).
pub(crate) struct Served {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) city: gengbao::SampleCity,
    pub(crate) cfg: gengbao::JobConfig,
    pub(crate) accounts: Accounts,
    pub(crate) base: String,
    /// A patch of 320901 and one of 320902.
    pub(crate) own: String,
    pub(crate) other: String,
}

/// The patch numbers of `county` in the job's ledger, in order.
pub(crate) fn patches_of(cfg: &gengbao::JobConfig, county: &str) -> Vec<String> {
    Ledger::open_existing(&cfg.layout().ledger_file())
        .unwrap()
        .list(&Filter {
            county: Some(county.into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|e| e.tbbh)
        .collect()
}

impl Served {
    /// Writes the dispatch packages (zipped) of the city's last period, which the portal
    /// serves with the chips of its patches; gives that period.
    pub(crate) fn export_last_period(&self) -> gengbao::Period {
        let last = *self.city.periods.last().unwrap();
        gengbao::export_packages(&self.cfg, last, &[], true).unwrap();
        last
    }
}

pub(crate) fn served_city() -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 3, 128);
    let cfg = run_all(&city, None);
    let ledger_file = cfg.layout().ledger_file();
    let first = |county: &str| {
        patches_of(&cfg, county)
            .first()
            .unwrap_or_else(|| panic!("county {county} has patches"))
            .clone()
    };
    let (own, other) = (first("320901"), first("320902"));
    let accounts = Accounts::open(&ledger_file).unwrap();
    for (name, role, county) in [
        ("admin", Role::Admin, None),
        ("auditor", Role::Auditor, None),
        ("xihe-officer", Role::County, Some("320901")),
        ("xihe-inspector", Role::Inspector, Some("320901")),
        ("donghu-officer", Role::County, Some("320902")),
    ] {
        accounts.add(name, role, county, PASSWORD).unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let served = cfg.clone();
    std::thread::spawn(move || {
        gengbao::portal::server::serve_on(listener, &served, &Default::default())
    });
    Served {
        _tmp: tmp,
        city,
        cfg,
        accounts,
        base,
        own,
        other,
    }
}

/// Every role (and no session) × every endpoint × a patch of county 320901 and one of
/// 320902, each request one that changes nothing when it gets through (a move the lifecycle
/// forbids, a file that is not a photo): the answer is the role's, whatever the order.
#[test]
fn the_access_matrix_holds_for_every_role_endpoint_and_county() {
    let served = served_city();
    let last = served.export_last_period();
    let Served {
        _tmp,
        base,
        own,
        other,
        ..
    } = served;
    // Expected: card, move, evidence, package; on 320901 then on 320902; and the counties
    // the list shows.
    let table: [(Option<&str>, [u16; 8], &[&str]); 5] = [
        (None, [401; 8], &[]),
        (
            Some("admin"),
            [200, 409, 415, 200, 200, 409, 415, 200],
            &["320901", "320902"],
        ),
        (
            Some("auditor"),
            [200, 403, 403, 200, 200, 403, 403, 200],
            &["320901", "320902"],
        ),
        (
            Some("xihe-officer"),
            [200, 403, 415, 200, 404, 404, 404, 404],
            &["320901"],
        ),
        (
            Some("xihe-inspector"),
            [200, 403, 415, 200, 404, 404, 404, 404],
            &["320901"],
        ),
    ];
    for (name, expected, listed) in table {
        let client = match name {
            Some(n) => Client::logged_in(&base, n),
            None => Client::anonymous(&base),
        };
        let mut got = Vec::new();
        for (tbbh, county) in [(&own, "320901"), (&other, "320902")] {
            got.push(client.get(&format!("api/patches/{tbbh}")).0);
            got.push(client.set_status(tbbh, "closed").0);
            got.push(
                client
                    .upload(tbbh, "photo.jpg", b"MZ\x90\x00 not a photo")
                    .0,
            );
            got.push(client.get(&format!("api/packages/{last}/{county}.zip")).0);
        }
        assert_eq!(
            got, expected,
            "{name:?}: card, move, evidence, package × 2 counties"
        );
        let (code, list) = client.get("api/patches");
        match name {
            None => assert_eq!(code, 401),
            Some(_) => assert_eq!(counties(&list), listed, "{name:?} lists"),
        }
        for county in ["320901", "320902"] {
            let (_, asked) = client.get(&format!("api/patches?county={county}"));
            if name.is_some() {
                let expected: Vec<&str> = listed.iter().copied().filter(|c| *c == county).collect();
                assert_eq!(counties(&asked), expected, "{name:?} asking for {county}");
            }
        }
    }
}

#[test]
fn each_role_reaches_its_own_county_and_nothing_else() {
    let Served {
        _tmp,
        city,
        cfg,
        accounts,
        base,
        own,
        other,
    } = served_city();
    let tmp = _tmp.path();
    // Without a session: nothing.
    let nobody = Client::anonymous(&base);
    assert_eq!(nobody.get("api/patches").0, 401);
    assert_eq!(nobody.get(&format!("api/patches/{own}")).0, 401);
    assert_eq!(nobody.set_status(&own, "dispatched").0, 401);
    assert_eq!(nobody.post("api/logout", json!({}), None).0, 401);

    // A county officer: the county's patches, in WGS 84; the other county's are not there.
    let officer = Client::logged_in(&base, "xihe-officer");
    let (code, list) = officer.get("api/patches");
    assert_eq!(code, 200);
    assert_eq!(counties(&list), ["320901"]);
    let lon = list["features"][0]["geometry"]["coordinates"][0][0][0]
        .as_f64()
        .unwrap();
    assert!((100.0..130.0).contains(&lon), "longitude {lon}");
    assert_eq!(
        officer.get("api/patches?county=320902").1["features"],
        json!([])
    );
    assert_eq!(officer.get(&format!("api/patches/{own}")).0, 200);
    for tampered in [
        other.clone(),
        "320901999999999".to_string(),
        "..%2F..%2Fledger.sqlite".to_string(),
    ] {
        let (code, body) = officer.get(&format!("api/patches/{tampered}"));
        assert_eq!(code, 404, "{tampered}: {body}");
        assert_eq!(body, json!({"error": "no such patch"}), "{tampered}");
        assert_eq!(officer.set_status(&tampered, "dispatched").0, 404);
    }
    // A state change needs the session's CSRF token.
    let change = json!({"status": "dispatched"});
    let path = format!("api/patches/{own}/status");
    assert_eq!(officer.post(&path, change.clone(), Some("forged")).0, 403);
    let mut no_token = Client::anonymous(&base);
    no_token.cookie = officer.cookie.clone();
    assert_eq!(no_token.post(&path, change, None).0, 403);
    // The lifecycle's rules, with the allowed moves named.
    let (code, body) = officer.set_status(&own, "rectifying");
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("dispatched"),
        "{body}"
    );
    assert_eq!(officer.set_status(&own, "dispatched").0, 200);

    // The inspector: the field step, not the officer's decisions. Two people move the patch
    // from what they both saw: the first wins, the second is told.
    let inspector = Client::logged_in(&base, "xihe-inspector");
    let from_dispatched = json!({"status": "verifying", "from": "dispatched"});
    assert_eq!(inspector.post(&path, from_dispatched.clone(), None).0, 200);
    let (code, body) = officer.post(&path, from_dispatched, None);
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("moved meanwhile"),
        "{body}"
    );
    assert_eq!(inspector.set_status(&own, "rectification_required").0, 403);
    // Evidence submitted must say its kind.
    assert_eq!(officer.set_status(&own, "evidence_submitted").0, 400);
    // The officer may not take the authority's decisions.
    let (code, body) = officer.post(
        &format!("api/patches/{own}/status"),
        json!({"status": "evidence_submitted", "evidence": "合法批准"}),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(officer.set_status(&own, "accepted").0, 403);

    // Evidence: a site photo on the patch, one 5 km away and years old, each checked against
    // the patch by its EXIF; files told by their content, stored once by it.
    let first_of_own = list["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["properties"]["tbbh"] == own.as_str())
        .unwrap();
    let corner = first_of_own["geometry"]["coordinates"][0][0].clone();
    let (lon, lat) = (corner[0].as_f64().unwrap(), corner[1].as_f64().unwrap());
    let on_site = site_photo(tmp, lon, lat, "2026:03:14 10:20:00");
    let (code, body) = inspector.upload(&own, "../../etc/passwd.jpg", &on_site);
    assert_eq!(code, 201, "{body}");
    assert!(
        body["distance_m"].as_f64().is_some_and(|d| d < 1.0),
        "{body}"
    );
    let (code, body) = inspector.upload(
        &own,
        "far.jpg",
        &site_photo(tmp, lon + 0.05, lat, "2019:05:01 09:00:00"),
    );
    assert_eq!(code, 201, "{body}");
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains("m from the patch") && warnings.contains("before period"),
        "{body}"
    );
    assert_eq!(inspector.upload(&own, "again.jpg", &on_site).0, 201);
    let stored = crate::common::entries(&cfg.layout().evidence());
    assert_eq!(stored.len(), 2, "{stored:?}");
    let (code, body) = inspector.upload(&own, "photo.jpg", b"MZ\x90\x00 not a photo");
    assert_eq!(code, 415, "{body}");
    let mut oversized = on_site.clone();
    oversized.resize(gengbao::portal::evidence::MAX_BYTES + 1, 0);
    assert_eq!(inspector.upload(&own, "big.jpg", &oversized).0, 413);
    assert_eq!(inspector.upload(&other, "photo.jpg", &on_site).0, 404);
    let (_, card) = officer.get(&format!("api/patches/{own}"));
    let evidence = card["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 3, "{card}");
    assert_eq!(evidence[0]["sent_name"], "../../etc/passwd.jpg");
    assert_eq!(evidence[0]["note"], "现场照片");
    assert!(evidence[0]["who"]
        .as_str()
        .unwrap()
        .starts_with("xihe-inspector"));

    // The other county's officer sees its own county only.
    let donghu = Client::logged_in(&base, "donghu-officer");
    assert_eq!(counties(&donghu.get("api/patches").1), ["320902"]);
    assert_eq!(donghu.get(&format!("api/patches/{own}")).0, 404);
    assert_eq!(donghu.set_status(&own, "accepted").0, 404);

    // The auditor reads every county and changes nothing.
    let auditor = Client::logged_in(&base, "auditor");
    assert_eq!(
        counties(&auditor.get("api/patches").1),
        ["320901", "320902"]
    );
    assert_eq!(auditor.get(&format!("api/patches/{other}")).0, 200);
    assert_eq!(auditor.set_status(&own, "accepted").0, 403);
    assert_eq!(auditor.upload(&own, "photo.jpg", &on_site).0, 403);

    // The admin decides.
    let admin = Client::logged_in(&base, "admin");
    assert_eq!(admin.set_status(&own, "accepted").0, 200);
    let (_, card) = admin.get(&format!("api/patches/{own}"));
    assert_eq!(card["patch"]["status"], "accepted");
    let who: Vec<&str> = card["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["who"].as_str().unwrap())
        .collect();
    assert_eq!(
        who,
        [
            "gengbao run",
            "xihe-officer (portal, 127.0.0.1)",
            "xihe-inspector (portal, 127.0.0.1)",
            "xihe-officer (portal, 127.0.0.1)",
            "admin (portal, 127.0.0.1)"
        ]
    );

    // Dispatch packages: a county's own, by period and code; never another's, never a path.
    let last = *city.periods.last().unwrap();
    gengbao::export_packages(&cfg, last, &[], true).unwrap();
    let (code, _) = officer.get(&format!("api/packages/{last}/320901.zip"));
    assert_eq!(code, 200);
    let zip = ureq::get(&format!("{base}api/packages/{last}/320901.zip"))
        .set("Cookie", officer.cookie.as_deref().unwrap())
        .call()
        .unwrap();
    assert_eq!(zip.content_type(), "application/zip");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut zip.into_reader(), &mut bytes).unwrap();
    assert!(bytes.starts_with(b"PK"), "not a zip");
    for refused in [
        format!("api/packages/{last}/320902.zip"),
        format!("api/packages/{last}/..%2F..%2Fledger.sqlite"),
        "api/packages/2099-P1/320901.zip".to_string(),
    ] {
        assert_eq!(officer.get(&refused).0, 404, "{refused}");
    }
    assert_eq!(
        nobody.get(&format!("api/packages/{last}/320901.zip")).0,
        401
    );
    assert_eq!(
        auditor.get(&format!("api/packages/{last}/320902.zip")).0,
        200
    );

    // Logging out ends the session; a disabled account's session ends too.
    assert_eq!(admin.post("api/logout", json!({}), None).0, 204);
    assert_eq!(admin.get("api/patches").0, 401);
    accounts.disable("auditor").unwrap();
    assert_eq!(auditor.get("api/patches").0, 401);
    let (code, body) = Client::anonymous(&base).log_in("auditor", PASSWORD);
    assert_eq!(code, 401, "{body}");

    // Five wrong passwords lock the account: the right one then fails too, with the same
    // answer as an unknown name.
    let mut guesser = Client::anonymous(&base);
    for _ in 0..5 {
        assert_eq!(guesser.log_in("donghu-officer", "guess guess guess").0, 401);
    }
    let locked = guesser.log_in("donghu-officer", PASSWORD).1;
    assert_eq!(locked, guesser.log_in("nobody-at-all", PASSWORD).1);
    accounts
        .reset("donghu-officer", "a new long password")
        .unwrap();
    assert_eq!(
        donghu.get("api/patches").0,
        401,
        "a session opened with the old password ends"
    );
    assert_eq!(
        guesser.log_in("donghu-officer", "a new long password").0,
        200
    );
    let outcomes: Vec<String> = accounts
        .logins()
        .unwrap()
        .into_iter()
        .filter(|(_, name, _, _)| name == "donghu-officer")
        .map(|(_, _, from, outcome)| format!("{from} {outcome}"))
        .collect();
    assert_eq!(outcomes.len(), 8, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.starts_with("127.0.0.1 ")));
    assert!(outcomes[6].ends_with("locked"), "{outcomes:?}");
}

/// Load on loopback: 50 sessions of the two counties' officers list, open and move their
/// patches for `GENGBAO_PORTAL_LOAD_SECONDS` (default 60) seconds. Every request is answered
/// (no 5xx), and nothing is lost: the ledger's history grows by exactly the moves the portal
/// accepted, and each patch has gone exactly as many steps along its path as were accepted
/// for it. Prints the median and 95th percentile latency of each kind of request.
#[test]
fn fifty_sessions_at_once_lose_nothing() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let seconds: u64 = std::env::var("GENGBAO_PORTAL_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let city = city(&tmp.path().join("city"), 256, 3, 128);
    let cfg = run_all(&city, None);
    let ledger_file = cfg.layout().ledger_file();
    let ledger = Ledger::open_existing(&ledger_file).unwrap();
    let history_before = ledger.history(None, None).unwrap().len();
    let accounts = Accounts::open(&ledger_file).unwrap();
    for county in ["320901", "320902"] {
        accounts
            .add(
                &format!("{county}-officer"),
                Role::County,
                Some(county),
                PASSWORD,
            )
            .unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let served = cfg.clone();
    std::thread::spawn(move || {
        gengbao::portal::server::serve_on(listener, &served, &Default::default())
    });

    // A county officer's path for a patch: one step at a time, each from the status before.
    const PATH: [&str; 6] = [
        "detected",
        "dispatched",
        "verifying",
        "rectification_required",
        "rectifying",
        "rectified",
    ];
    let latencies: Arc<Mutex<BTreeMap<&str, Vec<f64>>>> = Arc::default();
    let accepted: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let sessions: Vec<_> = (0..50)
        .map(|k| {
            let (base, latencies, accepted) = (base.clone(), latencies.clone(), accepted.clone());
            std::thread::spawn(move || {
                let county = ["320901", "320902"][k % 2];
                let client = Client::logged_in(&base, &format!("{county}-officer"));
                let timed = |kind: &'static str, f: &dyn Fn() -> (u16, Value)| {
                    let t = Instant::now();
                    let (code, body) = f();
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    latencies.lock().unwrap().entry(kind).or_default().push(ms);
                    assert!(code < 500, "{kind}: {code} {body}");
                    (code, body)
                };
                let mut turn = k;
                while Instant::now() < deadline {
                    let (_, list) = timed("list", &|| client.get("api/patches"));
                    let features = list["features"].as_array().unwrap().clone();
                    turn += 7;
                    let chosen = &features[turn % features.len()]["properties"];
                    let tbbh = chosen["tbbh"].as_str().unwrap().to_string();
                    let (_, card) = timed("open", &|| client.get(&format!("api/patches/{tbbh}")));
                    let status = card["patch"]["status"].as_str().unwrap().to_string();
                    let Some(step) = PATH.iter().position(|s| *s == status) else {
                        continue;
                    };
                    let Some(next) = PATH.get(step + 1) else {
                        continue;
                    };
                    let body = json!({"status": next, "from": status});
                    let path = format!("api/patches/{tbbh}/status");
                    let (code, _) = timed("move", &|| client.post(&path, body.clone(), None));
                    if code == 200 {
                        *accepted.lock().unwrap().entry(tbbh).or_default() += 1;
                    } else {
                        assert_eq!(code, 409, "a refused move is a conflict");
                    }
                }
            })
        })
        .collect();
    for s in sessions {
        s.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let moves: usize = accepted.values().sum();
    let ledger = Ledger::open_existing(&ledger_file).unwrap();
    assert_eq!(
        ledger.history(None, None).unwrap().len(),
        history_before + moves,
        "the history holds every accepted move, once"
    );
    for (tbbh, steps) in &accepted {
        assert_eq!(
            ledger.entry(tbbh).unwrap().status.code(),
            PATH[*steps],
            "{tbbh}: {steps} moves accepted"
        );
    }
    assert!(moves > 0);
    for (kind, mut ms) in latencies.lock().unwrap().clone() {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q) as usize];
        println!(
            "{kind}: {} requests, p50 {:.1} ms, p95 {:.1} ms",
            ms.len(),
            at(0.5),
            at(0.95)
        );
    }
    println!("{moves} moves accepted over {seconds} s, none lost");
}

/// The patch numbers (TBBH column) of a downloaded spreadsheet list.
fn spreadsheet_patches(xlsx: &[u8]) -> Vec<String> {
    use calamine::Reader;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(xlsx.to_vec())).expect("an .xlsx file");
    let sheet = book.worksheet_range("图斑清单").expect("the list sheet");
    let mut rows = sheet.rows();
    assert_eq!(rows.next().unwrap()[0].to_string(), "图斑编号");
    rows.map(|r| r[0].to_string()).collect()
}

/// The page's own endpoints (list pages, spreadsheet download, filter options, chips, stored
/// evidence, map tiles) keep to the account's county exactly as the card does, and names
/// tampered with in addresses never reach a file.
#[test]
fn the_list_map_and_downloads_keep_to_the_accounts_county() {
    let served = served_city();
    let last = served.export_last_period();
    let Served {
        _tmp,
        cfg,
        base,
        own,
        other,
        ..
    } = served;
    let (xihe, donghu) = (patches_of(&cfg, "320901"), patches_of(&cfg, "320902"));
    let everyone: Vec<String> = xihe.iter().chain(&donghu).cloned().collect();

    // A site photo on a patch of each county, by the admin.
    let admin = Client::logged_in(&base, "admin");
    let sha = |tbbh: &str, lon: f64| {
        let photo = site_photo(_tmp.path(), lon, 31.6, "2026:01:02 10:00:00");
        let (code, body) = admin.upload(tbbh, "site.jpg", &photo);
        assert_eq!(code, 201, "{body}");
        body["sha256"].as_str().unwrap().to_string()
    };
    let (own_photo, other_photo) = (sha(&own, 117.0), sha(&other, 117.01));
    assert_ne!(own_photo, other_photo);
    for (tbbh, county) in [(&own, "320901"), (&other, "320902")] {
        let chip = cfg
            .layout()
            .package(last, county)
            .join("chips")
            .join(format!("{tbbh}.png"));
        assert!(chip.exists(), "{tbbh} has a chip in its package");
    }
    let (_, options) = admin.get("api/options");
    let [w, s, e, n]: [f64; 4] = serde_json::from_value(
        options["periods"].as_array().unwrap().last().unwrap()["bounds"].clone(),
    )
    .unwrap();
    // The zoom-15 tile holding the middle of the city.
    let (lon, lat) = ((w + e) / 2.0, (s + n) / 2.0);
    let z = 15;
    let (x, y) = gengbao::render::tiles::tile_at(lon, lat, z);
    let tile = format!("api/tiles/{last}/{z}/{x}/{y}.png");

    // name, [chip, evidence file] on 320901 then 320902, the patches it lists.
    let table: [(Option<&str>, [u16; 4], &[String]); 5] = [
        (None, [401; 4], &[]),
        (Some("admin"), [200; 4], &everyone),
        (Some("auditor"), [200; 4], &everyone),
        (Some("xihe-officer"), [200, 200, 404, 404], &xihe),
        (Some("xihe-inspector"), [200, 200, 404, 404], &xihe),
    ];
    for (name, expected, listed) in table {
        let client = match name {
            Some(n) => Client::logged_in(&base, n),
            None => Client::anonymous(&base),
        };
        let got: Vec<u16> = [
            format!("api/patches/{own}/chip.png"),
            format!("api/patches/{own}/evidence/{own_photo}"),
            format!("api/patches/{other}/chip.png"),
            format!("api/patches/{other}/evidence/{other_photo}"),
        ]
        .iter()
        .map(|path| client.get_bytes(path).0)
        .collect();
        assert_eq!(got, expected, "{name:?}: chip, evidence × 2 counties");
        // A file of one patch is not reached through another.
        let (crossed, _, _) =
            client.get_bytes(&format!("api/patches/{own}/evidence/{other_photo}"));
        assert_eq!(crossed, if name.is_some() { 404 } else { 401 });

        let (code, media, png) = client.get_bytes(&tile);
        let (list_code, page) = client.get("api/list?limit=100");
        let (_, other_county) = client.get("api/list?county=320902");
        let (xlsx_code, _, xlsx) = client.get_bytes("api/list.xlsx");
        let (_, _, xlsx_other) = client.get_bytes("api/list.xlsx?county=320902");
        if name.is_none() {
            assert_eq!((code, list_code, xlsx_code), (401, 401, 401));
            assert_eq!(client.get("api/options").0, 401);
            continue;
        }
        // Tiles: the period's imagery, for every account.
        assert_eq!((code, media.as_str()), (200, "image/png"), "{name:?} tile");
        let img = image::load_from_memory(&png).unwrap().to_rgba8();
        assert_eq!(img.dimensions(), (256, 256));
        assert!(
            img.pixels().any(|p| p.0[3] == 255),
            "{name:?}: the city's tile shows imagery"
        );
        // The list, its spreadsheet and the filter options: the account's patches only.
        let rows: Vec<String> = page["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tbbh"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(&rows, listed, "{name:?} list");
        assert_eq!(page["total"], listed.len());
        let expected_other = if listed.iter().any(|t| donghu.contains(t)) {
            donghu.len()
        } else {
            0
        };
        assert_eq!(
            other_county["total"], expected_other,
            "{name:?} asking for 320902"
        );
        assert_eq!(xlsx_code, 200);
        assert_eq!(&spreadsheet_patches(&xlsx), listed, "{name:?} spreadsheet");
        assert_eq!(spreadsheet_patches(&xlsx_other).len(), expected_other);
        let (_, options) = client.get("api/options");
        let counties: Vec<&str> = options["counties"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].as_str().unwrap())
            .collect();
        let expected_counties: Vec<&str> = ["320901", "320902"]
            .into_iter()
            .filter(|c| listed.iter().any(|t| t.starts_with(c)))
            .collect();
        assert_eq!(counties, expected_counties, "{name:?} options");
        assert!(options["townships"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| expected_counties.contains(&t["county"].as_str().unwrap())));
    }

    // Paging: the second page of two is the third and fourth patch.
    let (_, page) = admin.get("api/list?limit=2&page=2");
    let rows: Vec<&str> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tbbh"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        everyone[2..4]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(page["total"], everyone.len());
    // Tampered names and addresses: nothing but 404, whoever asks.
    for path in [
        "assets/../Cargo.toml".to_string(),
        "assets/%2e%2e%2fCargo.toml".to_string(),
        format!("api/patches/{own}/evidence/..%2f..%2fledger.sqlite"),
        "api/patches/..%2fledger.sqlite/chip.png".to_string(),
        format!("api/tiles/{last}/40/0/0.png"),
        format!("api/tiles/{last}/1/5/0.png"),
        format!("api/tiles/..%2f{last}/1/0/0.png"),
    ] {
        let (code, _, body) = admin.get_bytes(&path);
        assert!(
            code == 404 || code == 400,
            "{path}: {code} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The page and its map library are served without a session (nothing in them is data).
    let anonymous = Client::anonymous(&base);
    let (code, media, page) = anonymous.get_bytes("");
    assert_eq!((code, media.as_str()), (200, "text/html"));
    assert!(String::from_utf8_lossy(&page).contains("卫片图斑核查"));
    let (code, _, license) = anonymous.get_bytes("assets/leaflet-LICENSE.txt");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&license).contains("BSD 2-Clause License"));
}

/// A self-signed certificate and its key for 127.0.0.1, made with the `openssl` command.
fn self_signed(
    dir: &std::path::Path,
    name: &str,
) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .ok()?;
    made.status.success().then_some((cert, key))
}

/// Over TLS the session cookie is marked Secure and plain HTTP gets no answer; certificate
/// files that cannot serve are refused before the portal starts, naming the file.
#[test]
fn over_tls_the_session_cookie_is_secure_and_bad_key_files_are_named() {
    if ["openssl", "curl"].iter().any(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_err()
    }) {
        eprintln!("skipped: openssl or curl missing (scripts/setup.sh installs them)");
        return;
    }
    let served = served_city();
    let dir = served._tmp.path();
    let (cert, key) = self_signed(dir, "portal").expect("openssl makes a certificate");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let options = gengbao::portal::server::ServeOptions {
        tls: Some(gengbao::portal::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        ..Default::default()
    };
    let cfg = served.cfg.clone();
    let tls_options = options.clone();
    std::thread::spawn(move || gengbao::portal::server::serve_on(listener, &cfg, &tls_options));
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-s", "-k", "-i", "--max-time", "20"])
            .args(args)
            .output()
            .unwrap()
    };
    let login = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &json!({"name": "admin", "password": PASSWORD}).to_string(),
        &format!("https://{address}/api/login"),
    ]);
    let answer = String::from_utf8_lossy(&login.stdout).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("a session cookie");
    assert!(
        cookie.contains("secure")
            && cookie.contains("httponly")
            && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    let page = curl(&[&format!("https://{address}/")]);
    assert!(String::from_utf8_lossy(&page.stdout).contains("卫片图斑核查"));
    let plain = curl(&[&format!("http://{address}/")]);
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("200 OK"),
        "plain HTTP answered on the TLS port"
    );
    // The plain portal's cookie is not Secure (a browser would not send it over HTTP).
    let mut client = Client::anonymous(&served.base);
    let (_, _, cookie) = reply(
        ureq::post(&format!("{}api/login", served.base))
            .set("Content-Type", "application/json")
            .send_string(&json!({"name": "admin", "password": PASSWORD}).to_string()),
    );
    assert!(!cookie.unwrap().contains("Secure"));
    assert_eq!(client.log_in("admin", PASSWORD).0, 200);

    // A key that is not PEM, and a key of another certificate: refused, naming the key.
    std::fs::write(dir.join("garbage.key"), "not a key").unwrap();
    let (_, other_key) = self_signed(dir, "other").unwrap();
    for bad_key in [dir.join("garbage.key"), other_key] {
        let options = gengbao::portal::server::ServeOptions {
            tls: Some(gengbao::portal::tls::TlsFiles {
                cert: cert.clone(),
                key: bad_key.clone(),
            }),
            ..Default::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = gengbao::portal::server::serve_on(listener, &served.cfg, &options)
            .expect_err("a key that cannot serve is refused")
            .to_string();
        assert!(
            refused.contains(&bad_key.display().to_string()) && refused.contains("--tls-key"),
            "{refused}"
        );
    }
}

/// The CSV twin of a county's dispatch list of `period`, as the county returns it: 核查结果 set
/// to `result` on the rows of the patches named.
pub(crate) fn returned_csv(
    served: &Served,
    period: gengbao::Period,
    county: &str,
    patches: &[(&str, &str)],
) -> Vec<u8> {
    let path = served
        .cfg
        .layout()
        .package(period, county)
        .join(format!("TB_{county}_{period}.csv"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let result = rows[0].iter().position(|h| h == "核查结果").unwrap();
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in &rows {
        let mut fields: Vec<String> = row.iter().map(String::from).collect();
        if let Some((_, value)) = patches.iter().find(|(t, _)| fields[0] == *t) {
            fields[result] = value.to_string();
        }
        out.write_record(&fields).unwrap();
    }
    out.into_inner().unwrap()
}

/// A county officer imports the county's returned list through the portal: a list with one
/// bad row changes nothing and names the row; a row of another county reads as a number the
/// ledger does not hold; a good list moves its patches, by the officer, and is kept.
#[test]
fn a_county_officer_imports_the_returned_list_and_nothing_of_another_county() {
    let served = served_city();
    let last = served.export_last_period();
    let layout = served.cfg.layout();
    let filled =
        |county: &str, patches: &[(&str, &str)]| returned_csv(&served, last, county, patches);
    let ledger = || Ledger::open_existing(&layout.ledger_file()).unwrap();
    let (own, other) = (served.own.clone(), served.other.clone());
    let before = ledger().entry(&own).unwrap().status;
    let xihe = patches_of(&served.cfg, "320901");
    let officer = Client::logged_in(&served.base, "xihe-officer");

    // One bad row: nothing applied, the row named with the spreadsheet's numbering.
    let second = xihe.get(1).expect("two patches in 320901").clone();
    let (code, body) = officer.upload_to(
        "api/returns",
        "回填.csv",
        &filled("320901", &[(&own, "核查中"), (&second, "不知道")]),
    );
    assert_eq!(code, 422, "{body}");
    let bad = body["bad_rows"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{body}");
    assert!(bad[0]["reason"].as_str().unwrap().contains("不知道"));
    assert_eq!(
        ledger().entry(&own).unwrap().status,
        before,
        "nothing applied"
    );

    // A row of another county: as a number the ledger does not hold, nothing applied.
    let mut crossing = filled("320901", &[(&own, "核查中")]);
    let foreign = filled("320902", &[(&other, "核查中")]);
    let foreign_row = String::from_utf8(foreign).unwrap();
    let foreign_row = foreign_row.lines().find(|l| l.starts_with(&other)).unwrap();
    crossing.extend(format!("{foreign_row}\n").bytes());
    let (code, body) = officer.upload_to("api/returns", "回填.csv", &crossing);
    assert_eq!(code, 422, "{body}");
    let reason = body["bad_rows"][0]["reason"].as_str().unwrap();
    assert_eq!(reason, format!("{other} is not a patch of county 320901"));
    assert_eq!(ledger().entry(&own).unwrap().status, before);
    assert_ne!(ledger().entry(&other).unwrap().status.code(), "verifying");

    // Who may import: not an inspector, not an auditor; an admin names the county.
    let good = filled("320901", &[(&own, "核查中")]);
    for (name, expected) in [("xihe-inspector", 403), ("auditor", 403), ("admin", 400)] {
        let client = Client::logged_in(&served.base, name);
        assert_eq!(
            client.upload_to("api/returns", "回填.csv", &good).0,
            expected,
            "{name}"
        );
    }
    assert_eq!(
        Client::anonymous(&served.base)
            .upload_to("api/returns", "x.csv", &good)
            .0,
        401
    );
    // Another county's officer sending this list: its rows are not that county's.
    let donghu = Client::logged_in(&served.base, "donghu-officer");
    assert_eq!(donghu.upload_to("api/returns", "回填.csv", &good).0, 422);
    // A picture is not a list.
    let photo = site_photo(served._tmp.path(), 117.0, 31.6, "2026:01:02 10:00:00");
    assert_eq!(officer.upload_to("api/returns", "回填.csv", &photo).0, 415);
    assert_eq!(ledger().entry(&own).unwrap().status, before);

    // The good list: applied by the officer, the file kept by content.
    let (code, body) = officer.upload_to("api/returns", "回填.csv", &good);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"][0]["tbbh"], own.as_str());
    assert_eq!(ledger().entry(&own).unwrap().status.code(), "verifying");
    let change = ledger().history(Some(&own), None).unwrap().pop().unwrap();
    assert_eq!(change.who, "xihe-officer (portal, 127.0.0.1)");
    let kept: Vec<_> = std::fs::read_dir(layout.returns())
        .unwrap()
        .flatten()
        .collect();
    assert!(kept
        .iter()
        .any(|f| std::fs::read(f.path()).unwrap() == good));
}
