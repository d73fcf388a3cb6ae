//! The portal's page in headless Chromium, driven through chromedriver (WebDriver): what a
//! county officer sees and does, checked on the page and in the ledger. Screenshots are saved
//! in the test's temp folder, or in `GENGBAO_SCREENSHOTS` when set, for a person to look at.

use crate::portal::{patches_of, returned_csv, served_city, site_photo, PASSWORD};
use fantoccini::{Client, ClientBuilder, Locator};
use gengbao::ledger::Ledger;
use gengbao::portal::evidence::EvidenceStore;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver and Chromium, when both are installed (`scripts/setup.sh` installs them).
fn driver() -> Option<Driver> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let chromedriver = ["/usr/bin/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let (Some(_), Some(chromedriver)) = (chromium, chromedriver) else {
        eprintln!("skipped: Chromium or chromedriver missing (scripts/setup.sh installs chromium and chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

async fn browser(driver: &Driver) -> Client {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1500,900", "--lang=zh-CN"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Waits until `script` (a JavaScript expression) is true on the page; panics with `what`
/// and the page's last value after 30 s.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let shown = c
                .execute("return document.body.innerText;", vec![])
                .await
                .unwrap();
            panic!("waited 30 s for {what} ({script}); the page shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
        .text()
        .await
        .unwrap()
}

async fn number(c: &Client, script: &str) -> u64 {
    c.execute(&format!("return {script};"), vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap_or_else(|| panic!("{script} is not a number"))
}

/// Types `text` into the element `id` (a file input takes a path).
async fn type_into(c: &Client, id: &str, text: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"))
        .click()
        .await
        .unwrap();
}

async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

async fn log_in(c: &Client, base: &str, name: &str) {
    c.goto(base).await.unwrap();
    until(
        c,
        "the login form",
        "!document.getElementById('login').hidden",
    )
    .await;
    type_into(c, "login-name", name).await;
    type_into(c, "login-password", PASSWORD).await;
    click(c, "login-submit").await;
    until(
        c,
        "the list and the map's patches",
        "!document.getElementById('app').hidden && document.getElementById('map-note').textContent.startsWith('视野内')",
    )
    .await;
}

/// A county officer logs in, sees the county's patches (and only them) in the list and on
/// the map over the period's imagery, opens one, moves it, adds a site photo and logs out; the
/// other county's officer then cannot reach that patch by its address.
#[test]
fn a_county_officer_works_a_patch_in_the_browser_and_the_other_county_cannot_see_it() {
    let Some(driver) = driver() else {
        return;
    };
    let served = served_city();
    let last = served.export_last_period();
    let shots: PathBuf = std::env::var_os("GENGBAO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| served._tmp.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let ledger_file = served.cfg.layout().ledger_file();
    let ledger = Ledger::open_existing(&ledger_file).unwrap();
    let (xihe, donghu) = (
        patches_of(&served.cfg, "320901"),
        patches_of(&served.cfg, "320902"),
    );
    let own = served.own.clone();
    let photo_path = served._tmp.path().join("现场照片.jpg");
    let outline = ledger.listed(&own).unwrap().record.lon_lat;
    std::fs::write(
        &photo_path,
        site_photo(
            served._tmp.path(),
            outline.0,
            outline.1,
            "2030:01:02 10:00:00",
        ),
    )
    .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let c = browser(&driver).await;
        log_in(&c, &served.base, "xihe-officer").await;

        // The list: the county's patches, no other county's.
        assert_eq!(
            text(&c, "#list-count").await,
            format!("共 {} 个图斑", xihe.len())
        );
        let listed: Vec<String> = serde_json::from_value(
            c.execute(
                "return [...document.querySelectorAll('#list-rows tr')].map(r => r.dataset.tbbh);",
                vec![],
            )
            .await
            .unwrap(),
        )
        .unwrap();
        assert!(!listed.is_empty());
        assert!(
            listed.iter().all(|t| xihe.contains(t)),
            "rows {listed:?}"
        );
        assert!(!listed.iter().any(|t| donghu.contains(t)));
        // The map: the county's patches in view, over tiles of the period's composite.
        until(&c, "map tiles", "document.querySelectorAll('#map img.leaflet-tile-loaded').length > 0").await;
        let drawn = number(&c, "document.querySelectorAll('#map path.leaflet-interactive').length").await;
        assert_eq!(drawn as usize, xihe.len(), "patches drawn on the map");
        assert!(text(&c, ".legend").await.contains("非农化"));
        assert!(text(&c, ".leaflet-control-scale").await.contains('m'));
        screenshot(&c, &shots, "1-map-and-list.png").await;

        // Its card.
        c.find(Locator::Css(&format!("#list-rows tr[data-tbbh='{own}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(&c, "the card", &format!("document.getElementById('card-title')?.textContent === '{own}'")).await;
        let card = text(&c, "#card-body").await;
        for label in ["行政区名称", "变化类型", "亩", "m²", "流转记录"] {
            assert!(card.contains(label), "the card lacks {label}:\n{card}");
        }
        until(&c, "the chip", "document.querySelector('#card-body img.chip')?.naturalWidth > 0").await;
        screenshot(&c, &shots, "2-card.png").await;

        // A move the officer may make.
        let before = ledger.entry(&own).unwrap().status;
        let moves: Vec<String> = serde_json::from_value(
            c.execute(
                "return [...document.querySelectorAll('#move-to option')].map(o => o.value);",
                vec![],
            )
            .await
            .unwrap(),
        )
        .unwrap();
        let to = moves
            .iter()
            .find(|m| *m == "verifying")
            .or(moves.first())
            .unwrap_or_else(|| panic!("no move offered from {before:?}"))
            .clone();
        c.execute(
            &format!("const s = document.getElementById('move-to'); s.value = '{to}'; s.dispatchEvent(new Event('change'));"),
            vec![],
        )
        .await
        .unwrap();
        type_into(&c, "move-note", "到现场核查").await;
        click(&c, "move-submit").await;
        until(&c, "the saved move", "document.getElementById('move-message')?.textContent === '已保存'").await;
        let moved = ledger.entry(&own).unwrap().status;
        assert_eq!(moved.code(), to);
        assert_eq!(text(&c, "#card-status").await, moved.label_zh());
        let last_change = ledger.history(Some(&own), None).unwrap().pop().unwrap();
        assert_eq!(last_change.who, "xihe-officer (portal, 127.0.0.1)");
        assert_eq!(last_change.note, "到现场核查");

        // A site photo.
        type_into(&c, "evidence-file", &photo_path.to_string_lossy()).await;
        click(&c, "evidence-submit").await;
        until(&c, "the uploaded photo", "document.getElementById('evidence-message')?.textContent === '已上传'").await;
        let stored = EvidenceStore::open(&ledger_file, &served.cfg.layout().evidence())
            .unwrap()
            .of(&own)
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].sent_name, "现场照片.jpg");
        assert!(text(&c, ".evidence").await.contains("现场照片.jpg"));
        c.execute("document.querySelector('.evidence').scrollIntoView();", vec![])
            .await
            .unwrap();
        screenshot(&c, &shots, "3-moved-with-photo.png").await;

        // The county's returned list, sent from the list's form: a second patch to 核查中.
        let second = xihe.get(1).expect("two patches in 320901").clone();
        let returned = served._tmp.path().join("回填表.csv");
        std::fs::write(
            &returned,
            returned_csv(&served, last, "320901", &[(&second, "核查中")]),
        )
        .unwrap();
        type_into(&c, "returns-file", &returned.to_string_lossy()).await;
        click(&c, "returns-submit").await;
        until(&c, "the imported list", "document.getElementById('returns-message').textContent.startsWith('已导入')").await;
        let imported = text(&c, "#returns-message").await;
        assert!(
            imported.starts_with("已导入：1 个图斑状态变更，"),
            "{imported}"
        );
        assert_eq!(ledger.entry(&second).unwrap().status.code(), "verifying");
        until(
            &c,
            "the list showing the imported move",
            &format!("[...document.querySelectorAll('#list-rows tr')].some(r => r.dataset.tbbh === '{second}' && r.textContent.includes('核查中'))"),
        )
        .await;
        screenshot(&c, &shots, "4-returned-list-imported.png").await;

        click(&c, "logout").await;
        until(&c, "the login form after logout", "!document.getElementById('login').hidden && document.getElementById('login-error').textContent === '已退出'").await;

        // The other county's officer: not in the list, not by address.
        log_in(&c, &served.base, "donghu-officer").await;
        // Nothing of the last account's is left on the page.
        let shown = c
            .execute("return document.body.innerText;", vec![])
            .await
            .unwrap();
        let shown = shown.as_str().unwrap();
        assert!(!shown.contains(own.as_str()), "{own} still shown:\n{shown}");
        assert!(!shown.contains("现场照片"), "the evidence is still shown:\n{shown}");
        assert_eq!(
            text(&c, "#list-count").await,
            format!("共 {} 个图斑", donghu.len())
        );
        c.goto(&format!("{}#patch/{own}", served.base)).await.unwrap();
        until(&c, "the refusal", "document.getElementById('card-missing') !== null").await;
        let refused = text(&c, "#card-body").await;
        assert!(refused.contains("未找到该图斑"), "{refused}");
        assert!(!refused.contains("变化类型"), "{refused}");
        screenshot(&c, &shots, "5-other-county-refused.png").await;
        c.close().await.unwrap();
    });
    eprintln!("screenshots: {}", shots.display());
}
