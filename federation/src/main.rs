//! The `medtech` command.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use medtech_federation::{bench, demo};

#[derive(Parser)]
#[command(
    name = "medtech",
    version,
    about = "MedTech Chain: federated, privacy-preserving analytics over medical-device data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The committee shape, shared by the commands that simulate one.
#[derive(clap::Args, Clone, Copy)]
struct CommitteeArgs {
    /// Committee size n (hospitals).
    #[arg(long, default_value_t = 5)]
    parties: u16,
    /// Threshold t: any t members decrypt.
    #[arg(long, default_value_t = 3)]
    threshold: u16,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local committee demo on embedded defaults (5 hospitals, t = 3, 2048-bit key).
    Demo {
        /// Modulus size in bits (2048 default; 512 is for quick tries only).
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        #[command(flatten)]
        committee: CommitteeArgs,
        /// Generate the key with a trusted dealer instead of the dealer-free protocol.
        #[arg(long)]
        dealer: bool,
        /// End after the queries instead of serving the API.
        #[arg(long)]
        no_serve: bool,
        /// First loopback port of the API (one per member).
        #[arg(long, default_value_t = 8080)]
        api_port: u16,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Ledger tools for auditors.
    Ledger {
        #[command(subcommand)]
        what: LedgerCommand,
    },
    /// Run one hospital's committee member (ledger node, query loop, HTTP API) until stopped.
    Node {
        /// The member's node.toml.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Committee set-up.
    Committee {
        #[command(subcommand)]
        what: CommitteeCommand,
    },
    /// Write synthetic devices like the original's generator (CSV, NDJSON or JSON by extension).
    Generate {
        /// Hospital name in the records.
        #[arg(long)]
        hospital: String,
        /// How many devices.
        #[arg(long, default_value_t = 1000)]
        devices: u64,
        /// Seed (the same seed gives the same devices).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (.csv, .ndjson or .json); standard output (CSV) if absent.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// A minimal HTTP client for the node's API (for hosts and containers without curl): prints
    /// the response body; exit 1 on a status of 400 or more.
    Http {
        /// Method (GET, POST, PUT, PATCH).
        method: String,
        /// An `http://host:port/path` URL.
        url: String,
        /// Bearer token, or a file holding it (`@path`).
        #[arg(long)]
        token: Option<String>,
        /// Body text, or `@path` for a file's contents.
        #[arg(long)]
        data: Option<String>,
        /// Content-Type of the body.
        #[arg(long, default_value = "application/json")]
        content_type: String,
    },
    /// Exit 0 if `URL` answers 200 within 3 s (a container healthcheck: `.../ready`).
    Probe {
        /// An `http://host:port/path` URL.
        url: String,
    },
    /// Write the API's OpenAPI document and its Markdown rendering (openapi.json, api.md).
    ApiDocs {
        /// Directory to write into.
        #[arg(long, default_value = "docs")]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum CommitteeCommand {
    /// Make a committee: CA, certificates, signing keys, committee.toml, one node.toml per
    /// hospital, and the key from a dealer-free ceremony rehearsed on this machine.
    Init {
        /// Output directory.
        #[arg(long)]
        dir: std::path::PathBuf,
        #[command(flatten)]
        committee: CommitteeArgs,
        /// Modulus size of the key.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Container layout (members reach each other as hospital-x:7000; API on :8080).
        #[arg(long)]
        containers: bool,
        /// First committee port (loopback layout).
        #[arg(long, default_value_t = 7101)]
        committee_port: u16,
        /// First API port (loopback layout).
        #[arg(long, default_value_t = 8081)]
        api_port: u16,
        /// Ledger origin.
        #[arg(long, default_value = "medtech.local/committee")]
        origin: String,
        /// Close tolerance f: members that may be down when a query closes (0 ≤ f ≤ n − t;
        /// default 1, clamped to n − t). Each more widens every interval (docs/privacy.md).
        #[arg(long)]
        close_tolerance: Option<u16>,
        /// Do nothing (exit 0) if DIR already holds a committee (for a setup step run on every start).
        #[arg(long)]
        if_absent: bool,
    },
    /// Write a committee change file: the committee on the ledger (read from a member's API)
    /// with edits applied, for the next epoch (docs/operations.md, "Rotating TLS certificates").
    Propose {
        /// A member's API, `http://host:port`.
        #[arg(long)]
        url: String,
        /// An admin's bearer token, or `@path` of a file holding it.
        #[arg(long)]
        token: String,
        /// An edit (repeatable): `rotate=NAME:CERT_SHA256`, `address=NAME:HOST:PORT`,
        /// `remove=NAME`, `add=NAME:SIGNING_KEY:RAFT_ID:HOST:PORT:CERT_SHA256`, `threshold=T`.
        #[arg(long = "edit", required = true)]
        edits: Vec<String>,
        /// The change file to write (refuses to replace one).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print what a change file does (against the ledger's committee if `--url` is given).
    Show {
        /// The change file.
        file: std::path::PathBuf,
        /// A member's API, to compare with the committee on the ledger.
        #[arg(long, requires = "token")]
        url: Option<String>,
        /// A staff bearer token, or `@path`.
        #[arg(long)]
        token: Option<String>,
    },
    /// Add this member's approval to a change file (signed with its ledger signing key, which
    /// never leaves this machine); prints what is approved.
    Approve {
        /// The change file (rewritten with the approval).
        file: std::path::PathBuf,
        /// This member's name (e.g. hospital-a).
        #[arg(long)]
        member: String,
        /// This member's signing key file (64 hex digits; `keys/node.key` of its node files).
        #[arg(long)]
        signing_key: std::path::PathBuf,
    },
    /// List the changes to privacy limits waiting for t members (a researcher registered, a
    /// limit raised, a researcher re-enabled): who approved each and what it still needs.
    Pending {
        /// A member's API, `http://host:port`.
        #[arg(long)]
        url: String,
        /// A staff bearer token, or `@path`.
        #[arg(long)]
        token: String,
    },
    /// Approve a pending change (by the id `pending` prints) as the member serving `--url`; the
    /// t-th approval applies it.
    ApproveChange {
        /// The change id (64 hex digits).
        id: String,
        /// This member's API, `http://host:port`.
        #[arg(long)]
        url: String,
        /// An admin's bearer token, or `@path`.
        #[arg(long)]
        token: String,
    },
    /// Submit an approved change file to a member, which proposes it to the ledger.
    Submit {
        /// The change file.
        file: std::path::PathBuf,
        /// A member's API, `http://host:port`.
        #[arg(long)]
        url: String,
        /// An admin's bearer token, or `@path`.
        #[arg(long)]
        token: String,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Verify an exported ledger file offline (exit status 1 if any step fails).
    Verify {
        /// The export file (JSON).
        file: std::path::PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Threshold Paillier: ms per operation next to a raw GMP modexp.
    Crypto {
        /// Modulus size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        #[command(flatten)]
        committee: CommitteeArgs,
        /// Minimum seconds spent measuring each operation.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The replicated ledger: committed entries/s, commit latency, memory and disk.
    Ledger {
        /// Committee size.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Entries to commit.
        #[arg(long, default_value_t = 20_000)]
        entries: u64,
        /// Concurrent clients (each a researcher submitting in sequence).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Payload bytes per entry (the signed entry is a little larger).
        #[arg(long, default_value_t = 1024)]
        entry_bytes: usize,
        /// Directory for the nodes' data (a temporary directory is made inside and removed).
        #[arg(long, default_value = "target/bench-ledger")]
        dir: std::path::PathBuf,
        /// Storage backend: redb or sled.
        #[arg(long, default_value = "redb")]
        backend: medtech_ledger::backend::Backend,
        /// Keep all of the ledger state's per-query records in memory, instead of spilling
        /// them to a scratch file beyond a bound (the default, as in a node).
        #[arg(long)]
        state_in_memory: bool,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The federation end to end: ingest, query latency per kind, throughput, memory per node
    /// (separate node processes on loopback).
    Query {
        /// Hospitals n.
        #[arg(long, default_value_t = 5)]
        hospitals: u16,
        /// Threshold t.
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Devices per hospital.
        #[arg(long, default_value_t = 100_000)]
        devices: u64,
        /// Modulus size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Sequential queries per kind (latency phase).
        #[arg(long, default_value_t = 10)]
        queries: usize,
        /// Concurrent researchers (throughput phase).
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seconds of the throughput phase, and of the sustained-load phase.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Offered Counts per second in the sustained-load phase (open loop; 0 skips it).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Directory for the committee (a temporary directory is made inside and removed).
        #[arg(long, default_value = "target/bench-query")]
        dir: std::path::PathBuf,
        /// First loopback port (API ports are 100 above).
        #[arg(long, default_value_t = 17100)]
        base_port: u16,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exact DP noise shares per second for each mechanism.
    Noise {
        #[command(flatten)]
        committee: CommitteeArgs,
        /// Seconds spent per mechanism and parameter.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medtech: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One request to an `http://` URL.
fn http(
    url: &str,
    method: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    content_type: &str,
    within: Duration,
) -> anyhow::Result<medtech_federation::api::client::Reply> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = tokio::net::lookup_host(host)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} resolves to nothing"))?;
        let ct = body.map(|_| content_type);
        let r = tokio::time::timeout(
            within,
            medtech_federation::api::client::request(
                addr,
                method,
                &path,
                token,
                ct,
                body.unwrap_or(b""),
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {within:?}"))??;
        Ok(r)
    })
}

/// A token argument: the token, or `@path` of a file holding it.
fn token_arg(token: &str) -> anyhow::Result<String> {
    match token.strip_prefix('@') {
        Some(path) => Ok(read_text(std::path::Path::new(path))?.trim().to_owned()),
        None => Ok(token.trim().to_owned()),
    }
}

fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Writes a new file, refusing to replace an existing one.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// The ledger's origin and applied committee, from a member's API.
fn ledger_committee(
    url: &str,
    token: &str,
) -> anyhow::Result<(String, medtech_ledger::state::CommitteeConfig)> {
    let token = token_arg(token)?;
    let r = http(
        &format!("{}/api/v1/committee/config", url.trim_end_matches('/')),
        "GET",
        Some(&token),
        None,
        "",
        Duration::from_secs(10),
    )?;
    anyhow::ensure!(
        r.status == 200,
        "the member answered {}: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    let origin = v["origin"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the member's answer has no origin"))?
        .to_owned();
    let c =
        medtech_federation::change::decode_committee(v["committee"].as_str().unwrap_or_default())
            .context("the member's committee")?;
    Ok((origin, c))
}

/// Prints a benchmark report as one JSON object or as its table.
fn print_report(json: bool, report: &impl serde::Serialize, text: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

fn check_seconds(seconds: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        seconds.is_finite() && (0.0..=600.0).contains(&seconds),
        "--seconds must be between 0 and 600"
    );
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Node { config } => {
            medtech_federation::service::init_logging();
            medtech_federation::service::run(&config)?;
        }
        Command::Committee {
            what:
                CommitteeCommand::Init {
                    dir,
                    committee: CommitteeArgs { parties, threshold },
                    bits,
                    containers,
                    committee_port,
                    api_port,
                    origin,
                    close_tolerance,
                    if_absent,
                },
        } => {
            if if_absent && dir.join("committee.toml").exists() {
                println!("{} already holds a committee; nothing to do", dir.display());
                return Ok(());
            }
            let opts = medtech_federation::config::InitOptions {
                dir,
                parties,
                threshold,
                close_tolerance,
                bits,
                containers,
                committee_port,
                api_port,
                origin,
            };
            let report = medtech_federation::config::init(&opts, &mut |p| eprintln!("  {p}"))?;
            print!("{}", report.ceremony_summary);
            println!("committee: {}", report.committee_file.display());
            for f in &report.node_files {
                println!("start with: medtech node --config {}", f.display());
            }
        }
        Command::Committee {
            what:
                CommitteeCommand::Propose {
                    url,
                    token,
                    edits,
                    out,
                },
        } => {
            use medtech_federation::change;
            let edits = edits
                .iter()
                .map(|e| change::Edit::parse(e))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (origin, current) = ledger_committee(&url, &token)?;
            let file = change::propose(&origin, &current, &edits)?;
            for line in change::describe(&file, Some(&current))? {
                println!("{line}");
            }
            write_new(&out, &serde_json::to_vec_pretty(&file)?)?;
            println!(
                "wrote {}: needs {} approvals",
                out.display(),
                current.threshold
            );
        }
        Command::Committee {
            what: CommitteeCommand::Show { file, url, token },
        } => {
            use medtech_federation::change;
            let f = change::ChangeFile::parse(&read_text(&file)?)
                .with_context(|| file.display().to_string())?;
            let current = match (url, token) {
                (Some(url), Some(token)) => Some(ledger_committee(&url, &token)?.1),
                _ => None,
            };
            for line in change::describe(&f, current.as_ref())? {
                println!("{line}");
            }
        }
        Command::Committee {
            what:
                CommitteeCommand::Approve {
                    file,
                    member,
                    signing_key,
                },
        } => {
            use medtech_federation::change;
            let mut f = change::ChangeFile::parse(&read_text(&file)?)
                .with_context(|| file.display().to_string())?;
            let key = medtech_federation::config::read_signing_key(&member, &signing_key)?;
            for line in change::describe(&f, None)? {
                println!("{line}");
            }
            change::approve(&mut f, &key)?;
            std::fs::write(&file, serde_json::to_vec_pretty(&f)?)
                .with_context(|| file.display().to_string())?;
            println!(
                "approved as {member} (public key {}); {} approvals in {}",
                hex::encode(key.identity().key.as_bytes()),
                f.approvals.len(),
                file.display()
            );
        }
        Command::Committee {
            what: CommitteeCommand::Pending { url, token },
        } => {
            let token = token_arg(&token)?;
            let r = http(
                &format!("{}/api/v1/changes/pending", url.trim_end_matches('/')),
                "GET",
                Some(&token),
                None,
                "",
                Duration::from_secs(10),
            )?;
            let body = String::from_utf8_lossy(&r.body);
            anyhow::ensure!(r.status == 200, "the member answered {}: {body}", r.status);
            let v: serde_json::Value = serde_json::from_slice(&r.body)?;
            let list = v["pending"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no pending changes");
            }
            for p in list {
                println!(
                    "{} {} {}: approved by {}; needs {} more (of {})",
                    p["id"].as_str().unwrap_or_default(),
                    p["kind"].as_str().unwrap_or_default(),
                    p["change"],
                    p["approved_by"],
                    p["missing"],
                    p["threshold"]
                );
            }
        }
        Command::Committee {
            what: CommitteeCommand::ApproveChange { id, url, token },
        } => {
            let token = token_arg(&token)?;
            let r = http(
                &format!(
                    "{}/api/v1/changes/{}/approve",
                    url.trim_end_matches('/'),
                    id.trim()
                ),
                "POST",
                Some(&token),
                Some(b""),
                "application/json",
                Duration::from_secs(60),
            )?;
            let body = String::from_utf8_lossy(&r.body);
            anyhow::ensure!(r.status == 200, "the member answered {}: {body}", r.status);
            println!("{body}");
        }
        Command::Committee {
            what: CommitteeCommand::Submit { file, url, token },
        } => {
            let text = read_text(&file)?;
            medtech_federation::change::ChangeFile::parse(&text)
                .with_context(|| file.display().to_string())?;
            let token = token_arg(&token)?;
            let r = http(
                &format!("{}/api/v1/committee/changes", url.trim_end_matches('/')),
                "POST",
                Some(&token),
                Some(text.as_bytes()),
                "application/json",
                Duration::from_secs(60),
            )?;
            let body = String::from_utf8_lossy(&r.body);
            anyhow::ensure!(r.status == 200, "the member answered {}: {body}", r.status);
            println!("{body}");
        }
        Command::Generate {
            hospital,
            devices,
            seed,
            out,
        } => {
            anyhow::ensure!(devices <= 100_000_000, "--devices is at most 100000000");
            medtech_federation::data::generate::write_file(
                &hospital,
                devices,
                seed,
                out.as_deref(),
            )?;
        }
        Command::Probe { url } => {
            let r = http(&url, "GET", None, None, "", Duration::from_secs(3))?;
            anyhow::ensure!(r.status == 200, "{url} answered {}", r.status);
        }
        Command::Http {
            method,
            url,
            token,
            data,
            content_type,
        } => {
            let at = |v: String| -> anyhow::Result<Vec<u8>> {
                match v.strip_prefix('@') {
                    Some(p) => {
                        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {p}: {e}"))
                    }
                    None => Ok(v.into_bytes()),
                }
            };
            let token = token.as_deref().map(token_arg).transpose()?;
            let body = data.map(at).transpose()?;
            let r = http(
                &url,
                &method.to_uppercase(),
                token.as_deref(),
                body.as_deref(),
                &content_type,
                Duration::from_secs(600),
            )?;
            use std::io::Write;
            std::io::stdout().write_all(&r.body)?;
            println!();
            anyhow::ensure!(r.status < 400, "{method} {url} answered {}", r.status);
        }
        Command::ApiDocs { out } => {
            use medtech_federation::api::openapi;
            for (name, text) in [
                ("openapi.json", openapi::json_text()),
                ("api.md", openapi::markdown()),
            ] {
                let path = out.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        Command::Ledger {
            what: LedgerCommand::Verify { file, json },
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let report = medtech_ledger::export::verify_json(&text).map_err(anyhow::Error::msg)?;
            print_report(json, &report, report.to_text())?;
            anyhow::ensure!(report.passed(), "the ledger export does not verify");
        }
        Command::Bench {
            what:
                BenchCommand::Ledger {
                    nodes,
                    entries,
                    clients,
                    entry_bytes,
                    dir,
                    backend,
                    state_in_memory,
                    json,
                },
        } => {
            anyhow::ensure!(
                (16..=1 << 20).contains(&entry_bytes),
                "--entry-bytes must be between 16 and 1048576"
            );
            let report = medtech_federation::bench_ledger::run(
                &medtech_federation::bench_ledger::LedgerBenchConfig {
                    nodes,
                    entries,
                    clients,
                    entry_bytes,
                    dir,
                    backend,
                    state_spill: !state_in_memory,
                },
            )?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Demo {
            bits,
            committee: CommitteeArgs { parties, threshold },
            dealer,
            no_serve,
            api_port,
        } => {
            let cfg = demo::DemoConfig {
                bits,
                parties,
                threshold,
                dealer,
                serve_from_port: (!no_serve).then_some(api_port),
            };
            demo::run(&cfg, &mut std::io::stdout())?;
        }
        Command::Bench {
            what:
                BenchCommand::Crypto {
                    bits,
                    committee: CommitteeArgs { parties, threshold },
                    seconds,
                    json,
                },
        } => {
            check_seconds(seconds)?;
            let cfg = bench::CryptoBenchConfig {
                bits,
                parties,
                threshold,
                min_time: Duration::from_secs_f64(seconds),
                min_iters: 5,
            };
            let report = bench::run_crypto(&cfg)?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Bench {
            what:
                BenchCommand::Query {
                    hospitals,
                    threshold,
                    devices,
                    bits,
                    queries,
                    clients,
                    seconds,
                    rate,
                    dir,
                    base_port,
                    json,
                },
        } => {
            check_seconds(seconds)?;
            anyhow::ensure!(
                rate.is_finite() && (0.0..=1000.0).contains(&rate),
                "--rate must be between 0 and 1000 queries per second"
            );
            let report = medtech_federation::bench_query::run(
                &medtech_federation::bench_query::QueryBenchConfig {
                    hospitals,
                    threshold,
                    devices,
                    bits,
                    queries,
                    clients,
                    seconds,
                    rate,
                    dir,
                    base_port,
                },
            )?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Bench {
            what:
                BenchCommand::Noise {
                    committee: CommitteeArgs { parties, threshold },
                    seconds,
                    json,
                },
        } => {
            check_seconds(seconds)?;
            let report = bench::run_noise(parties, threshold, seconds)?;
            print_report(json, &report, report.to_text())?;
        }
    }
    Ok(())
}
