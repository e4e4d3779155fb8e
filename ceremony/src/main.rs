//! The `medtech-ceremony` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medtech_ceremony::bench::{self, BenchConfig};
use medtech_ceremony::files::{challenge, load_challenge, load_key, load_partials, PartialFile};
use medtech_ceremony::net;
use medtech_ceremony::rehearsal::{self, RunConfig};
use medtech_ceremony::reshare;
use medtech_ceremony::sharefile::{open, parse_key_file, Unlock};
use medtech_ceremony::transcript::{self, Identity};
use rand_core::OsRng;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "medtech-ceremony",
    version,
    about = "The dealer-free key ceremony of a MedTech Chain committee"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole ceremony on this machine (rehearsal): key, signed transcript, sealed shares.
    Run {
        /// Number of parties n.
        #[arg(long, default_value_t = 5)]
        parties: u16,
        /// Threshold t (2t − 1 ≤ n).
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Modulus size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seal the share files with the passphrase in this environment variable (Argon2id)
        /// instead of one key file per party.
        #[arg(long)]
        passphrase_env: Option<String>,
        /// Keep every party in this process instead of one `join` process per party over TLS.
        #[arg(long)]
        in_process: bool,
    },
    /// Make one party's ceremony keys (TLS certificate and identity key) and print its entry for
    /// the ceremony configuration.
    Keygen {
        /// This party's index (1-based).
        #[arg(long)]
        index: u16,
        /// Its DNS name (in its TLS certificate; what the others connect to).
        #[arg(long)]
        name: String,
        /// The `host:port` it will listen on.
        #[arg(long)]
        address: String,
        /// Directory for its secrets (tls-key.pem and identity.key, mode 0600) and member.json.
        #[arg(long)]
        out: PathBuf,
    },
    /// Assemble the ceremony configuration from every party's member.json.
    Config {
        /// Modulus size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Threshold t.
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Candidates per batch (default: chosen from the modulus size).
        #[arg(long)]
        batch: Option<usize>,
        /// Where to write the configuration.
        #[arg(long)]
        out: PathBuf,
        /// Every party's member.json, in index order.
        members: Vec<PathBuf>,
    },
    /// Take part in a ceremony as one party, over mutually authenticated TLS.
    Join {
        /// The ceremony configuration (identical at every party).
        #[arg(long)]
        config: PathBuf,
        /// This party's index.
        #[arg(long)]
        index: u16,
        /// The directory `keygen` wrote.
        #[arg(long)]
        keys: PathBuf,
        /// Where to write the transcript, the key and this party's sealed share.
        #[arg(long)]
        out: PathBuf,
        /// Seal the share with the passphrase in this environment variable instead of a key file.
        #[arg(long)]
        passphrase_env: Option<String>,
        /// Seconds one round may take before the missing parties are named.
        #[arg(long, default_value_t = 600)]
        round_timeout: u64,
    },
    /// Write the configuration of a re-sharing: the current key to fresh shares or to a new
    /// committee (a hospital joins or leaves), same public key.
    ReshareConfig {
        /// The current threshold-key.json.
        #[arg(long)]
        key: PathBuf,
        /// The t current members who deal (their current indices, comma-separated).
        #[arg(long, value_delimiter = ',')]
        dealers: Vec<u16>,
        /// Threshold t' of the new committee.
        #[arg(long)]
        threshold: u16,
        /// Where to write the configuration.
        #[arg(long)]
        out: PathBuf,
        /// One per participant, in order: `MEMBER_JSON:OLD:NEW`, where MEMBER_JSON is what
        /// `keygen` wrote, OLD its current index and NEW its index in the new committee (`-`
        /// for none), e.g. `keys-1/member.json:1:1`, `new/member.json:-:6`, `keys-4/member.json:4:-`.
        #[arg(long = "participant", required = true)]
        participants: Vec<String>,
    },
    /// Take part in a re-sharing as one participant, over mutually authenticated TLS.
    Reshare {
        /// The re-sharing configuration (identical at every participant).
        #[arg(long)]
        config: PathBuf,
        /// This participant's index in it.
        #[arg(long)]
        index: u16,
        /// The directory `keygen` wrote for this participant.
        #[arg(long)]
        keys: PathBuf,
        /// A dealer's current sealed share file.
        #[arg(long)]
        share: Option<PathBuf>,
        /// That share's key file (or use --passphrase-env).
        #[arg(long)]
        share_key: Option<PathBuf>,
        /// Environment variable holding that share's passphrase.
        #[arg(long)]
        passphrase_env: Option<String>,
        /// Seal the new share with the passphrase in this environment variable instead of a new
        /// key file.
        #[arg(long)]
        new_passphrase_env: Option<String>,
        /// Where to write the transcript, the new key and (a new member's) sealed new share.
        #[arg(long)]
        out: PathBuf,
        /// Seconds a phase may take before the missing participants are named.
        #[arg(long, default_value_t = 600)]
        round_timeout: u64,
    },
    /// After a successful re-sharing: destroy an old share file (and its key file) that it
    /// replaced. Refused unless the re-sharing transcript verifies with the new key and the
    /// share belongs to the key it re-shared.
    DestroyShare {
        /// The old sealed share file.
        #[arg(long)]
        share: PathBuf,
        /// Its key file, if it has one.
        #[arg(long)]
        share_key: Option<PathBuf>,
        /// The re-sharing's `reshare-transcript.json`.
        #[arg(long)]
        transcript: PathBuf,
        /// The new `threshold-key.json` the re-sharing produced.
        #[arg(long)]
        key: PathBuf,
        /// This operator's re-sharing configuration (the transcript must be of it).
        #[arg(long)]
        config: PathBuf,
    },
    /// After a ceremony or re-sharing that ended without every signature: check the finished
    /// transcript (from any member) against this member's configuration and pending key, then
    /// install the share kept in `OUT/pending`.
    Finish {
        /// This member's ceremony or re-sharing configuration.
        #[arg(long)]
        config: PathBuf,
        /// The `--out` of the run that did not finish (holding `pending/`).
        #[arg(long)]
        out: PathBuf,
        /// The finished transcript.
        #[arg(long)]
        transcript: PathBuf,
    },
    /// Verify a transcript offline (a ceremony's or a re-sharing's), or the `evidence.json` of
    /// an equivocation; exit status 1 unless every check passes.
    Verify {
        /// The transcript (JSON).
        transcript: PathBuf,
        /// Pinned identity keys (JSON list from the ceremony configuration).
        #[arg(long)]
        identities: Option<PathBuf>,
        /// The published threshold key the transcript must produce.
        #[arg(long)]
        key: Option<PathBuf>,
        /// A re-sharing transcript: the key it re-shares, as you know it (required).
        #[arg(long)]
        old_key: Option<PathBuf>,
        /// A re-sharing transcript: the transcript that produced the old key, to chain to.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Test decryption, step 1 (reviewer): encrypt a random value under the key; prints it.
    Challenge {
        /// The threshold key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the challenge.
        #[arg(long)]
        out: PathBuf,
    },
    /// Test decryption, step 2 (each of t members): partially decrypt the challenge.
    Partial {
        /// The threshold key file.
        #[arg(long)]
        key: PathBuf,
        /// The challenge file.
        #[arg(long)]
        challenge: PathBuf,
        /// This member's sealed share file.
        #[arg(long)]
        share: PathBuf,
        /// The share's key file (or use --passphrase-env).
        #[arg(long)]
        share_key: Option<PathBuf>,
        /// Environment variable holding the share's passphrase.
        #[arg(long)]
        passphrase_env: Option<String>,
        /// Where to write the partial decryption.
        #[arg(long)]
        out: PathBuf,
    },
    /// Test decryption, step 3 (anyone): verify the partials and combine; prints the plaintext.
    Combine {
        /// The threshold key file.
        #[arg(long)]
        key: PathBuf,
        /// The challenge file.
        #[arg(long)]
        challenge: PathBuf,
        /// Partial-decryption files.
        partials: Vec<PathBuf>,
    },
    /// Benchmark the key generation: every party in this process, real message encoding.
    Bench {
        /// Number of parties n.
        #[arg(long, default_value_t = 5)]
        parties: u16,
        /// Threshold t (2t − 1 ≤ n).
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Modulus size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Repetitions; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn passphrase(var: &str) -> anyhow::Result<Zeroizing<String>> {
    let pw = Zeroizing::new(
        std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?,
    );
    anyhow::ensure!(
        pw.len() >= 12,
        "the passphrase in {var} is shorter than 12 characters"
    );
    Ok(pw)
}

/// Reads and parses a JSON file, naming it in errors.
fn load_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let b = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Opens a sealed share with exactly one of a key file and a passphrase variable.
fn open_share(
    path: &std::path::Path,
    key: &medtech_threshold::ThresholdPublicKey,
    share_key: Option<PathBuf>,
    passphrase_env: Option<String>,
) -> anyhow::Result<medtech_threshold::KeyShare> {
    let sealed = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(match (share_key, passphrase_env) {
        (Some(k), None) => {
            let b = Zeroizing::new(
                std::fs::read(&k).map_err(|e| anyhow::anyhow!("{}: {e}", k.display()))?,
            );
            let k = parse_key_file(&b)?;
            open(&sealed, key, &Unlock::Key(&k))?
        }
        (None, Some(var)) => {
            let pw = passphrase(&var)?;
            open(&sealed, key, &Unlock::Passphrase(pw.as_bytes()))?
        }
        _ => anyhow::bail!("give exactly one of --share-key and --passphrase-env"),
    })
}

/// `MEMBER_JSON:OLD:NEW` of `reshare-config`.
fn participant(spec: &str, position: usize) -> anyhow::Result<reshare::Participant> {
    let mut parts = spec.rsplitn(3, ':');
    let (new, old, path) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(o), Some(p)) if !p.is_empty() => (n, o, p),
        _ => anyhow::bail!("participant {spec:?}: expected MEMBER_JSON:OLD:NEW"),
    };
    let index = |s: &str, what: &str| -> anyhow::Result<Option<u16>> {
        if s == "-" {
            return Ok(None);
        }
        s.parse::<u16>()
            .ok()
            .filter(|&i| i > 0)
            .map(Some)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "participant {spec:?}: {what} index {s:?} is not a positive number or -"
                )
            })
    };
    let mut member: net::MemberConfig = load_json(std::path::Path::new(path))?;
    member.index = u16::try_from(position + 1)?;
    Ok(reshare::Participant {
        member,
        old_index: index(old, "old")?,
        new_index: index(new, "new")?,
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            parties,
            threshold,
            bits,
            out,
            passphrase_env,
            in_process,
        } => {
            let passphrase = passphrase_env.as_deref().map(passphrase).transpose()?;
            let cfg = RunConfig {
                bits,
                parties,
                threshold,
                out,
                passphrase,
            };
            let report = if in_process {
                rehearsal::run(&cfg, &mut |line| eprintln!("{line}"))?
            } else {
                let exe = std::env::current_exe()?;
                rehearsal::run_processes(&cfg, &exe, passphrase_env.as_deref(), &mut |line| {
                    eprintln!("{line}")
                })?
            };
            print!("{}", report.summary);
        }
        Command::Keygen {
            index,
            name,
            address,
            out,
        } => {
            let member = net::keygen(&out, index, &name, &address)?;
            let json = serde_json::to_string_pretty(&member)?;
            std::fs::write(out.join("member.json"), &json)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            println!("{json}");
        }
        Command::Config {
            bits,
            threshold,
            batch,
            out,
            members,
        } => {
            let members = members
                .iter()
                .map(|p| load_json::<net::MemberConfig>(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut nonce = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut OsRng, &mut nonce);
            let config = net::CeremonyConfig {
                format: "medtech-ceremony-config/1".into(),
                bits,
                threshold,
                session_nonce: hex::encode(nonce),
                batch,
                members,
            };
            let params = config.parameters()?;
            std::fs::write(&out, serde_json::to_vec_pretty(&config)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            println!(
                "ceremony configuration written to {}: {}-bit, n = {}, t = {}, session {}",
                out.display(),
                params.bits(),
                params.parties(),
                params.threshold(),
                hex::encode(params.session())
            );
        }
        Command::Join {
            config,
            index,
            keys,
            out,
            passphrase_env,
            round_timeout,
        } => {
            let config: net::CeremonyConfig = load_json(&config)?;
            let secrets = net::load_secrets(&keys)?;
            let passphrase = passphrase_env.as_deref().map(passphrase).transpose()?;
            eprintln!(
                "party {index}: joining the ceremony (session {})",
                hex::encode(&config.session()[..8])
            );
            let fp = net::join(
                &config,
                &secrets,
                &net::JoinOptions {
                    index,
                    out: out.clone(),
                    passphrase,
                    round_timeout: std::time::Duration::from_secs(round_timeout),
                    verbose: true,
                },
            )?;
            println!(
                "party {index}: key {fp}; transcript, key and sealed share written to {}",
                out.display()
            );
        }
        Command::Finish {
            config,
            out,
            transcript,
        } => {
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
            let fp =
                medtech_ceremony::sharefile::finish(&out, &read(&config)?, &read(&transcript)?)?;
            println!(
                "key {fp}: transcript verified; the pending share is installed in {}",
                out.display()
            );
        }
        Command::DestroyShare {
            share,
            share_key,
            transcript,
            key,
            config,
        } => {
            let config =
                std::fs::read(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            let t = std::fs::read(&transcript)
                .map_err(|e| anyhow::anyhow!("{}: {e}", transcript.display()))?;
            let key = load_key(&key)?;
            medtech_ceremony::sharefile::destroy_replaced_share(
                &share,
                share_key.as_deref(),
                &t,
                &key,
                &config,
            )?;
            println!(
                "{} overwritten and removed{}. Copies elsewhere (backups, snapshots, other disks) \
                 and blocks the file system or an SSD kept are not reached: see docs/ceremony.md.",
                share.display(),
                share_key
                    .map(|k| format!(", and {}", k.display()))
                    .unwrap_or_default()
            );
        }
        Command::Verify {
            transcript: path,
            identities,
            key,
            old_key,
            previous,
            json,
        } => {
            let bytes =
                std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let pinned: Option<Vec<Identity>> = identities.map(|p| load_json(&p)).transpose()?;
            let key = key.map(|k| load_key(&k)).transpose()?;
            let format = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("format").and_then(|f| f.as_str()).map(String::from));
            if format.as_deref() == Some(medtech_ceremony::echo::EVIDENCE_FORMAT) {
                anyhow::ensure!(
                    key.is_none(),
                    "--key applies to a transcript, not to evidence"
                );
                let (verdict, culprit) =
                    medtech_ceremony::echo::verify_evidence(&bytes, pinned.as_deref());
                if json {
                    println!("{}", serde_json::to_string_pretty(&verdict)?);
                } else {
                    for c in &verdict.checks {
                        println!(
                            "[{}] {:<14} {}",
                            if c.ok { " ok " } else { "FAIL" },
                            c.name,
                            c.detail
                        );
                    }
                    match culprit {
                        Some(p) if verdict.ok() => println!("PROVEN: member {p} equivocated"),
                        _ => println!("NOT PROVEN"),
                    }
                }
                return Ok(if verdict.ok() && culprit.is_some() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            if let Some(f) = format.as_deref().filter(|f| {
                f.starts_with(reshare::TRANSCRIPT_FORMAT_PREFIX) && *f != reshare::TRANSCRIPT_FORMAT
            }) {
                anyhow::bail!(
                    "re-sharing transcript format {f:?} is not {:?}: made by another version of \
                     this tool",
                    reshare::TRANSCRIPT_FORMAT
                );
            }
            let verdict = if format.as_deref() == Some(reshare::TRANSCRIPT_FORMAT) {
                let (Some(old_key), Some(identities)) = (old_key, pinned.as_deref()) else {
                    anyhow::bail!(
                        "a re-sharing transcript verifies only against what you know from \
                         outside it: pass --old-key (the key it re-shares) and --identities \
                         (every participant's identity key, by participant index); optionally \
                         --previous (the transcript that made the old key). See docs/ceremony.md."
                    );
                };
                let old_key = load_key(&old_key)?;
                let previous = previous
                    .map(|p| std::fs::read(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())))
                    .transpose()?;
                reshare::verify_reshare_pinned(
                    &bytes,
                    key.as_ref(),
                    &reshare::ResharePins {
                        old_key: &old_key,
                        identities,
                        previous: previous.as_deref(),
                    },
                )
            } else {
                anyhow::ensure!(
                    old_key.is_none() && previous.is_none(),
                    "--old-key and --previous apply to a re-sharing transcript"
                );
                transcript::verify(&bytes, pinned.as_deref(), key.as_ref())
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&verdict)?);
            } else {
                for c in &verdict.checks {
                    println!(
                        "[{}] {:<14} {}",
                        if c.ok { " ok " } else { "FAIL" },
                        c.name,
                        c.detail
                    );
                }
                match &verdict.key_fingerprint {
                    Some(fp) if verdict.ok() => println!("VERIFIED: key {fp}"),
                    _ => println!("NOT VERIFIED"),
                }
            }
            if !verdict.ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::ReshareConfig {
            key,
            dealers,
            threshold,
            out,
            participants,
        } => {
            let old = load_key(&key)?;
            let participants = participants
                .iter()
                .enumerate()
                .map(|(k, p)| participant(p, k))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut nonce = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut OsRng, &mut nonce);
            let config = reshare::ReshareConfig {
                format: reshare::CONFIG_FORMAT.into(),
                key: medtech_ceremony::files::KeyFile::of(&old),
                dealers,
                new_threshold: threshold,
                session_nonce: hex::encode(nonce),
                participants,
            };
            let params = config.parameters()?;
            std::fs::write(&out, serde_json::to_vec_pretty(&config)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            println!(
                "re-sharing configuration written to {}: key {} (n = {}, t = {}) dealt by {:?} to n' = {}, t' = {}, session {}",
                out.display(),
                hex::encode(old.fingerprint()),
                old.parties(),
                old.threshold(),
                params.dealers(),
                params.new_parties(),
                params.new_threshold(),
                hex::encode(params.session())
            );
        }
        Command::Reshare {
            config,
            index,
            keys,
            share,
            share_key,
            passphrase_env,
            new_passphrase_env,
            out,
            round_timeout,
        } => {
            let config: reshare::ReshareConfig = load_json(&config)?;
            let old = config.old_key()?;
            let share = share
                .map(|p| open_share(&p, &old, share_key, passphrase_env))
                .transpose()?;
            let secrets = net::load_secrets(&keys)?;
            let passphrase = new_passphrase_env.as_deref().map(passphrase).transpose()?;
            eprintln!(
                "participant {index}: joining the re-sharing (session {})",
                hex::encode(&config.session()[..8])
            );
            let fp = reshare::reshare(
                &config,
                &secrets,
                &reshare::ReshareOptions {
                    index,
                    share,
                    out: out.clone(),
                    passphrase,
                    round_timeout: std::time::Duration::from_secs(round_timeout),
                },
            )?;
            println!(
                "participant {index}: new key {fp}; transcript, key and any new share written to {}",
                out.display()
            );
        }
        Command::Challenge { key, out } => {
            let key = load_key(&key)?;
            let (c, value) = challenge(&key)?;
            std::fs::write(&out, serde_json::to_vec_pretty(&c)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            println!(
                "challenge written to {}; keep this value to compare: {value}",
                out.display()
            );
        }
        Command::Partial {
            key,
            challenge,
            share,
            share_key,
            passphrase_env,
            out,
        } => {
            let key = load_key(&key)?;
            let (context, c) = load_challenge(&challenge, &key)?;
            let share = open_share(&share, &key, share_key, passphrase_env)?;
            let p = share.partial_decrypt(&key, &context, &c, &mut OsRng)?;
            let f = PartialFile {
                format: "medtech-partial/1".into(),
                party: p.party().0,
                partial: hex::encode(p.to_bytes()),
            };
            std::fs::write(&out, serde_json::to_vec_pretty(&f)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            println!(
                "member {} wrote its partial decryption to {}",
                p.party(),
                out.display()
            );
        }
        Command::Combine {
            key,
            challenge,
            partials,
        } => {
            let key = load_key(&key)?;
            let (context, c) = load_challenge(&challenge, &key)?;
            let partials = load_partials(&partials, &key)?;
            let out = key.combine_partials(&context, &c, &partials)?;
            for e in &out.rejected {
                println!("rejected: {e}");
            }
            let members: Vec<String> = out
                .decryption
                .parties
                .iter()
                .map(|p| p.to_string())
                .collect();
            match out.decryption.plaintext.to_i128() {
                Some(v) => println!("plaintext: {v} (members {})", members.join(", ")),
                None => println!("plaintext out of range (members {})", members.join(", ")),
            }
        }
        Command::Bench {
            parties,
            threshold,
            bits,
            runs,
            json,
        } => {
            let report = bench::run(
                BenchConfig {
                    bits,
                    parties,
                    threshold,
                    runs,
                },
                |line| eprintln!("{line}"),
            )?;
            if json {
                println!("{report}");
            } else {
                println!(
                    "{bits}-bit, n = {parties}, t = {threshold}: median {} s over {runs} runs, {} candidates; expected {} s; peak RSS {} MiB (process)",
                    report["seconds"], report["candidates_tried"], report["expected_seconds"], report["peak_rss_mb_process"]
                );
                println!("phases (s): {}", report["phases"]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
