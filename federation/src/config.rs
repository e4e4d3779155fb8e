//! A committee node's files: the shared committee file, each member's `node.toml`, and
//! `medtech committee init`, which makes both for a rehearsal or a compose deployment.
//!
//! * `committee.toml` (public, identical at every hospital): the ledger origin, the threshold,
//!   and per member, in key-share order, its name, Raft id, committee address, TLS certificate
//!   digest and Ed25519 signing key.
//! * `node.toml` (one per hospital): where this member listens, its data directory, and the
//!   paths of its secrets: TLS key, signing key, sealed key share and the share's key file (or
//!   the name of an environment variable holding the share's passphrase). Relative paths are
//!   relative to the directory of `node.toml`.
//!
//! [`LoadedNode::load`] checks everything against everything else before a node starts: the
//! certificate's digest and the signing key against this member's line in the committee file,
//! the threshold key's shape against the committee, the key share against the key and against
//! this member's position. A mismatch is an error naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use medtech_ledger::checkpoint::{NodeIdentity, NodeKey};
use medtech_ledger::raft::CommitteeNode;
use medtech_ledger::state::{CommitteeConfig, MemberEndpoint};
use medtech_ledger::tls::NodeTls;
use medtech_threshold::{KeyShare, ThresholdPublicKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

/// `committee.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeFile {
    /// The ledger's origin (its name in checkpoints).
    pub origin: String,
    /// Any `threshold` members decrypt; as many cosign a checkpoint.
    pub threshold: u16,
    /// f: members that may be down when a query closes (`0 ≤ f ≤ n − t`; absent: 1, clamped
    /// to `n − t`). A close lists at least `n − f` noise shares, each calibrated for
    /// `n − f − t + 1` honest ones; a larger f widens every interval (docs/privacy.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_tolerance: Option<u16>,
    /// Members in key-share order (member `i`, from 0, holds share `i + 1`).
    pub members: Vec<MemberFile>,
}

/// One member in `committee.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberFile {
    /// Its name (`hospital-a`); also the DNS name in its TLS certificate.
    pub name: String,
    /// Raft id (≥ 1, unique).
    pub raft_id: u64,
    /// `host:port` where the others reach its committee endpoint.
    pub address: String,
    /// SHA-256 of its TLS certificate (DER), hex.
    pub tls_cert_sha256: String,
    /// Its Ed25519 public key, hex.
    pub signing_key: String,
}

/// `node.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This member's name in the committee file.
    pub name: String,
    /// The committee file.
    pub committee: PathBuf,
    /// Data directory (ledger, devices, accounts).
    pub data_dir: PathBuf,
    /// Where the committee endpoint (Raft over mutual TLS) listens.
    pub listen_committee: String,
    /// Where the HTTP API listens.
    pub listen_api: String,
    /// Initialise Raft with the whole committee on first start (exactly one member says so).
    #[serde(default)]
    pub bootstrap: bool,
    /// Keep the ledger state's per-query records in `ledger/state-cache.redb` beyond 16,384
    /// each (the default), so a node's memory stays bounded whatever the ledger's size;
    /// `false` keeps them all in memory (docs/ledger.md, "Memory").
    #[serde(default = "yes")]
    pub ledger_state_spill: bool,
    /// TLS files.
    pub tls: TlsFiles,
    /// Key files.
    pub keys: KeyFiles,
    /// API settings.
    #[serde(default)]
    pub api: ApiFile,
    /// Protocol timeouts.
    #[serde(default)]
    pub protocol: ProtocolFile,
    /// Anchoring of cosigned checkpoints to a Hyperledger Fabric channel (off when absent).
    #[serde(default)]
    pub fabric: Option<FabricFile>,
}

/// Where and as whom this member anchors the committee's cosigned checkpoints on Fabric
/// (`AnchorCheckpoint` of the anchoring chaincode; docs/ledger.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FabricFile {
    /// `host:port` of a peer's Gateway service.
    pub gateway: String,
    /// The peer organization's TLS CA certificate (PEM). Absent means plaintext gRPC, which
    /// only a peer with TLS disabled accepts: never in production.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// TLS server name of the peer, if not the host of `gateway`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The MSP the signing identity belongs to.
    pub msp_id: String,
    /// The identity's X.509 certificate (PEM).
    pub cert: PathBuf,
    /// Its ECDSA P-256 private key (PEM, PKCS#8; secret).
    pub key: PathBuf,
    /// The channel.
    pub channel: String,
    /// The anchoring chaincode's name.
    #[serde(default = "default_chaincode")]
    pub chaincode: String,
    /// How often to anchor the latest cosigned checkpoint, in seconds.
    #[serde(default = "default_anchor_every")]
    pub every_seconds: u64,
}

fn yes() -> bool {
    true
}

fn default_chaincode() -> String {
    medtech_ledger::fabric::contract::DEFAULT_CHAINCODE.to_owned()
}

fn default_anchor_every() -> u64 {
    30
}

/// TLS files of a member.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The committee CA certificate (PEM).
    pub ca: PathBuf,
    /// This member's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM; secret).
    pub key: PathBuf,
}

/// Key files of a member.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFiles {
    /// The member's Ed25519 signing key: 64 hex digits (secret).
    pub signing_key: PathBuf,
    /// The committee's threshold key (`threshold-key.json` from the ceremony).
    pub threshold_key: PathBuf,
    /// This member's sealed key share (`share.json` from the ceremony).
    pub share: PathBuf,
    /// The key file that unseals it (`share.key`), if it was sealed with one.
    #[serde(default)]
    pub share_key: Option<PathBuf>,
    /// Otherwise: the environment variable holding the share's passphrase.
    #[serde(default)]
    pub share_passphrase_env: Option<String>,
}

/// API settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    /// Token lifetime, seconds (default 900).
    #[serde(default)]
    pub token_ttl_seconds: Option<u64>,
    /// Largest device upload, MiB (default 512).
    #[serde(default)]
    pub max_upload_mb: Option<usize>,
    /// A file holding a static bearer token `/metrics` accepts (for Prometheus).
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// Mark dashboard cookies `Secure` (default true; browsers treat `http://localhost` as secure).
    #[serde(default)]
    pub cookie_secure: Option<bool>,
    /// On first start, when there are no accounts, an `admin` account is created with the
    /// password in this file (written, mode 0600, with a generated one if the file is absent).
    #[serde(default)]
    pub admin_password_file: Option<PathBuf>,
    /// Reverse proxies (IP addresses) whose `X-Forwarded-For` header names the client, for
    /// per-client login limits; default none: the socket's peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Queries one researcher may have open (submitted, not yet released or failed) at once,
    /// counted on this member's view of the ledger; more are answered 429 (default 4).
    #[serde(default)]
    pub max_queries_in_flight: Option<usize>,
    /// Longest a request may take before it is answered 503 `request_timeout` (seconds;
    /// default 120, at least 70 so that a 60 s result poll fits).
    #[serde(default)]
    pub request_timeout_seconds: Option<u64>,
}

/// Protocol timeouts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolFile {
    /// Close an aggregate without hospitals that have not contributed after this long (ms).
    #[serde(default)]
    pub contribution_timeout_ms: Option<u64>,
    /// Fail a query not released after this long (ms).
    #[serde(default)]
    pub decryption_timeout_ms: Option<u64>,
    /// Members not designated to decrypt a query join after this long without a release (ms).
    #[serde(default)]
    pub partial_fallback_ms: Option<u64>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| anyhow!("{} is not UTF-8", path.display()))
}

/// Writes `bytes` to `path`, mode 0600 when `secret`.
pub fn write_file(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = o
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a member's Ed25519 signing key file (64 hex digits) as `name`'s ledger key.
pub fn read_signing_key(name: &str, path: &Path) -> anyhow::Result<NodeKey> {
    let secret = zeroize::Zeroizing::new(read_text(path)?);
    let bytes = zeroize::Zeroizing::new(
        hex32("the signing key file", &secret).with_context(|| path.display().to_string())?,
    );
    Ok(NodeKey::from_secret_bytes(name, &bytes))
}

fn hex32(what: &str, text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("{what} must be 64 hex digits"))
}

impl CommitteeFile {
    /// Reads and checks a committee file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let c: CommitteeFile = toml::from_str(&read_text(path)?)
            .with_context(|| format!("{} is not a committee file", path.display()))?;
        c.genesis()
            .with_context(|| format!("committee file {}", path.display()))?;
        Ok(c)
    }

    /// The genesis committee of the ledger.
    pub fn genesis(&self) -> anyhow::Result<CommitteeConfig> {
        let mut members = Vec::new();
        let mut endpoints = BTreeMap::new();
        for m in &self.members {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&hex32(
                &format!("member {}'s signing_key", m.name),
                &m.signing_key,
            )?)
            .map_err(|e| anyhow!("member {}'s signing_key: {e}", m.name))?;
            members.push(NodeIdentity {
                name: m.name.clone(),
                key,
            });
            endpoints.insert(
                m.name.clone(),
                MemberEndpoint {
                    raft_id: m.raft_id,
                    addr: m.address.clone(),
                    cert_sha256: m.tls_cert_sha256.clone(),
                },
            );
        }
        let mut g = CommitteeConfig::new(members, usize::from(self.threshold), 0);
        g.endpoints = endpoints;
        g.close_tolerance = self.close_tolerance;
        g.validate().map_err(|e| anyhow!("{e}"))?;
        Ok(g)
    }

    /// The Raft membership.
    pub fn raft_members(&self) -> BTreeMap<u64, CommitteeNode> {
        self.members
            .iter()
            .map(|m| {
                (
                    m.raft_id,
                    CommitteeNode {
                        name: m.name.clone(),
                        addr: m.address.clone(),
                        cert_sha256: m.tls_cert_sha256.clone(),
                    },
                )
            })
            .collect()
    }

    /// Member names in key-share order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }
}

/// Everything a node needs, loaded and cross-checked.
pub struct LoadedNode {
    /// The node file.
    pub file: NodeFile,
    /// The committee file.
    pub committee: CommitteeFile,
    /// This member's position (0-based; it holds share `position + 1`).
    pub position: usize,
    /// Its Raft id.
    pub raft_id: u64,
    /// Its signing key.
    pub key: NodeKey,
    /// Its TLS material.
    pub tls: NodeTls,
    /// The committee key.
    pub threshold_key: ThresholdPublicKey,
    /// Its key share.
    pub share: KeyShare,
    /// Data directory (resolved).
    pub data_dir: PathBuf,
    /// Admin password file (resolved), if configured.
    pub admin_password_file: Option<PathBuf>,
    /// Metrics token, if configured.
    pub metrics_token: Option<zeroize::Zeroizing<String>>,
    /// The Fabric anchoring set-up, if configured.
    pub fabric: Option<FabricSetup>,
}

/// The `[fabric]` section, loaded: the gateway, the signing identity, where to anchor and how
/// often. The client is made inside the runtime ([`crate::service`]).
pub struct FabricSetup {
    /// The peer's Gateway service.
    pub endpoint: medtech_ledger::fabric::GatewayEndpoint,
    /// The MSP identity that signs the proposals.
    pub identity: medtech_ledger::fabric::MspIdentity,
    /// The channel.
    pub channel: String,
    /// The anchoring chaincode.
    pub chaincode: String,
    /// The anchoring interval.
    pub every: std::time::Duration,
}

impl std::fmt::Debug for LoadedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedNode")
            .field("name", &self.file.name)
            .field("position", &self.position)
            .field("raft_id", &self.raft_id)
            .finish_non_exhaustive()
    }
}

impl LoadedNode {
    /// Loads `node.toml` and everything it names, checking each against the others.
    pub fn load(config: &Path) -> anyhow::Result<Self> {
        let base = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let at = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let file: NodeFile = toml::from_str(&read_text(config)?)
            .with_context(|| format!("{} is not a node file", config.display()))?;
        let committee = CommitteeFile::load(&at(&file.committee))?;
        let position = committee
            .members
            .iter()
            .position(|m| m.name == file.name)
            .ok_or_else(|| {
                anyhow!(
                    "{} is not a member in {}",
                    file.name,
                    file.committee.display()
                )
            })?;
        let me = &committee.members[position];

        let key = read_signing_key(&file.name, &at(&file.keys.signing_key))?;
        if hex::encode(key.identity().key.as_bytes()) != me.signing_key.to_lowercase() {
            bail!(
                "{}: this signing key is not {}'s key in the committee file",
                file.keys.signing_key.display(),
                file.name
            );
        }

        let cert_pem = read_text(&at(&file.tls.cert))?;
        let digest = medtech_ledger::tls::pem_cert_digest(&cert_pem)
            .with_context(|| file.tls.cert.display().to_string())?;
        if digest != me.tls_cert_sha256.to_lowercase() {
            bail!(
                "{}: certificate digest {digest} is not the one pinned for {} in the committee file",
                file.tls.cert.display(),
                file.name
            );
        }
        let tls = NodeTls {
            ca_pem: read_text(&at(&file.tls.ca))?,
            cert_pem,
            key_pem: read_text(&at(&file.tls.key))?,
            cert_sha256: digest,
        };

        let threshold_key = medtech_ceremony::files::load_key(&at(&file.keys.threshold_key))
            .with_context(|| file.keys.threshold_key.display().to_string())?;
        if usize::from(threshold_key.parties()) != committee.members.len()
            || threshold_key.threshold() != committee.threshold
        {
            bail!(
                "{}: the key is {} of {}, the committee {} of {}",
                file.keys.threshold_key.display(),
                threshold_key.threshold(),
                threshold_key.parties(),
                committee.threshold,
                committee.members.len()
            );
        }
        let sealed = read(&at(&file.keys.share))?;
        use medtech_ceremony::sharefile::{open, parse_key_file, Unlock};
        let share = match (&file.keys.share_key, &file.keys.share_passphrase_env) {
            (Some(k), None) => {
                let k = parse_key_file(&read(&at(k))?).with_context(|| k.display().to_string())?;
                open(&sealed, &threshold_key, &Unlock::Key(&k))
            }
            (None, Some(var)) => {
                let pw = zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                    anyhow!("environment variable {var} (the share's passphrase) is not set")
                })?);
                open(&sealed, &threshold_key, &Unlock::Passphrase(pw.as_bytes()))
            }
            _ => {
                bail!("node file: set exactly one of keys.share_key and keys.share_passphrase_env")
            }
        }
        .with_context(|| file.keys.share.display().to_string())?;
        if usize::from(share.index().0) != position + 1 {
            bail!(
                "{}: this is share {}, but {} is member {} of the committee file and holds share {}",
                file.keys.share.display(),
                share.index().0,
                file.name,
                position + 1,
                position + 1
            );
        }
        let metrics_token = match &file.api.metrics_token_file {
            Some(p) => Some(zeroize::Zeroizing::new(
                read_text(&at(p))?.trim().to_owned(),
            )),
            None => None,
        };
        let fabric = match &file.fabric {
            Some(f) => Some(load_fabric(f, &at).context("the [fabric] section")?),
            None => None,
        };
        Ok(LoadedNode {
            fabric,
            position,
            raft_id: me.raft_id,
            data_dir: at(&file.data_dir),
            admin_password_file: file.api.admin_password_file.as_deref().map(at),
            key,
            tls,
            threshold_key,
            share,
            metrics_token,
            committee,
            file,
        })
    }
}

fn load_fabric(f: &FabricFile, at: &dyn Fn(&Path) -> PathBuf) -> anyhow::Result<FabricSetup> {
    use medtech_ledger::fabric::{GatewayEndpoint, MspIdentity};
    if f.every_seconds == 0 {
        anyhow::bail!("every_seconds must be at least 1");
    }
    let identity = MspIdentity::from_pem(
        &f.msp_id,
        &read_text(&at(&f.cert))?,
        &zeroize::Zeroizing::new(read_text(&at(&f.key))?),
    )
    .map_err(|e| anyhow!("Fabric identity: {e}"))?;
    let endpoint = GatewayEndpoint {
        address: f.gateway.clone(),
        tls_ca_pem: match &f.tls_ca {
            Some(p) => Some(read_text(&at(p))?),
            None => None,
        },
        server_name: f.server_name.clone(),
        client_tls: None,
        commit_timeout: std::time::Duration::from_secs(30),
    };
    Ok(FabricSetup {
        endpoint,
        identity,
        channel: f.channel.clone(),
        chaincode: f.chaincode.clone(),
        every: std::time::Duration::from_secs(f.every_seconds),
    })
}

/// How `medtech committee init` lays out a committee.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Output directory.
    pub dir: PathBuf,
    /// n.
    pub parties: u16,
    /// t.
    pub threshold: u16,
    /// f, the close tolerance (`None`: the default, 1 clamped to `n − t`).
    pub close_tolerance: Option<u16>,
    /// Modulus bits of the key the ceremony makes.
    pub bits: u32,
    /// Container layout: member `x` is reached at `hospital-x:7000`, listens on `0.0.0.0`,
    /// API on `0.0.0.0:8080`, data in `/data`. Otherwise loopback ports from the bases below.
    pub containers: bool,
    /// First committee port (loopback layout).
    pub committee_port: u16,
    /// First API port (loopback layout).
    pub api_port: u16,
    /// Ledger origin.
    pub origin: String,
}

/// What `init` made.
#[derive(Debug)]
pub struct InitReport {
    /// Each member's `node.toml`.
    pub node_files: Vec<PathBuf>,
    /// The committee file.
    pub committee_file: PathBuf,
    /// The ceremony's summary.
    pub ceremony_summary: String,
}

fn letter(i: usize) -> String {
    match b"abcdefghijklmnopqrstuvwxyz".get(i) {
        Some(c) => char::from(*c).to_string(),
        None => format!("{}", i + 1),
    }
}

/// Makes a committee: a CA and one certificate, signing key and `node.toml` per member, the
/// committee file, and the key from a dealer-free ceremony rehearsed on this machine (the
/// public record in `DIR/ceremony`, each share moved into its member's directory).
pub fn init(opts: &InitOptions, progress: &mut dyn FnMut(&str)) -> anyhow::Result<InitReport> {
    let dir = &opts.dir;
    if dir.join("committee.toml").exists() {
        bail!(
            "{} already holds a committee (committee.toml)",
            dir.display()
        );
    }
    let n = usize::from(opts.parties);
    let ca = medtech_ledger::tls::CommitteeCa::generate("MedTech Chain committee CA")?;
    let mut members = Vec::new();
    let mut secrets = Vec::new();
    for i in 0..n {
        let name = format!("hospital-{}", letter(i));
        let tls = ca.issue(&name)?;
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut secret[..]);
        let key = NodeKey::from_secret_bytes(&name, &secret);
        let offset = u16::try_from(i).map_err(|_| anyhow!("too many members"))?;
        let address = if opts.containers {
            format!("{name}:7000")
        } else {
            format!("127.0.0.1:{}", opts.committee_port.saturating_add(offset))
        };
        members.push(MemberFile {
            name: name.clone(),
            raft_id: i as u64 + 1,
            address,
            tls_cert_sha256: tls.cert_sha256.clone(),
            signing_key: hex::encode(key.identity().key.as_bytes()),
        });
        secrets.push((name, tls, secret, offset));
    }
    let committee = CommitteeFile {
        origin: opts.origin.clone(),
        threshold: opts.threshold,
        close_tolerance: opts.close_tolerance,
        members,
    };
    committee.genesis()?;

    progress("key ceremony (dealer-free, every party on this machine)");
    let ceremony_dir = dir.join("ceremony");
    let report = medtech_ceremony::rehearsal::run(
        &medtech_ceremony::rehearsal::RunConfig {
            bits: opts.bits,
            parties: opts.parties,
            threshold: opts.threshold,
            out: ceremony_dir.clone(),
            passphrase: None,
        },
        &mut |p| progress(p),
    )?;

    let committee_file = dir.join("committee.toml");
    write_file(
        &committee_file,
        toml::to_string_pretty(&committee)?.as_bytes(),
        false,
    )?;
    let mut node_files = Vec::new();
    for (i, (name, tls, secret, offset)) in secrets.into_iter().enumerate() {
        let home = dir.join(&name);
        write_file(&home.join("tls/ca.pem"), tls.ca_pem.as_bytes(), false)?;
        write_file(&home.join("tls/cert.pem"), tls.cert_pem.as_bytes(), false)?;
        write_file(&home.join("tls/key.pem"), tls.key_pem.as_bytes(), true)?;
        write_file(
            &home.join("keys/node.key"),
            hex::encode(&secret[..]).as_bytes(),
            true,
        )?;
        write_file(
            &home.join("committee.toml"),
            toml::to_string_pretty(&committee)?.as_bytes(),
            false,
        )?;
        std::fs::copy(
            ceremony_dir.join("threshold-key.json"),
            home.join("keys/threshold-key.json"),
        )
        .context("copying the threshold key")?;
        let party = ceremony_dir.join(format!("party-{}", i + 1));
        for f in ["share.json", "share.key"] {
            std::fs::rename(party.join(f), home.join("keys").join(f))
                .with_context(|| format!("moving {}", party.join(f).display()))?;
        }
        let _ = std::fs::remove_dir(&party);
        let (listen_committee, listen_api, data_dir) = if opts.containers {
            (
                "0.0.0.0:7000".to_owned(),
                "0.0.0.0:8080".to_owned(),
                PathBuf::from("/data"),
            )
        } else {
            (
                format!("127.0.0.1:{}", opts.committee_port.saturating_add(offset)),
                format!("127.0.0.1:{}", opts.api_port.saturating_add(offset)),
                PathBuf::from("data"),
            )
        };
        let node = NodeFile {
            name,
            committee: PathBuf::from("committee.toml"),
            data_dir,
            listen_committee,
            listen_api,
            bootstrap: i == 0,
            ledger_state_spill: true,
            tls: TlsFiles {
                ca: "tls/ca.pem".into(),
                cert: "tls/cert.pem".into(),
                key: "tls/key.pem".into(),
            },
            keys: KeyFiles {
                signing_key: "keys/node.key".into(),
                threshold_key: "keys/threshold-key.json".into(),
                share: "keys/share.json".into(),
                share_key: Some("keys/share.key".into()),
                share_passphrase_env: None,
            },
            api: ApiFile {
                admin_password_file: Some(if opts.containers {
                    "/data/admin-password".into()
                } else {
                    "data/admin-password".into()
                }),
                ..ApiFile::default()
            },
            protocol: ProtocolFile::default(),
            fabric: None,
        };
        let path = home.join("node.toml");
        write_file(&path, toml::to_string_pretty(&node)?.as_bytes(), false)?;
        node_files.push(path);
    }
    Ok(InitReport {
        node_files,
        committee_file,
        ceremony_summary: report.summary,
    })
}

#[cfg(test)]
mod tests {
    use super::NodeFile;

    const MINIMAL: &str = r#"
name = "hospital-1"
committee = "committee.toml"
data_dir = "data"
listen_committee = "127.0.0.1:7000"
listen_api = "127.0.0.1:8080"
[tls]
ca = "tls/ca.pem"
cert = "tls/cert.pem"
key = "tls/key.pem"
[keys]
signing_key = "keys/node.key"
threshold_key = "keys/threshold-key.json"
share = "keys/share.json"
"#;

    /// A node.toml written before the option existed gets bounded memory, and an operator can
    /// still keep everything in memory.
    #[test]
    fn the_ledger_state_spills_unless_the_node_file_says_otherwise() {
        let file: NodeFile = toml::from_str(MINIMAL).expect("minimal node.toml");
        assert!(file.ledger_state_spill);
        let file: NodeFile = toml::from_str(&MINIMAL.replace(
            "listen_api = \"127.0.0.1:8080\"\n",
            "listen_api = \"127.0.0.1:8080\"\nledger_state_spill = false\n",
        ))
        .expect("node.toml with the option");
        assert!(!file.ledger_state_spill);
    }
}
