//! `medtech-ceremony join`: one party of a ceremony on its own host, talking to the others over
//! mutually authenticated TLS.
//!
//! * **Configuration** ([`CeremonyConfig`], JSON, identical at every party): the parameters, a
//!   session nonce, and per member its address, TLS server name, CA certificate, the SHA-256 of
//!   its TLS certificate and its Ed25519 identity key. The session identifier is the SHA-256 of
//!   the canonical configuration, so every message is bound to this exact ceremony.
//! * **Channels**: party *i* dials every other party *j* (TLS 1.3 via rustls, *j*'s CA as the only
//!   root, *i*'s certificate for client authentication) and sends its messages to *j* over that
//!   connection; it accepts the others' connections the same way. Both ends check that the
//!   peer's certificate is byte for byte the pinned one (SHA-256 of the DER) for the index it
//!   claims, so a certificate from the right CA but of another member is refused.
//! * **Envelopes**: every message is signed with the sender's identity key over the session, a
//!   kind byte and the payload; a receiver checks the signature and that the message names the
//!   connection's party as its sender. A party that sends garbage or a bad signature is named.
//! * **Rounds**: [`Party::expects`] says whose messages the round needs; messages of later rounds
//!   are buffered. A round that does not complete within the timeout names the missing parties.
//! * **End**: every party signs the transcript head and the key fingerprint and sends the
//!   signature to all; with all `n` signatures each party writes the same `transcript.json`,
//!   the key, its own sealed share and a summary, and verifies the transcript.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use medtech_ledger::tls::cert_digest;
use medtech_threshold::dkg::{Message, Parameters, Party, Round, Step};
use medtech_threshold::PartyIndex;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::error::{read, unhex, write, Error, Result};
use crate::sharefile::write_key_and_share;
use crate::transcript::{verify, Identity, SignatureRecord, Transcript};

/// Largest frame accepted (a 2048-bit batch's sieve shares are about 8 MB).
const MAX_FRAME: usize = 256 << 20;
/// How far a frame's buffer may grow ahead of the bytes received.
const FRAME_STEP: usize = 1 << 20;
const KIND_MESSAGE: u8 = 1;
const KIND_SIGNATURE: u8 = 2;
/// A signed list of the hashes of every broadcast received in a phase (the echo round).
const KIND_ECHO: u8 = 3;
/// A copy of another member's signed broadcast, sent when an echo disagrees with ours.
const KIND_EVIDENCE: u8 = 4;

/// One member in the ceremony configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Member index (1-based, in order).
    pub index: u16,
    /// `host:port` it listens on.
    pub address: String,
    /// The DNS name in its TLS certificate.
    pub name: String,
    /// Its CA certificate (PEM).
    pub tls_ca_pem: String,
    /// SHA-256 of its TLS certificate (DER), hex: pinned.
    pub tls_cert_sha256: String,
    /// Its Ed25519 identity key, hex: pinned.
    pub ed25519: String,
}

/// The ceremony configuration every party holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CeremonyConfig {
    /// `medtech-ceremony-config/1`.
    pub format: String,
    /// Modulus size.
    pub bits: u32,
    /// Threshold t.
    pub threshold: u16,
    /// A nonce agreed when the configuration was written (hex), so two ceremonies of the same
    /// committee never share a session.
    pub session_nonce: String,
    /// Candidates per batch (default when absent).
    #[serde(default)]
    pub batch: Option<usize>,
    /// The members, in index order.
    pub members: Vec<MemberConfig>,
}

impl CeremonyConfig {
    /// The session identifier: SHA-256 of the canonical configuration.
    pub fn session(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"medtech-ceremony/v1/session");
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.finalize().into()
    }

    /// The protocol parameters (validated), after checking the members.
    pub fn parameters(&self) -> Result<Parameters> {
        if self.format != "medtech-ceremony-config/1" {
            return Err(Error::format("ceremony config", "unsupported format"));
        }
        for (k, m) in self.members.iter().enumerate() {
            if usize::from(m.index) != k + 1 {
                return Err(Error::format(
                    "ceremony config",
                    "members must be listed in index order from 1",
                ));
            }
        }
        distinct_members(&self.members)?;
        let n = u16::try_from(self.members.len())
            .map_err(|_| Error::format("ceremony config", "too many members"))?;
        let mut p = Parameters::new(self.bits, n, self.threshold, self.session())?;
        if let Some(b) = self.batch {
            p = p.with_batch(b)?;
        }
        Ok(p)
    }

    /// The members' identity keys, as a transcript lists them.
    pub fn identities(&self) -> Vec<Identity> {
        self.members
            .iter()
            .map(|m| Identity {
                party: m.index,
                ed25519: m.ed25519.clone(),
            })
            .collect()
    }
}

/// Refuses two members that share an identity key or a TLS certificate: one host holding two
/// seats would count twice towards the threshold and the honest majority, and its frames could
/// not be told apart.
pub(crate) fn distinct_members(members: &[MemberConfig]) -> Result<()> {
    for (k, a) in members.iter().enumerate() {
        for b in &members[..k] {
            let same = if a.ed25519.eq_ignore_ascii_case(&b.ed25519) {
                "identity key"
            } else if a.tls_cert_sha256.eq_ignore_ascii_case(&b.tls_cert_sha256) {
                "TLS certificate"
            } else {
                continue;
            };
            return Err(Error::format(
                "configuration",
                format!("members {} and {} share one {same}", b.index, a.index),
            ));
        }
    }
    Ok(())
}

/// A member's pinned identity key.
pub(crate) fn member_key(m: &MemberConfig) -> Result<VerifyingKey> {
    {
        let b: [u8; 32] = unhex("identity", &m.ed25519)?
            .try_into()
            .map_err(|_| Error::format("identity", "must be 32 bytes"))?;
        VerifyingKey::from_bytes(&b).map_err(|_| Error::format("identity", "not a valid key"))
    }
}

/// A party's own secrets for a ceremony, as written by `keygen` into one directory.
pub struct LocalSecrets {
    tls_cert_pem: String,
    tls_key_pem: zeroize::Zeroizing<String>,
    identity: SigningKey,
}

/// `keygen`: fresh TLS material (a CA of this party and a certificate for `name`) and an
/// identity key in `dir`; returns this member's configuration entry.
pub fn keygen(dir: &Path, index: u16, name: &str, address: &str) -> Result<MemberConfig> {
    let ca = medtech_ledger::tls::CommitteeCa::generate(&format!("{name} ceremony CA"))
        .map_err(|e| Error::format("TLS", e.to_string()))?;
    let tls = ca
        .issue(name)
        .map_err(|e| Error::format("TLS", e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if dir.join("identity.key").exists() {
        return Err(Error::format(
            dir.display().to_string(),
            "already holds ceremony keys",
        ));
    }
    let identity = SigningKey::generate(&mut OsRng);
    write(&dir.join("tls-cert.pem"), tls.cert_pem.as_bytes(), false)?;
    write(&dir.join("tls-key.pem"), tls.key_pem.as_bytes(), true)?;
    write(
        &dir.join("identity.key"),
        format!("{}\n", hex::encode(identity.to_bytes())).as_bytes(),
        true,
    )?;
    Ok(MemberConfig {
        index,
        address: address.into(),
        name: name.into(),
        tls_ca_pem: tls.ca_pem,
        tls_cert_sha256: tls.cert_sha256,
        ed25519: hex::encode(identity.verifying_key().as_bytes()),
    })
}

impl LocalSecrets {
    /// The identity key that signs this member's frames and transcript signatures.
    pub(crate) fn identity(&self) -> &SigningKey {
        &self.identity
    }
}

/// Loads what `keygen` wrote.
pub fn load_secrets(dir: &Path) -> Result<LocalSecrets> {
    let cert = String::from_utf8(read(&dir.join("tls-cert.pem"))?)
        .map_err(|_| Error::format("tls-cert.pem", "not UTF-8"))?;
    let key = zeroize::Zeroizing::new(
        String::from_utf8(read(&dir.join("tls-key.pem"))?)
            .map_err(|_| Error::format("tls-key.pem", "not UTF-8"))?,
    );
    let id = zeroize::Zeroizing::new(read(&dir.join("identity.key"))?);
    let raw = crate::sharefile::parse_key_file(&id)?;
    Ok(LocalSecrets {
        tls_cert_pem: cert,
        tls_key_pem: key,
        identity: SigningKey::from_bytes(&raw),
    })
}

/// SHA-256 of the certificate the peer of a TLS connection presented (what the pins compare).
fn peer_digest(conn: &rustls::CommonState) -> Option<String> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| cert_digest(c))
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::format("TLS", e.to_string())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<core::result::Result<Vec<_>, _>>()
        .map_err(tls_err)
}

fn signed_envelope(session: &[u8; 32], kind: u8, payload: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig = key.sign(&envelope_bytes(session, kind, payload));
    let mut out = Vec::with_capacity(payload.len() + 65);
    out.push(kind);
    out.extend_from_slice(&sig.to_bytes());
    out.extend_from_slice(payload);
    out
}

fn envelope_bytes(session: &[u8; 32], kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = b"medtech-ceremony/v1/envelope".to_vec();
    b.extend_from_slice(session);
    b.push(kind);
    b.extend_from_slice(payload);
    b
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    Ok(read_frame_into(r, &mut buf).await?.then_some(buf))
}

/// Reads one frame into `buf`; `Ok(false)` at a clean end of stream. The buffer grows by at most
/// [`FRAME_STEP`] ahead of the bytes that actually arrived, so a length header alone (up to
/// [`MAX_FRAME`]) commits no memory.
async fn read_frame_into<R: AsyncReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    buf.clear();
    while buf.len() < len {
        let start = buf.len();
        buf.resize(start + (len - start).min(FRAME_STEP), 0);
        r.read_exact(&mut buf[start..]).await?;
    }
    Ok(true)
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&(b.len() as u32).to_be_bytes()).await?;
    w.write_all(b).await?;
    w.flush().await
}

/// What arrives from a peer, attributed to the member whose pinned certificate and identity key
/// the connection and the frame's signature match.
pub(crate) enum Inbound {
    /// A protocol message with its sender's envelope signature (kept: it is what proves, to
    /// anyone, what the sender said); the receiver checks that it names the right sender for
    /// its role.
    Message(u16, Message, Signed),
    /// A member's signature over the outcome.
    Signature(u16, [u8; 64]),
    /// A member's echo: the phase tag and, per sender, the hash of the broadcast it received.
    Echo(u16, Echo),
    /// A member's copy of another member's signed broadcast (signature already checked).
    Evidence(u16, Signed),
    /// The peer (named by its pinned certificate) misbehaved.
    Fault(u16, String),
}

/// A broadcast as its sender signed it: anyone holding the sender's pinned identity key can
/// check it, so two different ones for the same slot prove that the sender equivocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signed {
    /// The member (mesh index) whose identity key signed it.
    pub(crate) from: u16,
    /// The envelope signature.
    pub(crate) signature: [u8; 64],
    /// The encoded message.
    pub(crate) payload: Vec<u8>,
}

impl Signed {
    /// The hash an echo carries for it.
    fn hash(&self) -> [u8; 32] {
        crate::transcript::message_hash(&self.payload)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.payload.len() + 66);
        b.extend_from_slice(&self.from.to_be_bytes());
        b.extend_from_slice(&self.signature);
        b.extend_from_slice(&self.payload);
        b
    }

    /// Decodes and checks the original sender's signature against its pinned key.
    fn from_bytes(
        session: &[u8; 32],
        keys: &[VerifyingKey],
        b: &[u8],
    ) -> core::result::Result<Self, &'static str> {
        let from = b
            .get(..2)
            .map(|f| u16::from_be_bytes([f[0], f[1]]))
            .ok_or("short evidence")?;
        let signature: [u8; 64] = b
            .get(2..66)
            .ok_or("short evidence")?
            .try_into()
            .map_err(|_| "short evidence")?;
        let payload = b[66..].to_vec();
        let key = keys
            .get(usize::from(from).wrapping_sub(1))
            .ok_or("evidence names no member")?;
        key.verify(
            &envelope_bytes(session, KIND_MESSAGE, &payload),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| "evidence whose signature does not verify")?;
        Ok(Signed {
            from,
            signature,
            payload,
        })
    }

    /// Whether `self` and `other` are two different broadcasts of one sender for one slot
    /// (same round, batch and protocol sender, both broadcasts): proof of equivocation.
    fn conflicts_with(&self, other: &Signed) -> bool {
        if self.from != other.from || self.payload == other.payload {
            return false;
        }
        match (
            Message::from_bytes(&self.payload),
            Message::from_bytes(&other.payload),
        ) {
            (Ok(a), Ok(b)) => {
                a.to.is_none()
                    && b.to.is_none()
                    && (a.round, a.batch, a.from) == (b.round, b.batch, b.from)
            }
            _ => false,
        }
    }
}

/// One member's echo of a phase: `(sender, hash of its broadcast)` for every broadcast it
/// received in the phase named by `tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Echo {
    tag: u64,
    hashes: BTreeMap<u16, [u8; 32]>,
}

impl Echo {
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.tag.to_be_bytes().to_vec();
        for (from, h) in &self.hashes {
            b.extend_from_slice(&from.to_be_bytes());
            b.extend_from_slice(h);
        }
        b
    }

    fn from_bytes(b: &[u8]) -> core::result::Result<Self, &'static str> {
        let tag = b
            .get(..8)
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes)
            .ok_or("short echo")?;
        let rest = &b[8..];
        if !rest.len().is_multiple_of(34) {
            return Err("malformed echo");
        }
        let mut hashes = BTreeMap::new();
        for e in rest.chunks_exact(34) {
            let from = u16::from_be_bytes([e[0], e[1]]);
            let mut h = [0u8; 32];
            h.copy_from_slice(&e[2..]);
            if hashes.insert(from, h).is_some() {
                return Err("echo lists a sender twice");
            }
        }
        Ok(Echo { tag, hashes })
    }
}

/// Options of [`join`].
pub struct JoinOptions {
    /// This party's index.
    pub index: u16,
    /// Where to write the outputs.
    pub out: PathBuf,
    /// Seal the share with this passphrase (Argon2id) instead of a key file.
    pub passphrase: Option<zeroize::Zeroizing<String>>,
    /// How long one round may take before the missing parties are named.
    pub round_timeout: Duration,
    /// Print a progress line per phase to standard error.
    pub verbose: bool,
}

/// Runs this party's side of the ceremony to the end; returns the key fingerprint (hex).
pub fn join(config: &CeremonyConfig, secrets: &LocalSecrets, opts: &JoinOptions) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io(Path::new("tokio runtime"), e))?;
    rt.block_on(join_async(config, secrets, opts))
}

/// Every member's connections of one session: a TLS connection to each other member for sending
/// and one from each for receiving, both pinned, every frame signed with the sender's identity
/// key. Shared by the ceremony ([`join`]) and the re-sharing ([`crate::reshare`]).
pub(crate) struct Mesh {
    me: u16,
    session: [u8; 32],
    identity: SigningKey,
    outs: BTreeMap<u16, mpsc::UnboundedSender<Vec<u8>>>,
    rx: mpsc::UnboundedReceiver<Inbound>,
    /// Echoes and evidence that arrived before their echo round.
    held: Vec<Inbound>,
    /// Messages and signatures that arrived during an echo round, for the caller.
    stash: VecDeque<Inbound>,
}

impl Mesh {
    /// Listens on `members[me]`'s address and dials every other member (retrying until
    /// `timeout`); checks that `secrets` are the ones pinned for `me`.
    pub(crate) async fn connect(
        session: [u8; 32],
        members: &[MemberConfig],
        me: u16,
        secrets: &LocalSecrets,
        timeout: Duration,
    ) -> Result<Mesh> {
        let mine = members
            .get(usize::from(me).wrapping_sub(1))
            .ok_or_else(|| Error::format("configuration", format!("no member {me}")))?;
        if hex::encode(secrets.identity.verifying_key().as_bytes()) != mine.ed25519 {
            return Err(Error::format(
                "identity.key",
                "is not the identity key the configuration pins for this member",
            ));
        }
        let my_certs = certs(&secrets.tls_cert_pem)?;
        if my_certs.first().map(|c| cert_digest(c)) != Some(mine.tls_cert_sha256.clone()) {
            return Err(Error::format(
                "tls-cert.pem",
                "is not the certificate the configuration pins for this member",
            ));
        }
        let my_key =
            PrivateKeyDer::from_pem_slice(secrets.tls_key_pem.as_bytes()).map_err(tls_err)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        // Server side: any member's CA may have issued the client's certificate; the pin decides.
        let mut all_roots = rustls::RootCertStore::empty();
        for m in members {
            for c in certs(&m.tls_ca_pem)? {
                all_roots.add(c).map_err(tls_err)?;
            }
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(all_roots),
            provider.clone(),
        )
        .build()
        .map_err(tls_err)?;
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(my_certs.clone(), my_key.clone_key())
            .map_err(tls_err)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let listener = TcpListener::bind(&mine.address)
            .await
            .map_err(|e| Error::io(Path::new(&mine.address), e))?;

        let (tx, rx) = mpsc::unbounded_channel::<Inbound>();
        let pins: Vec<String> = members.iter().map(|m| m.tls_cert_sha256.clone()).collect();
        let keys: Vec<VerifyingKey> = members.iter().map(member_key).collect::<Result<_>>()?;
        {
            let tx = tx.clone();
            let pins = pins.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    let pins = pins.clone();
                    let keys = keys.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let peer = peer_digest(tls.get_ref().1);
                        // The hello frame names the sender; its certificate must be that member's.
                        let Ok(Some(hello)) = read_frame(&mut tls).await else {
                            return;
                        };
                        let Some(from) = hello.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
                        else {
                            return;
                        };
                        let pinned = pins.get(usize::from(from).wrapping_sub(1));
                        if peer.is_none() || pinned != peer.as_ref() {
                            // Not a member (or a member's certificate used to claim another index):
                            // nothing it says is attributed to anyone.
                            return;
                        }
                        let key = keys[usize::from(from) - 1];
                        loop {
                            let frame = match read_frame(&mut tls).await {
                                Ok(Some(f)) => f,
                                Ok(None) => return,
                                Err(e) => {
                                    let _ =
                                        tx.send(Inbound::Fault(from, format!("connection: {e}")));
                                    return;
                                }
                            };
                            let item = (|| {
                                let (&kind, rest) = frame.split_first().ok_or("empty frame")?;
                                let sig: [u8; 64] = rest
                                    .get(..64)
                                    .ok_or("short frame")?
                                    .try_into()
                                    .map_err(|_| "short frame")?;
                                let payload = &rest[64..];
                                key.verify(
                                    &envelope_bytes(&session, kind, payload),
                                    &Signature::from_bytes(&sig),
                                )
                                .map_err(|_| "bad envelope signature")?;
                                match kind {
                                    KIND_MESSAGE => {
                                        let m = Message::from_bytes(payload)
                                            .map_err(|_| "undecodable message")?;
                                        let env = Signed {
                                            from,
                                            signature: sig,
                                            payload: payload.to_vec(),
                                        };
                                        Ok(Inbound::Message(from, m, env))
                                    }
                                    KIND_SIGNATURE => {
                                        let s: [u8; 64] = payload
                                            .try_into()
                                            .map_err(|_| "bad transcript signature")?;
                                        Ok(Inbound::Signature(from, s))
                                    }
                                    KIND_ECHO => {
                                        Ok(Inbound::Echo(from, Echo::from_bytes(payload)?))
                                    }
                                    KIND_EVIDENCE => Ok(Inbound::Evidence(
                                        from,
                                        Signed::from_bytes(&session, &keys, payload)?,
                                    )),
                                    _ => Err("unknown envelope kind"),
                                }
                            })();
                            let done = item.is_err();
                            let _ =
                                tx.send(item.unwrap_or_else(|e| Inbound::Fault(from, e.into())));
                            if done {
                                return;
                            }
                        }
                    });
                }
            });
        }

        // Client side: one connection to every other member, each behind a writer task.
        let mut outs: BTreeMap<u16, mpsc::UnboundedSender<Vec<u8>>> = BTreeMap::new();
        for m in members.iter().filter(|m| m.index != me) {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(&m.tls_ca_pem)? {
                roots.add(c).map_err(tls_err)?;
            }
            let client_cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(tls_err)?
                .with_root_certificates(roots)
                .with_client_auth_cert(my_certs.clone(), my_key.clone_key())
                .map_err(tls_err)?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
            let name = ServerName::try_from(m.name.clone()).map_err(tls_err)?;
            let deadline = tokio::time::Instant::now() + timeout;
            let tls = loop {
                let attempt = async {
                    let tcp = TcpStream::connect(&m.address).await?;
                    connector.connect(name.clone(), tcp).await
                };
                match attempt.await {
                    Ok(t) => break t,
                    Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        return Err(Error::format(
                            "network",
                            format!("party {} at {} unreachable: {e}", m.index, m.address),
                        ))
                    }
                }
            };
            let peer = peer_digest(tls.get_ref().1);
            if peer.as_ref() != Some(&m.tls_cert_sha256) {
                return Err(Error::format(
                    "network",
                    format!(
                        "party {} presented a certificate other than its pinned one",
                        m.index
                    ),
                ));
            }
            let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
            let mut tls = tls;
            tokio::spawn(async move {
                if write_frame(&mut tls, &me.to_be_bytes()).await.is_err() {
                    return;
                }
                while let Some(frame) = wrx.recv().await {
                    if write_frame(&mut tls, &frame).await.is_err() {
                        return;
                    }
                }
                let _ = tls.shutdown().await;
            });
            outs.insert(m.index, wtx);
        }
        Ok(Mesh {
            me,
            session,
            identity: secrets.identity.clone(),
            outs,
            rx,
            held: Vec::new(),
            stash: VecDeque::new(),
        })
    }

    /// Sends `m` to member `to`, or to every other member.
    pub(crate) fn send(&self, to: Option<u16>, m: &Message) {
        let frame = signed_envelope(&self.session, KIND_MESSAGE, &m.to_bytes(), &self.identity);
        self.send_frame(to, frame);
    }

    /// Sends this member's signature over the outcome to every other member.
    fn send_signature(&self, sig: &[u8; 64]) {
        let frame = signed_envelope(&self.session, KIND_SIGNATURE, sig, &self.identity);
        self.send_frame(None, frame);
    }

    fn send_frame(&self, to: Option<u16>, frame: Vec<u8>) {
        match to {
            None => {
                for o in self.outs.values() {
                    let _ = o.send(frame.clone());
                }
            }
            Some(p) if p == self.me => {}
            Some(p) => {
                if let Some(o) = self.outs.get(&p) {
                    let _ = o.send(frame);
                }
            }
        }
    }

    /// The next message, signature or fault: `Err` once `deadline` passes, `Ok(None)` if every
    /// connection closed. Echoes and evidence are held for [`Mesh::echo_round`].
    pub(crate) async fn recv_timeout(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> core::result::Result<Option<Inbound>, tokio::time::error::Elapsed> {
        if let Some(i) = self.stash.pop_front() {
            return Ok(Some(i));
        }
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await? {
                Some(i @ (Inbound::Echo(..) | Inbound::Evidence(..))) => self.held.push(i),
                other => return Ok(other),
            }
        }
    }

    /// The envelope this member signs for `m` (what its peers receive and keep).
    pub(crate) fn signed(&self, m: &Message) -> Signed {
        let payload = m.to_bytes();
        let signature = self
            .identity
            .sign(&envelope_bytes(&self.session, KIND_MESSAGE, &payload))
            .to_bytes();
        Signed {
            from: self.me,
            signature,
            payload,
        }
    }

    /// The echo round of phase `tag`: broadcasts a signed hash of every broadcast in `received`
    /// (keyed by its sender's mesh index, this member's own included) and collects the echoes
    /// of every other one of `members`. Where an echo disagrees, both sides send their signed
    /// copy of that broadcast to all, so every honest member ends up holding two different
    /// broadcasts signed by the equivocating sender and names it. A member whose echo
    /// disagrees but who cannot show the broadcast it claims (or shows ours) is named instead;
    /// so is one that does not echo within `timeout`. Messages and signatures that arrive
    /// meanwhile are kept for [`Mesh::recv_timeout`].
    pub(crate) async fn echo_round(
        &mut self,
        tag: u64,
        received: &BTreeMap<u16, Signed>,
        members: &[u16],
        timeout: Duration,
        round: Round,
    ) -> Result<()> {
        let mine = Echo {
            tag,
            hashes: received.iter().map(|(f, s)| (*f, s.hash())).collect(),
        };
        let frame = signed_envelope(&self.session, KIND_ECHO, &mine.to_bytes(), &self.identity);
        self.send_frame(None, frame);
        let others: Vec<u16> = members.iter().copied().filter(|m| *m != self.me).collect();
        let mut echoed: BTreeMap<u16, Echo> = BTreeMap::new();
        // (member, sender): the member's echo disagreed with ours on the sender's broadcast, and
        // it has not shown its copy yet. Every dispute ends the round with a culprit.
        let mut disputed: std::collections::BTreeSet<(u16, u16)> = Default::default();
        let mut shown: Vec<u16> = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut held = std::mem::take(&mut self.held).into_iter();
        loop {
            let settled = others.iter().all(|o| echoed.contains_key(o)) && disputed.is_empty();
            if settled {
                break;
            }
            let item = match held.next() {
                Some(i) => Some(i),
                // `None` at the deadline or once every connection closed.
                None => tokio::time::timeout_at(deadline, self.rx.recv())
                    .await
                    .unwrap_or_default(),
            };
            match item {
                Some(Inbound::Echo(from, e)) if e.tag != tag => {
                    self.held.push(Inbound::Echo(from, e));
                }
                Some(Inbound::Echo(from, e)) => {
                    if echoed.contains_key(&from) {
                        return Err(misbehaviour(from, round, "echoed twice"));
                    }
                    for (sender, h) in &e.hashes {
                        match received.get(sender) {
                            Some(s) if s.hash() == *h => {}
                            Some(s) => {
                                disputed.insert((from, *sender));
                                if !shown.contains(sender) {
                                    shown.push(*sender);
                                    let b = s.to_bytes();
                                    let f = signed_envelope(
                                        &self.session,
                                        KIND_EVIDENCE,
                                        &b,
                                        &self.identity,
                                    );
                                    self.send_frame(None, f);
                                }
                            }
                            None => {
                                return Err(misbehaviour(
                                    from,
                                    round,
                                    format!("echoed a broadcast of member {sender} that is not part of this phase"),
                                ))
                            }
                        }
                    }
                    if let Some(s) = received.keys().find(|s| !e.hashes.contains_key(s)) {
                        return Err(misbehaviour(
                            from,
                            round,
                            format!("its echo omits member {s}'s broadcast"),
                        ));
                    }
                    echoed.insert(from, e);
                }
                Some(Inbound::Evidence(from, copy)) => match received.get(&copy.from) {
                    Some(ours) if ours.conflicts_with(&copy) => {
                        return Err(misbehaviour(
                            copy.from,
                            round,
                            format!(
                                "equivocated: signed two different broadcasts for one round \
                                 (hashes {} and {}; the other copy shown by member {from})",
                                hex::encode(ours.hash()),
                                hex::encode(copy.hash())
                            ),
                        ));
                    }
                    Some(_) if disputed.remove(&(from, copy.from)) => {
                        return Err(misbehaviour(
                            from,
                            round,
                            format!(
                                "its echo disputes member {}'s broadcast, but the copy it shows does not",
                                copy.from
                            ),
                        ));
                    }
                    Some(ours) if ours.payload == copy.payload => {}
                    // Another phase's (an honest member may be ahead of us).
                    _ => self.held.push(Inbound::Evidence(from, copy)),
                },
                Some(Inbound::Fault(from, why)) => return Err(misbehaviour(from, round, why)),
                Some(other @ (Inbound::Message(..) | Inbound::Signature(..))) => {
                    self.stash.push_back(other);
                }
                None => {
                    let absent: Vec<u16> = others
                        .iter()
                        .copied()
                        .filter(|o| !echoed.contains_key(o))
                        .chain(disputed.iter().map(|(m, _)| *m))
                        .collect();
                    return Err(misbehaviour(
                        absent.first().copied().unwrap_or(0),
                        round,
                        format!("echo round timed out: members {absent:?} did not echo, or did not show the broadcast their echo claims"),
                    ));
                }
            }
        }
        self.held.extend(held);
        Ok(())
    }

    /// Signs off: sends this member's signature `mine` over the outcome to all and collects the
    /// others' into `signatures` (which may already hold some that arrived early) until every
    /// one of `members` has signed. A peer's fault is its misbehaviour in `round`; a timeout
    /// after `timeout` is `on_timeout(members that did not sign)`.
    pub(crate) async fn exchange_signatures(
        &mut self,
        mine: [u8; 64],
        signatures: &mut BTreeMap<u16, [u8; 64]>,
        members: &[u16],
        timeout: Duration,
        round: Round,
        on_timeout: impl FnOnce(&[u16]) -> Error,
    ) -> Result<()> {
        signatures.insert(self.me, mine);
        self.send_signature(&mine);
        let deadline = tokio::time::Instant::now() + timeout;
        while !members.iter().all(|m| signatures.contains_key(m)) {
            match self.recv_timeout(deadline).await {
                Ok(Some(Inbound::Signature(from, s))) => {
                    signatures.insert(from, s);
                }
                Ok(Some(Inbound::Fault(from, why))) => return Err(misbehaviour(from, round, why)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let absent: Vec<u16> = members
                        .iter()
                        .copied()
                        .filter(|m| !signatures.contains_key(m))
                        .collect();
                    return Err(on_timeout(&absent));
                }
            }
        }
        Ok(())
    }

    /// Lets the writer tasks drain what was sent.
    pub(crate) async fn finish(self) {
        drop(self.outs);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The error that names `party` as the culprit of `round` (the participant index on the mesh).
pub(crate) fn misbehaviour(party: u16, round: Round, reason: impl Into<String>) -> Error {
    medtech_threshold::Error::Misbehaviour {
        party: PartyIndex(party),
        round,
        reason: reason.into(),
    }
    .into()
}

async fn join_async(
    config: &CeremonyConfig,
    secrets: &LocalSecrets,
    opts: &JoinOptions,
) -> Result<String> {
    let params = config.parameters()?;
    crate::sharefile::refuse_share_files(&opts.out)?;
    let session = params.session();
    let n = params.parties();
    let me = opts.index;
    let mut mesh = Mesh::connect(session, &config.members, me, secrets, opts.round_timeout).await?;
    let send = |m: &Message, mesh: &Mesh, local: &mut VecDeque<Message>| match m.to {
        None => {
            mesh.send(None, m);
            local.push_back(m.clone());
        }
        Some(p) if p.0 == me => local.push_back(m.clone()),
        Some(p) => mesh.send(Some(p.0), m),
    };

    let mut rng = ChaCha20Rng::from_rng(OsRng)
        .map_err(|e| Error::format("random generator", e.to_string()))?;
    let (mut party, first) = Party::new(&params, PartyIndex(me), &mut rng)?;
    let mut local: VecDeque<Message> = VecDeque::new();
    let mut pending: Vec<Message> = Vec::new();
    let mut broadcasts: Vec<Message> = Vec::new();
    // Broadcasts of finished candidate batches, kept as hashes only (see `transcript`).
    let mut earlier: Vec<[u8; 32]> = Vec::new();
    let mut signatures: BTreeMap<u16, [u8; 64]> = BTreeMap::new();
    // The signed envelopes of others' broadcasts not yet echoed: (round, batch, envelope).
    let mut envelopes: Vec<(Round, u32, crate::net::Signed)> = Vec::new();
    let all: Vec<u16> = (1..=n).collect();
    for m in first.broadcast.iter().chain(&first.direct) {
        send(m, &mesh, &mut local);
    }
    let started = std::time::Instant::now();
    let output = loop {
        let (bfrom, dfrom) = party.expects();
        let (round, batch) = (party.round(), party.batch());
        if opts.verbose {
            match round {
                Round::SieveShares => eprintln!(
                    "party {me}: [{:>6.1} s] candidate batch {} ({} pairs)",
                    started.elapsed().as_secs_f64(),
                    batch + 1,
                    params.batch()
                ),
                Round::BiprimeCommit => eprintln!(
                    "party {me}: [{:>6.1} s] a modulus passed the first biprimality test",
                    started.elapsed().as_secs_f64()
                ),
                Round::KeyShares => eprintln!(
                    "party {me}: [{:>6.1} s] modulus accepted; sharing the decryption key",
                    started.elapsed().as_secs_f64()
                ),
                _ => {}
            }
        }
        let deadline = tokio::time::Instant::now() + opts.round_timeout;
        let wanted = |m: &Message| m.round == round && m.batch == batch;
        let complete = |pending: &[Message]| {
            bfrom.iter().all(|p| {
                pending
                    .iter()
                    .any(|m| wanted(m) && m.to.is_none() && m.from == *p)
            }) && dfrom.iter().all(|p| {
                pending
                    .iter()
                    .any(|m| wanted(m) && m.to.is_some() && m.from == *p)
            })
        };
        pending.extend(local.drain(..));
        while !complete(&pending) {
            match mesh.recv_timeout(deadline).await {
                Ok(Some(Inbound::Message(from, m, _))) if m.from.0 != from => {
                    return Err(misbehaviour(from, round, "message names another sender"));
                }
                Ok(Some(Inbound::Message(_, m, env))) => {
                    if m.to.is_none() {
                        envelopes.push((m.round, m.batch, env));
                    }
                    pending.push(m);
                }
                Ok(Some(Inbound::Signature(from, s))) => {
                    signatures.insert(from, s);
                }
                Ok(Some(Inbound::Fault(from, why))) => return Err(misbehaviour(from, round, why)),
                Ok(Some(Inbound::Echo(..) | Inbound::Evidence(..))) => {}
                Ok(None) | Err(_) => {
                    let missing: Vec<u16> = bfrom
                        .iter()
                        .filter(|p| {
                            !pending
                                .iter()
                                .any(|m| wanted(m) && m.to.is_none() && m.from == **p)
                        })
                        .chain(dfrom.iter().filter(|p| {
                            !pending
                                .iter()
                                .any(|m| wanted(m) && m.to.is_some() && m.from == **p)
                        }))
                        .map(|p| p.0)
                        .collect();
                    return Err(misbehaviour(
                        missing.first().copied().unwrap_or(0),
                        round,
                        format!("round {round:?} batch {batch} timed out waiting for parties {missing:?}"),
                    ));
                }
            }
        }
        let (now, later): (Vec<Message>, Vec<Message>) = pending.drain(..).partition(|m| wanted(m));
        pending = later;
        // Broadcast with echo: before this round's broadcasts feed the protocol (and so before
        // any secret or the key depends on them), every party confirms it holds the same ones;
        // an equivocating sender is named by all, with two copies it signed as the evidence.
        let (these, rest): (Vec<_>, Vec<_>) = envelopes
            .drain(..)
            .partition(|(r, b, _)| *r == round && *b == batch);
        envelopes = rest;
        let mut received: BTreeMap<u16, Signed> =
            these.into_iter().map(|(_, _, e)| (e.from, e)).collect();
        for m in now.iter().filter(|m| m.to.is_none() && m.from.0 == me) {
            received.insert(me, mesh.signed(m));
        }
        if !received.is_empty() {
            let tag = (u64::from(round as u8) << 32) | u64::from(batch);
            if let Err(e) = mesh
                .echo_round(tag, &received, &all, opts.round_timeout, round)
                .await
            {
                mesh.finish().await;
                return Err(e);
            }
        }
        // Canonical transcript order: rounds as they happened, senders by index within a round
        // (arrival order differs between parties; the signed transcript must not).
        let mut these: Vec<Message> = now.iter().filter(|m| m.to.is_none()).cloned().collect();
        these.sort_by_key(|m| m.from.0);
        if round == Round::SieveProducts {
            // Kept by hash only (see `transcript::split_batches`).
            earlier.extend(
                these
                    .iter()
                    .map(|m| crate::transcript::message_hash(&m.to_bytes())),
            );
        } else {
            broadcasts.extend(these);
        }
        if round == Round::SieveShares && batch > 0 {
            // A new batch began: the previous ones decided nothing about the key.
            let (old, keep): (Vec<Message>, Vec<Message>) = broadcasts
                .drain(..)
                .partition(|m| m.round < Round::KeyShares && m.batch < batch);
            earlier.extend(
                old.iter()
                    .map(|m| crate::transcript::message_hash(&m.to_bytes())),
            );
            broadcasts = keep;
        }
        match party.receive(now, &mut rng)? {
            Step::Continue(p, out) => {
                party = *p;
                for m in out.broadcast.iter().chain(&out.direct) {
                    send(m, &mesh, &mut local);
                }
            }
            Step::Done(o) => break *o,
        }
    };

    // Every party saw the same broadcasts; sign the transcript head and the key, collect all.
    let key = output.key.clone();
    let unsigned =
        Transcript::build_with(&params, &broadcasts, &key, config.identities(), Vec::new());
    let head: [u8; 32] = unhex("transcript hash", &unsigned.transcript_hash)?
        .try_into()
        .map_err(|_| Error::format("transcript", "hash"))?;
    let my_sig = secrets
        .identity
        .sign(&crate::transcript::signed_bytes(&head, &key.fingerprint()));
    mesh.exchange_signatures(
        my_sig.to_bytes(),
        &mut signatures,
        &all,
        opts.round_timeout,
        Round::Reshare,
        |_| Error::format("network", "timed out collecting transcript signatures"),
    )
    .await?;
    let records = signatures
        .iter()
        .map(|(p, s)| SignatureRecord {
            party: *p,
            signature: hex::encode(s),
        })
        .collect();
    let transcript =
        Transcript::build_with(&params, &broadcasts, &key, config.identities(), records);
    let transcript_json = serde_json::to_vec_pretty(&transcript)
        .map_err(|e| Error::format("transcript", e.to_string()))?;
    verify(&transcript_json, Some(&config.identities()), Some(&key)).require("transcript")?;
    // Let the writer tasks drain, then write the outputs.
    mesh.finish().await;
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write(&out.join("transcript.json"), &transcript_json, false)?;
    write_key_and_share(out, &key, Some(&output.share), opts.passphrase.as_ref())?;
    Ok(hex::encode(key.fingerprint()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A 3-member (t = 2) 512-bit ceremony configuration on loopback ports, with each member's
    /// secrets directory.
    fn loopback(dir: &Path) -> (CeremonyConfig, Vec<PathBuf>) {
        let mut members = Vec::new();
        let mut dirs = Vec::new();
        for i in 1..=3u16 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = dir.join(format!("keys-{i}"));
            members.push(
                keygen(
                    &d,
                    i,
                    &format!("hospital-{i}"),
                    &format!("127.0.0.1:{port}"),
                )
                .unwrap(),
            );
            dirs.push(d);
        }
        let config = CeremonyConfig {
            format: "medtech-ceremony-config/1".into(),
            bits: 512,
            threshold: 2,
            session_nonce: "0e".into(),
            batch: None,
            members,
        };
        (config, dirs)
    }

    #[tokio::test]
    async fn a_huge_length_header_alone_commits_no_memory() {
        // A peer announces a frame just under the limit, sends 10 bytes and stops.
        let mut wire = ((MAX_FRAME - 1) as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&[7u8; 10]);
        let mut buf = Vec::new();
        let r = read_frame_into(&mut wire.as_slice(), &mut buf).await;
        assert!(r.is_err(), "a truncated frame is an error");
        assert!(
            buf.capacity() <= 2 * FRAME_STEP,
            "allocated {} bytes for 10 received",
            buf.capacity()
        );
    }

    fn culprits(e: &Error) -> Vec<u16> {
        match e {
            Error::Threshold(t) => t.culprits().iter().map(|p| p.0).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn an_equivocating_party_in_join_is_named_by_every_honest_party() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, dirs) = loopback(tmp.path());
        let params = config.parameters().unwrap();
        // Party 1 starts two instances of the protocol and sends party 2 the first one's
        // opening broadcast, party 3 the other's (each well formed on its own), with the direct
        // messages that go with each; then it stays connected and silent.
        let evil = {
            let (config, dir) = (config.clone(), dirs[0].clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async move {
                    let secrets = load_secrets(&dir).unwrap();
                    let mut mesh = Mesh::connect(
                        params.session(),
                        &config.members,
                        1,
                        &secrets,
                        Duration::from_secs(8),
                    )
                    .await
                    .unwrap();
                    for (victim, seed) in [(2u16, 1u64), (3, 2)] {
                        let mut rng = ChaCha20Rng::seed_from_u64(seed);
                        let (_, first) = Party::new(&params, PartyIndex(1), &mut rng).unwrap();
                        mesh.send(Some(victim), &first.broadcast.unwrap());
                        for m in first
                            .direct
                            .iter()
                            .filter(|m| m.to == Some(PartyIndex(victim)))
                        {
                            mesh.send(Some(victim), m);
                        }
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while let Ok(Some(_)) = mesh.recv_timeout(deadline).await {}
                })
            })
        };
        let honest: Vec<_> = [2u16, 3]
            .into_iter()
            .map(|i| {
                let (config, dir) = (config.clone(), dirs[usize::from(i) - 1].clone());
                let out = tmp.path().join(format!("out-{i}"));
                std::thread::spawn(move || {
                    let secrets = load_secrets(&dir)?;
                    join(
                        &config,
                        &secrets,
                        &JoinOptions {
                            index: i,
                            out,
                            passphrase: None,
                            round_timeout: Duration::from_secs(8),
                            verbose: false,
                        },
                    )
                })
            })
            .collect();
        for (i, h) in [2, 3].into_iter().zip(honest) {
            let e = h
                .join()
                .unwrap()
                .expect_err("an equivocation must stop the ceremony");
            let text = e.to_string();
            assert_eq!(culprits(&e), vec![1], "party {i} must name party 1: {text}");
            assert!(text.contains("equivocated"), "party {i}: {text}");
            assert!(!tmp.path().join(format!("out-{i}/share.json")).exists());
        }
        evil.join().unwrap();
    }
}
