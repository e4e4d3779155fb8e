//! The dashboard in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, installed by `scripts/setup.sh`), against a 3-member
//! committee over the replicated ledger (512-bit dealer key, noise disabled). An admin signs in
//! and registers a researcher; the researcher changes the generated password, builds a grouped
//! count with two filters, and sees the chart; a researcher cannot open admin pages; an admin
//! runs the ledger verifier from the auditor page. Screenshots of the main pages are written to
//! `target/screenshots/`, and to `docs/screenshots/` with `MEDTECH_UPDATE_SCREENSHOTS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use medtech_federation::api::accounts::{Account, Accounts};
use medtech_federation::api::auth::Role;
use medtech_federation::api::client;
use medtech_federation::api::{ApiConfig, ApiServer};
use medtech_federation::data::generate::devices;
use medtech_federation::node::LocalFederation;
use medtech_federation::protocol::{NoiseMode, Timeouts};
use medtech_threshold::dealer;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{json, Value};

const ADMIN_PW: &str = "admin password for the browser";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run `sh scripts/setup.sh` (Debian's chromium and chromium-driver)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client::json(addr, "GET", "/status", None, &Value::Null).await {
                if r.json()["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }
        } } });
        let r = client::json(addr, "POST", "/session", None, &caps)
            .await
            .unwrap();
        let session = r.json()["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {}", String::from_utf8_lossy(&r.body)))
            .to_owned();
        Driver {
            child,
            addr,
            session,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let r = client::json(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            None,
            &body,
        )
        .await
        .unwrap();
        let v = r.json();
        assert!(r.status < 300, "{method} {path}: {v}");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url })).await;
    }

    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client::json(
                self.addr,
                "POST",
                &format!("/session/{}/element", self.session),
                None,
                &json!({ "using": "css selector", "value": css }),
            )
            .await
            .unwrap();
            if r.status == 200 {
                return r.json()["value"][ELEMENT].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.cmd(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), json!({}))
            .await;
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn source(&self) -> String {
        self.cmd("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn wait_for_text(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.source().await.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = base64::engine::general_purpose::STANDARD
            .decode(
                self.cmd("GET", "/screenshot", Value::Null)
                    .await
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = vec![root.join("target/screenshots")];
        if std::env::var("MEDTECH_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            dirs.push(root.join("docs/screenshots"));
        }
        for d in dirs {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_registers_a_researcher_who_builds_a_grouped_count_and_sees_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let (key, shares) = dealer::generate(512, 3, 2, &mut ChaCha20Rng::seed_from_u64(3)).unwrap();
    let fed = LocalFederation::start(
        dir.path(),
        key,
        shares,
        NoiseMode::DisabledForTests,
        Timeouts::default(),
    )
    .await
    .unwrap();
    for (i, store) in fed.stores.iter().enumerate() {
        store
            .write()
            .unwrap()
            .write(
                &devices(&fed.view.members[i], 0, 2000, 10 + i as u64),
                |_, _| {},
            )
            .unwrap();
    }
    fed.register("seed-researcher", 0.0, 100.0).await.unwrap();
    let accounts = Accounts::in_memory().unwrap();
    accounts
        .create(Account::new("admin", Role::Admin), ADMIN_PW, false)
        .unwrap();
    let state = fed.api_state(0, accounts, ApiConfig::default()).unwrap();
    let server = ApiServer::spawn(
        std::sync::Arc::new(state),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .unwrap();
    // `localhost`: browsers send Secure cookies to it over plain HTTP.
    let base = format!("http://localhost:{}", server.addr.port());
    let b = Driver::start().await;

    // The admin signs in and registers a researcher.
    b.go(&format!("{base}/ui/")).await;
    assert!(
        b.url().await.ends_with("/ui/login"),
        "not signed in: to the login page"
    );
    b.screenshot("login").await;
    b.type_into("#username", "admin").await;
    b.type_into("#password", ADMIN_PW).await;
    b.click("button[type=submit]").await;
    b.wait_for_text("Register a researcher", Duration::from_secs(10))
        .await;
    b.type_into("#r-user", "dana").await;
    b.type_into("#r-name", "Dr. Dana Scully").await;
    b.type_into("#r-eps", "4").await;
    b.click("form[action='/ui/admin/researchers'] button[type=submit]")
        .await;
    b.wait_for_text("shown only now", Duration::from_secs(10))
        .await;
    let generated = b.text("#new-password").await;
    assert_eq!(generated.len(), 20);
    // One admin only proposed the registration and the budget (t = 2): member 1 approves.
    let pending: Vec<_> = {
        let h = fed.handle(0).unwrap();
        let l = h.read().unwrap();
        l.state()
            .pending_changes()
            .values()
            .map(|p| p.kind.clone())
            .collect()
    };
    assert_eq!(pending.len(), 2, "registration and budget wait for t");
    for k in pending {
        let r = fed.handle(1).unwrap().propose_own(k).await.unwrap();
        assert!(r.rejection.is_none(), "{r:?}");
    }
    b.screenshot("admin-researchers").await;
    b.go(&format!("{base}/ui/admin/committee")).await;
    b.wait_for_text("Any 2 of 3 members decrypt", Duration::from_secs(10))
        .await;
    b.screenshot("admin-committee").await;
    b.click("header form button").await; // sign out
    b.wait_for_text("Sign in", Duration::from_secs(10)).await;

    // The researcher signs in, must change the generated password, then builds a query.
    b.type_into("#username", "dana").await;
    b.type_into("#password", &generated).await;
    b.click("button[type=submit]").await;
    b.wait_for_text("choose your own now", Duration::from_secs(10))
        .await;
    b.type_into("#old", &generated).await;
    b.type_into("#new", "dana's very own password").await;
    b.click("main button[type=submit]").await;
    b.wait_for_text("Password changed.", Duration::from_secs(10))
        .await;

    b.go(&format!("{base}/ui/query")).await;
    b.wait_for_text("ε 4.000 left", Duration::from_secs(10))
        .await;
    b.click("#kind option[value=grouped_count]").await;
    b.click("#target option[value=speciality]").await;
    b.type_into("#epsilon", "1").await;
    b.click("#f0_field option[value=device_type]").await;
    b.click("#f0_op option[value=equals]").await;
    b.type_into("#f0_value", "Pacemaker").await;
    b.click("#f1_field option[value=usage_hours]").await;
    // The script offers only the operators of an integer field.
    assert!(b.source().await.contains("id=\"f1_op\""));
    b.click("#f1_op option[value=greater_than]").await;
    b.type_into("#f1_value", "1000").await;
    b.screenshot("researcher-query-builder").await;
    // Preview first (issue 28 §2): cost and precision, nothing charged, the form kept.
    b.click("#preview-button").await;
    b.wait_for_text("Nothing has been charged.", Duration::from_secs(10))
        .await;
    let page = b.source().await;
    assert!(page.contains("ε 4.000 left"), "the preview charged nothing");
    assert!(page.contains("each of 56 bins"), "one row for the bins");
    assert!(
        page.contains("accepted for this kind and target is 0.000001."),
        "the floor, exact"
    );
    assert!(page.contains("value=\"Pacemaker\""), "the form is kept");
    assert_eq!(b.count("#preview td.num").await, 2, "two half-widths");
    b.screenshot("researcher-query-preview").await;
    b.click("#query-form button[type=submit]").await;
    b.wait_for_text(
        "status <span class=\"status-released\">released</span>",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        b.count("svg.chart rect").await,
        56,
        "one bar per speciality bin, empty ones too"
    );
    assert!(b
        .source()
        .await
        .contains("hospital-a, hospital-b, hospital-c"));
    assert!(b.source().await.contains("ε 3.000 left"));
    b.screenshot("researcher-result-chart").await;
    b.go(&format!("{base}/ui/queries")).await;
    b.wait_for_text(
        "Grouped count by speciality; device_type equals",
        Duration::from_secs(10),
    )
    .await;
    b.screenshot("researcher-history").await;

    // A researcher cannot open admin pages (and a form without its CSRF token is refused).
    b.go(&format!("{base}/ui/admin/researchers")).await;
    b.wait_for_text(
        "This page is not for the researcher role.",
        Duration::from_secs(10),
    )
    .await;
    let r = client::request(
        server.addr,
        "POST",
        "/ui/admin/researchers",
        None,
        Some("application/x-www-form-urlencoded"),
        b"username=eve&epsilon_budget=100",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 303, "no session: to the login page");
    assert!(fed
        .handle(0)
        .unwrap()
        .read()
        .unwrap()
        .state()
        .researcher("eve")
        .is_none());

    // The admin checks the ledger from the auditor page.
    b.click("header form button").await;
    b.wait_for_text("Sign in", Duration::from_secs(10)).await;
    b.type_into("#username", "admin").await;
    b.type_into("#password", ADMIN_PW).await;
    b.click("button[type=submit]").await;
    b.wait_for_text("Register a researcher", Duration::from_secs(10))
        .await;
    b.go(&format!("{base}/ui/audit")).await;
    // Members cosign checkpoints as the log grows; the page names the cosigners.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.source().await.contains("cosigned by hospital-") {
        assert!(Instant::now() < deadline, "no cosigned checkpoint shown");
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.go(&format!("{base}/ui/audit")).await;
    }
    b.click("form[action='/ui/audit/verify'] button").await;
    b.wait_for_text("PASSED", Duration::from_secs(30)).await;
    b.screenshot("auditor-ledger").await;

    // Narrow (tablet) width still shows the result without horizontal scrolling of the page.
    b.cmd(
        "POST",
        "/window/rect",
        json!({ "width": 800, "height": 1000 }),
    )
    .await;
    b.go(&format!("{base}/ui/queries")).await;
    b.wait_for_text("Query history", Duration::from_secs(10))
        .await;
    b.screenshot("admin-history-tablet").await;

    let _ = b.cmd("DELETE", "", Value::Null).await;
    drop(b);
    server.shutdown().await;
    fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_send_strict_security_headers_and_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let (key, shares) = dealer::generate(512, 3, 2, &mut ChaCha20Rng::seed_from_u64(4)).unwrap();
    let fed = LocalFederation::start(
        dir.path(),
        key,
        shares,
        NoiseMode::DisabledForTests,
        Timeouts::default(),
    )
    .await
    .unwrap();
    let state = fed
        .api_state(0, Accounts::in_memory().unwrap(), ApiConfig::default())
        .unwrap();
    let server = ApiServer::spawn(
        std::sync::Arc::new(state),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .unwrap();
    let r = client::request(server.addr, "GET", "/ui/login", None, None, b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let c = r.header("set-cookie").unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"),
        "{c}"
    );
    // A login post without the form's double-submit cookie is refused before any password check.
    let r = client::request(
        server.addr,
        "POST",
        "/ui/login",
        None,
        Some("application/x-www-form-urlencoded"),
        b"csrf=x&username=admin&password=whatever",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    server.shutdown().await;
    fed.shutdown().await.unwrap();
}
