//! `medtech bench query`: the federation end to end as researchers see it, with one
//! `medtech node` process per hospital on loopback (real mutual TLS, durable ledger, real
//! HTTP), the key from a dealer-free ceremony, calibrated noise.
//!
//! Phases: (1) `committee init` (timed: the ceremony); (2) start the members; (3) each
//! hospital's operator uploads its devices over HTTP as CSV in 100,000-record requests (records
//! per second per node: parse, validate, durable write, columnar index); (4) latency: for each
//! query kind, `queries` queries one after another, each timed from `POST /api/v1/queries` to
//! the released result (`GET …?wait`); (5) throughput: `clients` researchers submit Counts
//! concurrently for `seconds`, and released queries per second are counted; (6) sustained
//! load: Counts arrive at a fixed `rate` per second (open loop, spread over the researchers
//! and members) for `seconds`, and the committee keeps up if the release rate after a warm-up
//! matches the offered rate and latency does not grow; (7) every node's peak resident set
//! (`VmHWM` of its process).
//!
//! A closed loop of `clients` researchers can never put more than `clients` queries in a
//! bundle, so its queries/s is `clients` divided by the latency under that load, not the
//! committee's capacity; the open loop measures whether the committee sustains a given rate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::api::client;

/// Parameters.
#[derive(Clone, Debug)]
pub struct QueryBenchConfig {
    /// Hospitals n.
    pub hospitals: u16,
    /// Threshold t.
    pub threshold: u16,
    /// Devices per hospital.
    pub devices: u64,
    /// Modulus bits.
    pub bits: u32,
    /// Sequential queries per kind in the latency phase.
    pub queries: usize,
    /// Concurrent researchers in the throughput phase.
    pub clients: usize,
    /// Seconds of the throughput phase, and of the sustained-load phase.
    pub seconds: f64,
    /// Offered Counts per second in the sustained-load phase (0: skip it).
    pub rate: f64,
    /// Where the committee lives (a temporary directory is made inside and removed).
    pub dir: PathBuf,
    /// First loopback port (committee ports from here, API ports 100 above).
    pub base_port: u16,
}

/// Latency of one query kind.
#[derive(Clone, Debug, Serialize)]
pub struct KindFigures {
    /// Queries timed.
    pub queries: usize,
    /// Median submit → released, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// One ledger entry of a query, timed from the query's submission.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineStep {
    /// Entry kind (as the API names it).
    pub kind: String,
    /// Its author.
    pub author: String,
    /// Its signing time, ms after the `SubmitQuery` entry's.
    pub ms: i64,
}

/// The entries of query `id` among the ledger's last 1,000, in log order, timed from its
/// submission (read through `addr`'s auditor API with an admin token).
async fn timeline(addr: SocketAddr, token: &str, id: &str) -> anyhow::Result<Vec<TimelineStep>> {
    let head = checked(addr, "GET", "/api/v1/ledger/head", token, Value::Null).await?;
    let size = head["size"].as_u64().unwrap_or(0);
    let from = size.saturating_sub(1000);
    let r = checked(
        addr,
        "GET",
        &format!("/api/v1/ledger/entries?from={from}&limit=1000"),
        token,
        Value::Null,
    )
    .await?;
    let mut out = Vec::new();
    let mut submitted = None;
    for e in r["entries"].as_array().into_iter().flatten() {
        if e["detail"]["query_id"].as_str() != Some(id) {
            continue;
        }
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            e["signed_entry"].as_str().unwrap_or_default(),
        )?;
        let at = medtech_ledger::entry::ParsedEntry::decode(&bytes)
            .map_err(|e| anyhow::anyhow!("ledger entry: {e}"))?
            .body
            .timestamp_ms as i64;
        let t0 = *submitted.get_or_insert(at);
        out.push(TimelineStep {
            kind: e["kind"].as_str().unwrap_or_default().to_owned(),
            author: e["author"].as_str().unwrap_or_default().to_owned(),
            ms: at - t0,
        });
    }
    Ok(out)
}

/// The sustained-load phase: Counts submitted at a fixed rate (open loop).
#[derive(Clone, Debug, Serialize)]
pub struct SustainedFigures {
    /// Offered Counts per second.
    pub offered_per_second: f64,
    /// Seconds of submissions.
    pub seconds: f64,
    /// Queries submitted.
    pub submitted: usize,
    /// Queries released.
    pub released: usize,
    /// Queries failed or refused.
    pub failed: usize,
    /// Releases per second between a quarter and the end of the submission window (after
    /// the warm-up; equal to the offered rate when the committee keeps up).
    pub released_per_second: f64,
    /// Latency of the released queries.
    pub latency: KindFigures,
    /// Median latency of the last quarter's submissions over the first quarter's (about 1
    /// when the committee keeps up; a growing backlog makes it grow with the run's length).
    pub latency_growth: f64,
    /// Mean size of the bundle a released query was decrypted in.
    pub bundle_mean: f64,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct QueryBenchReport {
    /// Hospitals.
    pub hospitals: u16,
    /// Threshold.
    pub threshold: u16,
    /// Modulus bits.
    pub bits: u32,
    /// Devices per hospital.
    pub devices_per_hospital: u64,
    /// Seconds for `committee init` (dealer-free ceremony, certificates, files).
    pub ceremony_seconds: f64,
    /// Ingest records per second, per node (upload over HTTP, parse, durable write).
    pub ingest_records_per_second: Vec<f64>,
    /// Count latency.
    pub count: KindFigures,
    /// The last Count of the latency phase as its ledger entries tell it: each entry's kind,
    /// author and signing time after the submission's (where an idle query's time goes).
    pub count_timeline: Vec<TimelineStep>,
    /// Grouped count over the 56 speciality bins.
    pub grouped_count_speciality: KindFigures,
    /// Average of usage_hours.
    pub average: KindFigures,
    /// Released queries per second with `clients` concurrent researchers.
    pub queries_per_second: f64,
    /// Concurrent researchers.
    pub clients: usize,
    /// Queries released in the throughput phase.
    pub throughput_released: usize,
    /// Queries failed or refused in the throughput phase.
    pub throughput_failed: usize,
    /// Latency of the released Counts of the throughput phase, under load.
    pub throughput_latency: KindFigures,
    /// Mean size of the bundle a released Count of the throughput phase was decrypted in
    /// (1 = alone; `crate::bundle`).
    pub throughput_bundle_mean: f64,
    /// The sustained-load phase (absent when its rate is 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained: Option<SustainedFigures>,
    /// Peak resident set of each node process, MiB (the peak comes from bulk ingest).
    pub peak_rss_mb: Vec<f64>,
    /// Resident set of each node process after the throughput phase, MiB: what a node holding
    /// its devices uses while serving queries.
    pub serving_rss_mb: Vec<f64>,
    /// Each member's release checks in its ledger's apply (issue 24 §3: every member recombines
    /// every release from `t` partials before applying it), over the whole run.
    pub release_checks: Vec<ReleaseCheckFigures>,
    /// One raw GMP modexp (4096-bit modulus, 2048-bit exponent), ms, measured before the
    /// ceremony and after the last phase: this machine's speed varies by day.
    pub modexp_baseline_ms: [f64; 2],
}

/// One member's release checks ([`crate::rules::RELEASE_CHECKS`]).
#[derive(Clone, Debug, Serialize)]
pub struct ReleaseCheckFigures {
    /// Releases checked.
    pub checks: u64,
    /// Seconds spent checking them.
    pub seconds: f64,
    /// Mean per release, ms.
    pub mean_ms: f64,
}

/// A member's release-check counters, read from its `/metrics`.
async fn release_checks(addr: SocketAddr, token: &str) -> anyhow::Result<ReleaseCheckFigures> {
    let r = client::json(addr, "GET", "/metrics", Some(token), &Value::Null).await?;
    anyhow::ensure!(r.status == 200, "GET /metrics: {}", r.status);
    let text = String::from_utf8_lossy(&r.body);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let checks = value("medtech_release_checks");
    let seconds = value("medtech_release_check_seconds");
    Ok(ReleaseCheckFigures {
        checks: checks as u64,
        seconds,
        mean_ms: if checks > 0.0 {
            seconds * 1000.0 / checks
        } else {
            f64::NAN
        },
    })
}

impl QueryBenchReport {
    /// The report as a table.
    pub fn to_text(&self) -> String {
        let k = |name: &str, f: &KindFigures| {
            format!(
                "{name:<28} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms   ({} queries)\n",
                f.p50_ms, f.p99_ms, f.max_ms, f.queries
            )
        };
        format!(
            "bench query: {} hospitals (t = {}), {}-bit key, {} devices each, separate node processes on loopback\n\
             ceremony (committee init)    {:.1} s\n\
             ingest records/s per node    {}\n{}{}{}\
             throughput                   {:.2} queries/s ({} clients, {} released, {} failed)\n{}\
             queries per bundle (mean)    {:.2}\n{}\
             peak RSS per node (MiB)      {}\n\
             RSS serving, per node (MiB)  {}\n\
             release checks in apply      {}\n\
             modexp baseline (ms)         {:.3} before, {:.3} after\n",
            self.hospitals,
            self.threshold,
            self.bits,
            self.devices_per_hospital,
            self.ceremony_seconds,
            self.ingest_records_per_second.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            k("count", &self.count),
            k("grouped count (speciality)", &self.grouped_count_speciality),
            k("average (usage_hours)", &self.average),
            self.queries_per_second,
            self.clients,
            self.throughput_released,
            self.throughput_failed,
            k("count under that load", &self.throughput_latency),
            self.throughput_bundle_mean,
            self.sustained.as_ref().map_or_else(String::new, |s| format!(
                "sustained load               {:.1} queries/s offered for {:.0} s: {:.2} released/s after warm-up ({} released, {} failed), latency growth x{:.2}, bundle mean {:.2}\n{}",
                s.offered_per_second, s.seconds, s.released_per_second, s.released, s.failed,
                s.latency_growth, s.bundle_mean, k("count at that rate", &s.latency)
            )),
            self.peak_rss_mb.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            self.serving_rss_mb.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            self.release_checks.iter().map(|r| format!("{} in {:.2} s ({:.1} ms each)", r.checks, r.seconds, r.mean_ms)).collect::<Vec<_>>().join("; "),
            self.modexp_baseline_ms[0],
            self.modexp_baseline_ms[1],
        )
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `/proc/PID/status` memory line (`VmHWM:` peak, `VmRSS:` current) in MiB; NaN where it
/// cannot be read (no such process, not Linux).
pub fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with(field))?.to_owned();
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn peak_rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmHWM:")
}

fn figures(mut ms: Vec<f64>) -> KindFigures {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if ms.is_empty() {
            f64::NAN
        } else {
            ms[((ms.len() - 1) as f64 * q).round() as usize]
        }
    };
    KindFigures {
        queries: ms.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
    }
}

async fn checked(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = client::json(addr, method, path, Some(token), &body).await?;
    anyhow::ensure!(
        r.status < 300,
        "{method} {path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    Ok(r.json())
}

/// Logs `user` in for the first time (setting a new password) once the member at `addr` has
/// applied its registration (the last approval may still be on its way there).
async fn login_when_registered(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> anyhow::Result<String> {
    let mut last = None;
    for _ in 0..100 {
        match client::first_login(
            addr,
            user,
            password,
            &crate::api::accounts::generate_password(),
        )
        .await
        {
            Ok(token) => return Ok(token),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!(
        "first login of {user}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Submits `spec` at `addr` and waits for it; returns ms, whether it was released, how many
/// queries were decrypted together with it (1 when it ran alone), and its id.
async fn one_query(
    addr: SocketAddr,
    token: &str,
    spec: &Value,
    auditor: Option<&str>,
) -> anyhow::Result<(f64, bool, usize, String)> {
    let t0 = Instant::now();
    let r = checked(addr, "POST", "/api/v1/queries", token, spec.clone()).await?;
    let id = r["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let q = checked(
            addr,
            "GET",
            &format!("/api/v1/queries/{id}?wait=60"),
            token,
            Value::Null,
        )
        .await?;
        match q["status"].as_str() {
            Some("released") => {
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                // A researcher sees only its own queries of a bundle: the bundle's size is read
                // with the auditor's token, after the latency was taken.
                let whole = match auditor {
                    Some(a) => checked(
                        addr,
                        "GET",
                        &format!("/api/v1/queries/{id}"),
                        a,
                        Value::Null,
                    )
                    .await
                    .unwrap_or(q),
                    None => q,
                };
                let bundle = whole["result"]["bundle"]
                    .as_array()
                    .map_or(1, |b| b.len().max(1));
                return Ok((ms, true, bundle, id));
            }
            Some("failed") => {
                eprintln!(
                    "bench query: query {id} failed: {}",
                    q["failure"]
                        .as_str()
                        .or(q["reason"].as_str())
                        .unwrap_or("(no reason given)")
                );
                return Ok((t0.elapsed().as_secs_f64() * 1e3, false, 0, id));
            }
            _ => anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(600),
                "query {id} did not end in 600 s"
            ),
        }
    }
}

/// The mean of released queries' bundle sizes (0 when none was released).
fn mean_bundle(sizes: &[usize]) -> f64 {
    if sizes.is_empty() {
        0.0
    } else {
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
    }
}

/// The sustained-load phase: `cfg.rate` Counts per second for `cfg.seconds`, submitted on
/// schedule whatever the committee's progress (open loop), round-robin over the researchers
/// and the members' APIs.
async fn sustained(
    cfg: &QueryBenchConfig,
    apis: &[SocketAddr],
    auditors: &[String],
    tokens: &[String],
    spec: &Value,
) -> anyhow::Result<SustainedFigures> {
    let total = (cfg.rate * cfg.seconds).floor() as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / cfg.rate);
        let addr = apis[i % apis.len()];
        let auditor = auditors[i % apis.len()].clone();
        let token = tokens[i % tokens.len()].clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let submitted = at.duration_since(start).as_secs_f64();
            let r = one_query(addr, &token, &spec, Some(&auditor)).await;
            (submitted, r)
        }));
    }
    // (submitted at, released at, latency ms, bundle), seconds since the start.
    let mut done: Vec<(f64, f64, f64, usize)> = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            (at, Ok((ms, true, bundle, _))) => done.push((at, at + ms / 1e3, ms, bundle)),
            (at, Ok((_, false, _, _))) => {
                eprintln!("bench query: a query submitted at {at:.1} s failed");
                failed += 1;
            }
            (at, Err(e)) => {
                eprintln!("bench query: a query submitted at {at:.1} s: {e}");
                failed += 1;
            }
        }
    }
    let window = cfg.seconds;
    let warm = window / 4.0;
    let released_per_second =
        done.iter().filter(|d| d.1 >= warm && d.1 <= window).count() as f64 / (window - warm);
    let median_of = |lo: f64, hi: f64| {
        figures(
            done.iter()
                .filter(|d| d.0 >= lo && d.0 < hi)
                .map(|d| d.2)
                .collect(),
        )
        .p50_ms
    };
    let latency_growth = median_of(window - warm, window) / median_of(0.0, warm);
    let bundle_mean = mean_bundle(&done.iter().map(|d| d.3).collect::<Vec<_>>());
    let f = SustainedFigures {
        offered_per_second: cfg.rate,
        seconds: window,
        submitted: total,
        released: done.len(),
        failed,
        released_per_second,
        latency: figures(done.iter().map(|d| d.2).collect()),
        latency_growth,
        bundle_mean,
    };
    eprintln!(
        "bench query: sustained {:.1}/s offered: {:.2} released/s, p50 {:.0} ms, growth x{:.2}",
        f.offered_per_second, f.released_per_second, f.latency.p50_ms, f.latency_growth
    );
    Ok(f)
}

/// Runs the benchmark, printing progress to standard error.
pub fn run(cfg: &QueryBenchConfig) -> anyhow::Result<QueryBenchReport> {
    anyhow::ensure!(
        cfg.devices >= 1 && cfg.devices <= 10_000_000,
        "--devices must be 1..=10000000"
    );
    anyhow::ensure!(
        cfg.queries >= 1 && cfg.clients >= 1,
        "--queries and --clients must be at least 1"
    );
    anyhow::ensure!(
        cfg.rate == 0.0 || cfg.rate * cfg.seconds >= 4.0,
        "--rate × --seconds must allow at least 4 queries (or --rate 0 to skip the sustained-load phase)"
    );
    let baseline_before = medtech_ceremony::bench::modexp_baseline_ms();
    std::fs::create_dir_all(&cfg.dir)?;
    let tmp = tempfile::tempdir_in(&cfg.dir)?;
    let dir = tmp.path().join("committee");
    let t0 = Instant::now();
    let init = crate::config::init(
        &crate::config::InitOptions {
            dir: dir.clone(),
            parties: cfg.hospitals,
            threshold: cfg.threshold,
            close_tolerance: None,
            bits: cfg.bits,
            containers: false,
            committee_port: cfg.base_port,
            api_port: cfg.base_port.saturating_add(100),
            origin: "medtech.bench/committee".into(),
        },
        &mut |p| eprintln!("bench query: {p}"),
    )?;
    let ceremony_seconds = t0.elapsed().as_secs_f64();
    // The throughput phases measure the committee, not the per-researcher cap on open queries
    // (issue 24 §4, default 4): the bench's few researchers keep many queries open at once.
    for f in &init.node_files {
        let mut node: crate::config::NodeFile = toml::from_str(&std::fs::read_to_string(f)?)?;
        node.api.max_queries_in_flight = Some(1 << 16);
        std::fs::write(f, toml::to_string_pretty(&node)?)?;
    }
    eprintln!(
        "bench query: committee made in {ceremony_seconds:.1} s; starting {} members",
        cfg.hospitals
    );
    let exe = std::env::current_exe()?;
    let mut procs = Vec::new();
    for f in &init.node_files {
        let log = std::fs::File::create(f.with_file_name("node.log"))?;
        procs.push(Proc(
            Command::new(&exe)
                .args(["node", "--config"])
                .arg(f)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        ));
    }
    let apis: Vec<SocketAddr> = (0..cfg.hospitals)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], cfg.base_port.saturating_add(100 + i))))
        .collect();
    let names: Vec<String> = init
        .node_files
        .iter()
        .filter_map(|f| Some(f.parent()?.file_name()?.to_string_lossy().into_owned()))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        for a in &apis {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if client::json(*a, "GET", "/ready", None, &Value::Null).await.is_ok_and(|r| r.status == 200) {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "member at {a} not ready in 120 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Operators upload their devices.
        let mut admins = Vec::new();
        let mut ingest = Vec::new();
        for (i, a) in apis.iter().enumerate() {
            let pw = std::fs::read_to_string(dir.join(&names[i]).join("data/admin-password"))?;
            let admin = client::first_login(*a, "admin", pw.trim(), &crate::api::accounts::generate_password()).await?;
            let op = checked(*a, "POST", "/api/v1/accounts", &admin, json!({ "username": "operator", "role": "operator" })).await?;
            let op = client::first_login(*a, "operator", op["password"].as_str().unwrap_or_default(), &crate::api::accounts::generate_password()).await?;
            let mut busy = Duration::ZERO;
            let mut first = 0;
            while first < cfg.devices {
                let n = 100_000.min(cfg.devices - first);
                let csv = crate::data::ingest::to_csv(&crate::data::generate::devices(&names[i], first, n, 1000 + i as u64))?;
                let t = Instant::now();
                let r = client::request(*a, "POST", "/api/v1/devices", Some(&op), Some("text/csv"), &csv).await?;
                busy += t.elapsed();
                anyhow::ensure!(r.status == 200, "upload: {} {}", r.status, String::from_utf8_lossy(&r.body));
                first += n;
            }
            let rate = cfg.devices as f64 / busy.as_secs_f64();
            eprintln!("bench query: {} holds {} devices ({rate:.0} records/s)", names[i], cfg.devices);
            ingest.push(rate);
            admins.push(admin);
        }
        let a0 = apis[0];
        checked(a0, "PUT", "/api/v1/budgets/dataset:federation", &admins[0], json!({ "epsilon": 1_000_000.0 })).await?;
        let mut first = Vec::new();
        for c in 0..cfg.clients.max(1) {
            let user = format!("bench-{c}");
            let r = checked(a0, "POST", "/api/v1/researchers", &admins[0], json!({ "username": user, "epsilon_budget": 100_000.0 })).await?;
            first.push((user, r["password"].as_str().unwrap_or_default().to_owned()));
        }
        // The dataset budget and the registrations wait for t members (docs/privacy.md); a
        // researcher logs in once registered on the ledger.
        let pending = 2 * cfg.clients.max(1) + 1; // the dataset budget; each registration and budget
        for (a, admin) in apis.iter().zip(&admins).skip(1).take(usize::from(cfg.threshold).saturating_sub(1)) {
            client::approve_pending(*a, admin, pending, Duration::from_secs(30)).await?;
        }
        let mut tokens = Vec::new();
        for (user, password) in &first {
            tokens.push(login_when_registered(a0, user, password).await?);
        }
        // Latency, one query at a time, spread over the members.
        let specs = [
            json!({ "kind": "count", "filters": [{ "field": "device_type", "op": "equals", "value": "Pacemaker" }], "epsilon": 0.01 }),
            json!({ "kind": "grouped_count", "target": "speciality", "epsilon": 0.01 }),
            json!({ "kind": "average", "target": "usage_hours", "epsilon": 0.01 }),
        ];
        let mut kinds = Vec::new();
        let mut count_timeline = Vec::new();
        for spec in &specs {
            let mut ms = Vec::new();
            let mut last = String::new();
            for q in 0..cfg.queries {
                let (t, released, _, id) =
                    one_query(apis[q % apis.len()], &tokens[0], spec, None).await?;
                anyhow::ensure!(released, "a {} query failed", spec["kind"]);
                ms.push(t);
                last = id;
            }
            if spec["kind"] == "count" {
                count_timeline = timeline(a0, &admins[0], &last).await?;
                eprintln!(
                    "bench query: the last Count on the ledger (ms after its submission): {}",
                    count_timeline
                        .iter()
                        .map(|s| format!("{} {} {}", s.kind, s.author, s.ms))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let f = figures(ms);
            eprintln!("bench query: {} p50 {:.0} ms p99 {:.0} ms", spec["kind"], f.p50_ms, f.p99_ms);
            kinds.push(f);
        }
        // Throughput.
        let until = Instant::now() + Duration::from_secs_f64(cfg.seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (c, token) in tokens.iter().enumerate() {
            let addr = apis[c % apis.len()];
            let auditor = admins[c % apis.len()].clone();
            let token = token.clone();
            let spec = specs[0].clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed, mut bundles) = (Vec::new(), 0usize, Vec::new());
                while Instant::now() < until {
                    match one_query(addr, &token, &spec, Some(&auditor)).await {
                        Ok((ms, true, b, _)) => {
                            ok.push(ms);
                            bundles.push(b);
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed, bundles)
            }));
        }
        let (mut released, mut failed, mut loaded, mut bundles) = (0, 0, Vec::new(), Vec::new());
        for t in tasks {
            let (o, f, b) = t.await?;
            released += o.len();
            loaded.extend(o);
            failed += f;
            bundles.extend(b);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let sustained = if cfg.rate > 0.0 {
            Some(sustained(cfg, &apis, &admins, &tokens, &specs[0]).await?)
        } else {
            None
        };
        let mut checks = Vec::new();
        for (a, admin) in apis.iter().zip(&admins) {
            // A figure lost (an expired token) does not lose the run's others.
            checks.push(release_checks(*a, admin).await.unwrap_or_else(|e| {
                eprintln!("bench query: release checks of {a}: {e}");
                ReleaseCheckFigures {
                    checks: 0,
                    seconds: f64::NAN,
                    mean_ms: f64::NAN,
                }
            }));
        }
        let mut kinds = kinds.into_iter();
        let mut next = || kinds.next().ok_or_else(|| anyhow::anyhow!("internal: missing figures"));
        Ok(QueryBenchReport {
            hospitals: cfg.hospitals,
            threshold: cfg.threshold,
            bits: cfg.bits,
            devices_per_hospital: cfg.devices,
            ceremony_seconds,
            ingest_records_per_second: ingest,
            count: next()?,
            count_timeline,
            grouped_count_speciality: next()?,
            average: next()?,
            queries_per_second: released as f64 / elapsed,
            clients: tokens.len(),
            throughput_released: released,
            throughput_failed: failed,
            throughput_latency: figures(loaded),
            throughput_bundle_mean: mean_bundle(&bundles),
            sustained,
            peak_rss_mb: procs.iter().map(|p| peak_rss_mb(p.0.id())).collect(),
            serving_rss_mb: procs.iter().map(|p| status_mb(p.0.id(), "VmRSS:")).collect(),
            release_checks: checks,
            modexp_baseline_ms: [baseline_before, medtech_ceremony::bench::modexp_baseline_ms()],
        })
    })?;
    for p in &procs {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(p.0.id().to_string())
            .status();
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(report)
}
