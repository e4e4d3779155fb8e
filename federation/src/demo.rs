//! `medtech demo`: a local committee of hospitals answers private queries end to end, in one
//! process, through the replicated ledger:
//!
//! 1. key generation without a dealer (the `dkg` protocol, all parties in this process; `--dealer`
//!    selects the labelled dealer mode instead);
//! 2. the committee ledger starts: one openraft node per hospital over loopback mutual TLS;
//! 3. each hospital loads synthetic devices into its own store (they never leave it);
//! 4. a researcher is registered on the ledger with a privacy budget;
//! 5. a Count, a Grouped count (all 56 speciality bins) and an Average are submitted; each is
//!    charged on the ledger in the entry that admits it, and every hospital's query loop
//!    contributes encrypted, range-proved counts and committed noise shares, closes the
//!    aggregate, recomputes it, partially decrypts with proofs, and the first to combine `t`
//!    valid partials releases the noisy result with its 95% interval (`crate::protocol`);
//! 6. a fourth query that would overspend the budget is refused by the ledger.
//!
//! Not done yet, and said when it runs: the node binary with its HTTP API (issue 6).

use std::io::Write;
use std::time::Instant;

use medtech_noise::{Committee, QueryResult};
use medtech_threshold::{dealer, dkg};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};

/// Demo parameters.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Modulus size in bits.
    pub bits: u32,
    /// Hospitals (= committee members).
    pub parties: u16,
    /// Threshold.
    pub threshold: u16,
    /// Use the trusted-dealer key mode instead of dealer-free generation.
    pub dealer: bool,
    /// After the queries, serve the HTTP API on loopback until Ctrl-C, from this port on (one
    /// port per member); `None` ends the demo after the queries.
    pub serve_from_port: Option<u16>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            bits: 2048,
            parties: 5,
            threshold: 3,
            dealer: false,
            serve_from_port: Some(8080),
        }
    }
}

/// What the demo produced, for tests.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    /// Exact per-bin totals (the plaintext reference the demo computed from its synthetic data).
    pub exact: Vec<i128>,
    /// The released result.
    pub result: QueryResult,
}

const RESEARCHER: &str = "researcher@demo";

/// Runs the demo, writing a narrative to `out`.
pub fn run(cfg: &DemoConfig, out: &mut dyn Write) -> anyhow::Result<DemoOutcome> {
    anyhow::ensure!(
        cfg.threshold >= 2 && cfg.threshold <= cfg.parties,
        "the demo needs 2 ≤ t ≤ n"
    );
    Committee::new(cfg.parties, cfg.threshold)?;
    let mut rng = OsRng;
    writeln!(
        out,
        "MedTech Chain demo: {} hospitals, any {} decrypt, {}-bit Paillier",
        cfg.parties, cfg.threshold, cfg.bits
    )?;
    writeln!(
        out,
        "  (one process: every hospital's ledger node, store, query loop and API; `medtech node` runs one member per process)"
    )?;

    let t0 = Instant::now();
    let (key, shares, how) = if cfg.dealer {
        let (key, shares) = dealer::generate(cfg.bits, cfg.parties, cfg.threshold, &mut rng)?;
        (
            key,
            shares,
            "DEALER mode: the dealer knew the factorisation".to_string(),
        )
    } else {
        let mut session = [0u8; 32];
        rng.fill_bytes(&mut session);
        let params = dkg::Parameters::new(cfg.bits, cfg.parties, cfg.threshold, session)
            .map_err(|e| anyhow::anyhow!("{e} (use --dealer for other committee shapes)"))?;
        let rngs = (0..cfg.parties)
            .map(|_| ChaCha20Rng::from_rng(OsRng))
            .collect::<Result<Vec<_>, _>>()?;
        let run = dkg::sim::run_in_process(&params, rngs, None)?;
        let stats = run.outputs[0].stats.clone();
        let how = format!(
            "no dealer: {} candidate pairs, {} rounds, {:.0} MB exchanged",
            stats.candidates_tried,
            run.rounds,
            run.bytes as f64 / 1e6
        );
        let key = run.outputs[0].key.clone();
        let shares = run.outputs.into_iter().map(|o| o.share).collect();
        (key, shares, how)
    };
    key.precompute();
    writeln!(
        out,
        "1. key generation ({how}): {:.1} s, key fingerprint {}",
        t0.elapsed().as_secs_f64(),
        hex8(&key.fingerprint())
    )?;

    // 2.–7. Through the replicated ledger.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(through_the_ledger(key, shares, cfg.serve_from_port, out))
}

/// Devices each demo hospital holds.
pub const DEVICES_PER_HOSPITAL: u64 = 20_000;

async fn through_the_ledger(
    key: medtech_threshold::ThresholdPublicKey,
    shares: Vec<medtech_threshold::KeyShare>,
    serve_from_port: Option<u16>,
    out: &mut dyn Write,
) -> anyhow::Result<DemoOutcome> {
    use crate::data::generate::devices;
    use crate::data::Columns;
    use crate::node::LocalFederation;
    use crate::protocol::{NoiseMode, Outcome, Timeouts};
    use crate::query::{Filter, Op, QueryKind, QuerySpec};

    let dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    let fed = LocalFederation::start(
        dir.path(),
        key,
        shares,
        NoiseMode::Calibrated,
        Timeouts::default(),
    )
    .await?;
    writeln!(
        out,
        "2. committee ledger up: {} members replicating over mutual TLS (openraft), {:.1} s",
        fed.view.members.len(),
        t0.elapsed().as_secs_f64()
    )?;
    let t0 = Instant::now();
    let mut all = Vec::new();
    for (i, store) in fed.stores.iter().enumerate() {
        let name = fed.view.members[i].clone();
        let ds = devices(&name, 0, DEVICES_PER_HOSPITAL, 1000 + i as u64);
        store
            .write()
            .map_err(|_| anyhow::anyhow!("store lock poisoned"))?
            .write(&ds, |_, _| {})?;
        all.extend(ds);
    }
    writeln!(
        out,
        "3. {} synthetic devices loaded into each hospital's own store ({} in all): {:.1} s",
        DEVICES_PER_HOSPITAL,
        all.len(),
        t0.elapsed().as_secs_f64()
    )?;
    fed.register(RESEARCHER, 3.0, 100.0).await?;
    writeln!(
        out,
        "4. researcher {RESEARCHER} registered on the ledger with a budget of ε = 3"
    )?;
    let reference = Columns::from_devices(&all);
    let queries = [
        QuerySpec {
            kind: QueryKind::Count,
            target: None,
            filters: vec![Filter {
                field: "device_type".into(),
                op: Op::Equals,
                value: "Infusion Pump".into(),
            }],
            start_time: None,
            end_time: None,
            epsilon: 1.0,
        },
        QuerySpec {
            kind: QueryKind::GroupedCount,
            target: Some("speciality".into()),
            filters: vec![],
            start_time: None,
            end_time: None,
            epsilon: 1.0,
        },
        QuerySpec {
            kind: QueryKind::Average,
            target: Some("usage_hours".into()),
            filters: vec![Filter {
                field: "active_status".into(),
                op: Op::Equals,
                value: true.into(),
            }],
            start_time: None,
            end_time: None,
            epsilon: 1.0,
        },
    ];
    let mut last = None;
    let mut exact_last = Vec::new();
    for (k, spec) in queries.iter().enumerate() {
        let t0 = Instant::now();
        let id = fed
            .submit(k % fed.view.members.len(), RESEARCHER, spec)
            .await?;
        let outcome = fed.wait(&id, std::time::Duration::from_secs(180)).await?;
        let exact = fed.view.compile_query(spec.clone())?.evaluate(&reference);
        let Outcome::Released(r) = outcome else {
            anyhow::bail!("query {id} failed: {outcome:?}");
        };
        writeln!(
            out,
            "5.{} {:?}{} (ε = 1, charged on the ledger with the query): released in {:.2} s, data from {} hospitals, decrypted by {}",
            k + 1,
            spec.kind,
            spec.target.as_deref().map(|t| format!("({t})")).unwrap_or_default(),
            t0.elapsed().as_secs_f64(),
            r.contributors.len(),
            r.decrypted_by.join(", ")
        )?;
        match &r.result {
            QueryResult::Count(v) => writeln!(
                out,
                "    infusion pumps: {} ± {} (95%)   [exact {}, shown only because the demo made the data]",
                v.value, v.half_width, exact[0]
            )?,
            QueryResult::GroupedCount(values) => {
                writeln!(out, "    first 8 of {} bins (every bin is released, empty ones too):", values.len())?;
                for ((label, v), e) in r.labels.iter().zip(values).zip(&exact).take(8) {
                    writeln!(out, "    {label:<36} {:>7} ± {}   [exact {e}]", v.value, v.half_width)?;
                }
            }
            QueryResult::Average { .. } => {
                let (lo, hi) = r.result.average_interval().unwrap_or((f64::NAN, f64::NAN));
                let centre = fed
                    .view
                    .platform
                    .average_targets
                    .get("usage_hours")
                    .map_or(0, |r| medtech_noise::query::centre(r.lower, r.upper));
                let exact_avg = centre as f64 + exact[0] as f64 / exact[1] as f64;
                writeln!(
                    out,
                    "    mean usage hours of active devices: {:.1} (95% interval {lo:.1}–{hi:.1})   [exact {exact_avg:.1}]",
                    r.average.unwrap_or(f64::NAN)
                )?;
            }
        }
        if matches!(spec.kind, QueryKind::GroupedCount) {
            last = Some(r.result.clone());
            exact_last = exact;
        }
    }
    match fed.submit(0, RESEARCHER, &queries[0]).await {
        Ok(id) => anyhow::bail!("internal: query {id} should have exceeded the budget"),
        Err(e) => writeln!(out, "6. a fourth query is refused by the ledger: {e}")?,
    }
    if let Some(port) = serve_from_port {
        serve(&fed, port, out).await?;
    }
    fed.shutdown().await?;
    let result = last.ok_or_else(|| anyhow::anyhow!("internal: no grouped count released"))?;
    Ok(DemoOutcome {
        exact: exact_last,
        result,
    })
}

/// 7. Serves the API of every member on loopback with demo accounts until Ctrl-C.
async fn serve(
    fed: &crate::node::LocalFederation,
    port: u16,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use crate::api::accounts::{generate_password, Account, Accounts};
    use crate::api::auth::Role;
    use crate::api::{ApiConfig, ApiServer};

    // The demo researcher gets a fresh budget for trying the API.
    let k = crate::protocol::budget_entry(&format!("researcher:{RESEARCHER}"), 10_000_000);
    // A raise: t members post it (see `LedgerState::needs_approval`).
    for m in 0..usize::from(fed.view.threshold) {
        fed.handle(m)?.propose_own(k.clone()).await?;
    }
    // One password per demo user, the same at every member (demo only).
    let creds: Vec<(&str, Role, _)> = [
        ("admin", Role::Admin),
        (RESEARCHER, Role::Researcher),
        ("operator", Role::Operator),
        ("auditor", Role::Auditor),
    ]
    .into_iter()
    .map(|(u, r)| (u, r, generate_password()))
    .collect();
    let mut servers = Vec::new();
    for i in 0..fed.view.members.len() {
        let accounts = Accounts::in_memory()?;
        for (user, role, pw) in &creds {
            accounts.create(
                Account {
                    display_name: format!("demo {}", role.as_str()),
                    affiliation: "MedTech Chain demo".into(),
                    ..Account::new(user, *role)
                },
                pw,
                false,
            )?;
        }
        let state = fed.api_state(i, accounts, ApiConfig::default())?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.saturating_add(i as u16)));
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot serve the API on {addr}: {e} (use --api-port, or --no-serve)")
        })?;
        servers.push(ApiServer::spawn(std::sync::Arc::new(state), l)?);
    }
    writeln!(out, "7. the API is served by every member until Ctrl-C:")?;
    for (i, s) in servers.iter().enumerate() {
        writeln!(
            out,
            "    {:<12} http://{}/ (OpenAPI: http://{}/api/v1/openapi.json)",
            fed.view.members[i], s.addr, s.addr
        )?;
    }
    writeln!(
        out,
        "   demo accounts (the same at every member; demo only, never reuse):"
    )?;
    for (user, role, pw) in &creds {
        writeln!(out, "    {user:<18} {:<11} {}", role.as_str(), pw.as_str())?;
    }
    writeln!(out, "   {RESEARCHER} now has a budget of ε = 10. Try:")?;
    writeln!(
        out,
        "    curl -s -X POST http://{}/api/v1/login -H 'content-type: application/json' -d '{{\"username\":\"{RESEARCHER}\",\"password\":\"…\"}}'",
        servers[0].addr
    )?;
    out.flush()?;
    tokio::signal::ctrl_c().await?;
    writeln!(out, "stopping")?;
    for s in servers {
        s.shutdown().await;
    }
    Ok(())
}

fn hex8(b: &[u8; 32]) -> String {
    b[..8].iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_runs_end_to_end_at_small_size() {
        let cfg = DemoConfig {
            bits: 512,
            parties: 5,
            threshold: 3,
            dealer: false,
            serve_from_port: None,
        };
        let mut out = Vec::new();
        let outcome = run(&cfg, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("is refused by the ledger: "), "{text}");
        assert!(text.contains("over budget"), "{text}");
        let QueryResult::GroupedCount(values) = &outcome.result else {
            panic!("{text}")
        };
        assert_eq!(values.len(), 56, "every bin released, empty ones included");
        let exact_hits = values
            .iter()
            .zip(&outcome.exact)
            .filter(|(v, e)| v.value == **e)
            .count();
        assert!(exact_hits < 56, "no noise was added");
        // Each bin is covered with probability ≥ 0.95; fewer than 40 of 56 has probability < 1e-8.
        let covered = values
            .iter()
            .zip(&outcome.exact)
            .filter(|(v, e)| (v.value - **e).unsigned_abs() <= u128::from(v.half_width))
            .count();
        assert!(covered >= 40, "{covered} of 56 covered\n{text}");
    }
}
