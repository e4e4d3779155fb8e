//! `medtech-ceremony run`: a whole ceremony on one machine, for rehearsals and tests, with the
//! outputs a real ceremony leaves: the key, the signed transcript, the pinned identities, one
//! sealed key-share file per party, and a summary. [`run_processes`] (the default) starts one
//! `join` process per party over loopback TLS; [`run`] keeps every party in this process (one
//! thread each, every message encoded and decoded as on the wire).

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use medtech_threshold::dkg::sim::{run_in_process, Phase};
use medtech_threshold::dkg::Parameters;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};

use crate::error::{write, Error, Result};
use crate::files::KeyFile;
use crate::sharefile::{new_key_file, seal, Unlock};
use crate::transcript::{verify, Transcript};

/// What to run.
pub struct RunConfig {
    /// Modulus size.
    pub bits: u32,
    /// n.
    pub parties: u16,
    /// t.
    pub threshold: u16,
    /// Output directory (created; must not already hold a ceremony).
    pub out: PathBuf,
    /// Seal share files with this passphrase (Argon2id) instead of per-party key files.
    pub passphrase: Option<zeroize::Zeroizing<String>>,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunReport {
    /// Fingerprint of the key, hex.
    pub fingerprint: String,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// The summary text.
    pub summary: String,
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::format("output", e.to_string()))
}

/// Runs the ceremony and writes its outputs into `cfg.out`.
pub fn run(cfg: &RunConfig, progress: &mut dyn FnMut(&str)) -> Result<RunReport> {
    let out = &cfg.out;
    if out.join("transcript.json").exists() {
        return Err(Error::format(
            out.display().to_string(),
            "already holds a ceremony (transcript.json); choose another directory",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut session = [0u8; 32];
    OsRng.fill_bytes(&mut session);
    let params = Parameters::new(cfg.bits, cfg.parties, cfg.threshold, session)?;
    let signers: Vec<SigningKey> = (0..cfg.parties)
        .map(|_| SigningKey::generate(&mut OsRng))
        .collect();
    progress(&format!(
        "key generation: {}-bit modulus, {} parties, threshold {}, session {}",
        cfg.bits,
        cfg.parties,
        cfg.threshold,
        hex::encode(&session[..8])
    ));
    let rngs = (0..cfg.parties)
        .map(|_| ChaCha20Rng::from_rng(OsRng))
        .collect::<core::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::format("random generator", e.to_string()))?;
    let run = run_in_process(&params, rngs, None)?;
    for phase in [
        Phase::Sieve,
        Phase::Modulus,
        Phase::Biprimality,
        Phase::Gcd,
        Phase::Audit,
        Phase::Certify,
        Phase::Key,
    ] {
        let d = run.phase_time.get(&phase).copied().unwrap_or_default();
        progress(&format!(
            "  {:<12} {:>7.2} s",
            phase.name(),
            d.as_secs_f64()
        ));
    }
    let key = run.outputs[0].key.clone();
    let stats = run.outputs[0].stats.clone();
    let transcript = Transcript::build(&params, &run.broadcasts, &key, &signers);
    let mut files = Vec::new();
    let mut put = |name: &Path, bytes: &[u8], secret: bool| -> Result<()> {
        write(name, bytes, secret)?;
        files.push(name.to_path_buf());
        Ok(())
    };
    put(
        &out.join("threshold-key.json"),
        &json(&KeyFile::of(&key))?,
        false,
    )?;
    let transcript_json = json(&transcript)?;
    put(&out.join("transcript.json"), &transcript_json, false)?;
    put(
        &out.join("identities.json"),
        &json(&transcript.identities)?,
        false,
    )?;
    for o in &run.outputs {
        let i = o.share.index().0;
        let dir = out.join(format!("party-{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let sealed = match &cfg.passphrase {
            Some(pw) => seal(&o.share, &key, &Unlock::Passphrase(pw.as_bytes()))?,
            None => {
                let (k, text) = new_key_file();
                put(&dir.join("share.key"), text.as_bytes(), true)?;
                seal(&o.share, &key, &Unlock::Key(&k))?
            }
        };
        put(&dir.join("share.json"), sealed.as_bytes(), true)?;
    }
    // Check what we wrote the way a reviewer will.
    let verdict = verify(&transcript_json, Some(&transcript.identities), Some(&key));
    if !verdict.ok() {
        return Err(Error::format(
            "transcript",
            "the ceremony's own transcript does not verify",
        ));
    }
    let fingerprint = hex::encode(key.fingerprint());
    let summary = format!(
        "MedTech Chain key ceremony (rehearsal: all parties on this machine)\n\
         modulus: {} bits; committee: n = {}, any t = {} decrypt\n\
         key fingerprint: {}\n\
         candidate pairs tried: {} in {} batches; {} rounds; {:.0} MB of messages; {:.1} s\n\
         transcript: transcript.json ({} broadcasts, signed by all {} parties) — verified\n\
         share files: party-<i>/share.json, sealed with {}\n\
         next: `medtech-ceremony verify transcript.json --identities identities.json --key threshold-key.json`,\n\
         then a test decryption (`challenge`, `partial` by t members, `combine`).\n",
        cfg.bits,
        cfg.parties,
        cfg.threshold,
        fingerprint,
        stats.candidates_tried,
        stats.batches,
        run.rounds,
        run.bytes as f64 / 1e6,
        run.elapsed.as_secs_f64(),
        transcript.broadcasts.len(),
        cfg.parties,
        if cfg.passphrase.is_some() {
            "the passphrase (Argon2id)"
        } else {
            "per-party key files party-<i>/share.key (mode 0600)"
        }
    );
    put(&out.join("summary.txt"), summary.as_bytes(), false)?;
    Ok(RunReport {
        fingerprint,
        files,
        summary,
    })
}

/// Runs the ceremony with **one process per party** over loopback TLS: makes each party's keys
/// (`party-<i>/keys`), the configuration (`ceremony.json`), starts `exe join` for every party
/// (logs in `party-<i>/join.log`), waits, checks that all wrote the same transcript, and
/// collects the public outputs in `cfg.out`. `passphrase_env` is passed on to the parties.
pub fn run_processes(
    cfg: &RunConfig,
    exe: &Path,
    passphrase_env: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<RunReport> {
    use crate::net::{keygen, CeremonyConfig};
    let out = &cfg.out;
    if out.join("transcript.json").exists() || out.join("ceremony.json").exists() {
        return Err(Error::format(
            out.display().to_string(),
            "already holds a ceremony; choose another directory",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut members = Vec::new();
    for i in 1..=cfg.parties {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?
            .port();
        let keys = out.join(format!("party-{i}")).join("keys");
        members.push(keygen(
            &keys,
            i,
            &format!("party-{i}.ceremony.local"),
            &format!("127.0.0.1:{port}"),
        )?);
    }
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let config = CeremonyConfig {
        format: "medtech-ceremony-config/1".into(),
        bits: cfg.bits,
        threshold: cfg.threshold,
        session_nonce: hex::encode(nonce),
        batch: None,
        members,
    };
    let params = config.parameters()?;
    let config_path = out.join("ceremony.json");
    write(&config_path, &json(&config)?, false)?;
    progress(&format!(
        "ceremony: {}-bit modulus, {} parties (one process each, TLS on loopback), threshold {}, session {}",
        cfg.bits,
        cfg.parties,
        cfg.threshold,
        hex::encode(&params.session()[..8])
    ));
    let started = std::time::Instant::now();
    let mut children = Vec::new();
    for i in 1..=cfg.parties {
        let dir = out.join(format!("party-{i}"));
        let log_path = dir.join("join.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("join")
            .arg("--config")
            .arg(&config_path)
            .arg("--index")
            .arg(i.to_string())
            .arg("--keys")
            .arg(dir.join("keys"))
            .arg("--out")
            .arg(&dir)
            .stdout(log)
            .stderr(log2);
        if let Some(var) = passphrase_env {
            cmd.arg("--passphrase-env").arg(var);
        }
        children.push((i, log_path, cmd.spawn().map_err(|e| Error::io(exe, e))?));
    }
    // Poll the parties: each one's bar follows its log; a finished party is reported once.
    let bars = crate::progress::Bars::new(cfg.parties);
    let mut failed = Vec::new();
    let mut running = children;
    while !running.is_empty() {
        let mut still = Vec::new();
        for (i, log_path, mut child) in running {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            match child.try_wait().map_err(|e| Error::io(exe, e))? {
                None => {
                    bars.set(i, &crate::progress::stage_of_log(&log()));
                    still.push((i, log_path, child));
                }
                Some(status) if status.success() => {
                    bars.set(i, &crate::progress::Stage::Done);
                    if !bars.drawn() {
                        progress(&format!(
                            "  party {i}: done ({:.1} s)",
                            started.elapsed().as_secs_f64()
                        ));
                    }
                }
                Some(_) => {
                    let last = log().lines().last().unwrap_or("").to_string();
                    bars.set(i, &crate::progress::Stage::Failed(last.clone()));
                    if !bars.drawn() {
                        progress(&format!("  party {i}: FAILED — {last}"));
                    }
                    failed.push(format!("party {i}: {last}"));
                }
            }
        }
        running = still;
        if !running.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    drop(bars);
    if !failed.is_empty() {
        return Err(Error::format("ceremony", failed.join("; ")));
    }
    let transcripts = (1..=cfg.parties)
        .map(|i| crate::error::read(&out.join(format!("party-{i}")).join("transcript.json")))
        .collect::<Result<Vec<_>>>()?;
    if transcripts.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::format(
            "ceremony",
            "the parties wrote different transcripts",
        ));
    }
    let key = crate::files::load_key(&out.join("party-1").join("threshold-key.json"))?;
    let verdict = verify(&transcripts[0], Some(&config.identities()), Some(&key));
    if !verdict.ok() {
        return Err(Error::format(
            "transcript",
            "the ceremony's transcript does not verify",
        ));
    }
    let mut files = Vec::new();
    for (name, bytes) in [
        ("transcript.json", transcripts[0].clone()),
        ("threshold-key.json", json(&KeyFile::of(&key))?),
        ("identities.json", json(&config.identities())?),
    ] {
        write(&out.join(name), &bytes, false)?;
        files.push(out.join(name));
    }
    let fingerprint = hex::encode(key.fingerprint());
    let summary = format!(
        "MedTech Chain key ceremony (rehearsal: {} processes on this machine, TLS on loopback)\n\
         modulus: {} bits; committee: n = {}, any t = {} decrypt\n\
         key fingerprint: {}\n\
         time: {:.1} s\n\
         transcript: transcript.json (identical at every party, signed by all) — verified\n\
         share files: party-<i>/share.json, sealed with {}\n\
         configuration: ceremony.json; each party's keys in party-<i>/keys, its log in party-<i>/join.log\n",
        cfg.parties,
        cfg.bits,
        cfg.parties,
        cfg.threshold,
        fingerprint,
        started.elapsed().as_secs_f64(),
        if passphrase_env.is_some() {
            "the passphrase (Argon2id)"
        } else {
            "per-party key files party-<i>/share.key (mode 0600)"
        }
    );
    write(&out.join("summary.txt"), summary.as_bytes(), false)?;
    files.push(out.join("summary.txt"));
    Ok(RunReport {
        fingerprint,
        files,
        summary,
    })
}
