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
use std::sync::atomic::{AtomicU16, Ordering};
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

use crate::echo::{
    envelope_bytes, Action, EchoLog, EchoRound, Evidence, Signed, SignedEcho, Taken, Verdict,
    KIND_ECHO, KIND_MESSAGE,
};
use crate::error::{read, unhex, write, Error, Result};
use crate::transcript::{verify, Identity, SignatureRecord, Transcript};

/// Largest frame accepted: 32 MiB. The largest legitimate message is a batch's sieve shares
/// (M1, direct) or sieve products (M2, broadcast): three 16-byte residues per candidate and
/// sieve group, `48 · batch · 5` bytes — about 7.9 MB at the largest batch a configuration may
/// ask for ([`MAX_BATCH`], the default at 2048 bits), whatever the modulus size; the key stage's
/// messages at 4096 bits are far smaller. So the bound leaves a margin of 4 (test
/// `the_largest_message_of_the_largest_batch_fits_a_frame_with_margin`), and a length header
/// above it is refused before anything is allocated.
pub(crate) const MAX_FRAME: usize = 32 << 20;
/// Largest candidate batch a configuration may set (the messages of a batch grow with it; see
/// [`MAX_FRAME`]).
pub const MAX_BATCH: usize = 1 << 15;
/// How far a frame's buffer may grow ahead of the bytes received.
const FRAME_STEP: usize = 1 << 20;
/// Frames queued for one peer's connection. A party sends one peer at most about `2n + 4`
/// frames before it needs that peer's next message (its round's messages, its echo, the relays
/// of the others' echoes, copies of disputed broadcasts, its signature), so a full queue means
/// the peer stopped reading: it is named rather than buffered without end.
const OUTBOUND_QUEUE: usize = 256;
/// Frames received but not yet taken by the protocol loop; when full, the readers stop reading
/// and TCP pushes back on the senders.
const INBOUND_QUEUE: usize = 64;
const KIND_SIGNATURE: u8 = 2;
/// A copy of another member's signed broadcast, sent when an echo disagrees with ours.
const KIND_EVIDENCE: u8 = 4;
/// Another member's signed echo, relayed so that no member can show different echoes (or
/// none) to different members.
const KIND_ECHO_RELAY: u8 = 5;

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
            if b > MAX_BATCH {
                return Err(Error::format(
                    "ceremony config",
                    format!(
                        "batch of {b} candidates: at most {MAX_BATCH}, so that every message fits a \
                         {} MiB frame",
                        MAX_FRAME >> 20
                    ),
                ));
            }
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
    /// A member's signed echo, from that member or relayed by the first field's member.
    Echo(u16, SignedEcho),
    /// A member's copy of another member's signed broadcast (signature already checked).
    Evidence(u16, Signed),
    /// The peer (named by its pinned certificate) misbehaved.
    Fault(u16, String),
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
    /// Every member's pinned identity key (index − 1).
    keys: Vec<VerifyingKey>,
    outs: BTreeMap<u16, mpsc::Sender<Arc<[u8]>>>,
    /// A peer whose outbound queue overflowed (0: none).
    overflow: Arc<AtomicU16>,
    rx: mpsc::Receiver<Inbound>,
    /// Echoes and evidence that arrived before their echo round.
    held: Vec<Inbound>,
    /// Messages and signatures that arrived during an echo round, for the caller.
    stash: VecDeque<Inbound>,
    /// Every signed echo of the session, to catch a second one for a phase after it ended here.
    log: EchoLog,
    /// Proof of an equivocation, once there is one (written to `evidence.json`).
    proven: Option<Evidence>,
    /// Phases whose echo round ended here: their late echoes (relays) are only logged.
    done: std::collections::BTreeSet<u64>,
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

        let (tx, rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
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
                                    let _ = tx
                                        .send(Inbound::Fault(from, format!("connection: {e}")))
                                        .await;
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
                                    KIND_ECHO => Ok(Inbound::Echo(
                                        from,
                                        SignedEcho {
                                            from,
                                            signature: sig,
                                            echo: crate::echo::Echo::from_bytes(payload)?,
                                        },
                                    )),
                                    KIND_ECHO_RELAY => Ok(Inbound::Echo(
                                        from,
                                        SignedEcho::from_bytes(&session, &keys, payload)?,
                                    )),
                                    KIND_EVIDENCE => Ok(Inbound::Evidence(
                                        from,
                                        Signed::from_bytes(&session, &keys, payload)?,
                                    )),
                                    _ => Err("unknown envelope kind"),
                                }
                            })();
                            let done = item.is_err();
                            let sent = tx
                                .send(item.unwrap_or_else(|e| Inbound::Fault(from, e.into())))
                                .await;
                            if done || sent.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }

        // Client side: one connection to every other member, each behind a writer task.
        let mut outs: BTreeMap<u16, mpsc::Sender<Arc<[u8]>>> = BTreeMap::new();
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
            let (wtx, mut wrx) = mpsc::channel::<Arc<[u8]>>(OUTBOUND_QUEUE);
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
            keys,
            outs,
            overflow: Arc::new(AtomicU16::new(0)),
            rx,
            held: Vec::new(),
            stash: VecDeque::new(),
            log: EchoLog::default(),
            proven: None,
            done: Default::default(),
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
        let frame: Arc<[u8]> = frame.into();
        for (p, o) in &self.outs {
            if to.is_some_and(|t| t != *p) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = o.try_send(frame.clone()) {
                // Reported by the next receive; the first one to overflow is named.
                let _ = self
                    .overflow
                    .compare_exchange(0, *p, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// The fault of a peer whose outbound queue overflowed, if one did.
    fn overflowed(&self) -> Option<Inbound> {
        match self.overflow.load(Ordering::Relaxed) {
            0 => None,
            p => Some(Inbound::Fault(
                p,
                format!("stopped reading: {OUTBOUND_QUEUE} frames to it are queued"),
            )),
        }
    }

    /// Records a signed echo in the session log; a second, different one from the same member
    /// for the same phase is proof against it, kept and returned as that member's fault.
    fn log_echo(&mut self, e: &SignedEcho) -> Option<(u16, String)> {
        let ev = self.log.record(e)?;
        self.act(crate::echo::spread(&ev));
        Some(self.prove(ev))
    }

    /// Sends what the echo state machine asks for, to every other member.
    fn act(&self, actions: Vec<Action>) {
        for a in actions {
            let (kind, payload) = match a {
                Action::Relay(e) => (KIND_ECHO_RELAY, e.to_bytes()),
                Action::Show(c) => (KIND_EVIDENCE, c.to_bytes()),
            };
            let f = signed_envelope(&self.session, kind, &payload, &self.identity);
            self.send_frame(None, f);
        }
    }

    /// Keeps `ev` (the first proof wins) and returns its culprit and the reason.
    fn prove(&mut self, ev: Evidence) -> (u16, String) {
        let named = (ev.culprit(), ev.describe());
        if self.proven.is_none() {
            self.proven = Some(ev);
        }
        named
    }

    /// The proof of an equivocation this member holds, if any.
    pub(crate) fn evidence(&self) -> Option<&Evidence> {
        self.proven.as_ref()
    }

    /// The next message, signature or fault: `Err` once `deadline` passes, `Ok(None)` if every
    /// connection closed. Echoes and evidence are held for [`Mesh::echo_round`].
    pub(crate) async fn recv_timeout(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> core::result::Result<Option<Inbound>, tokio::time::error::Elapsed> {
        if let Some(f) = self.overflowed() {
            return Ok(Some(f));
        }
        if let Some(i) = self.stash.pop_front() {
            return Ok(Some(i));
        }
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await? {
                Some(Inbound::Echo(by, e)) => {
                    if let Some((who, why)) = self.log_echo(&e) {
                        return Ok(Some(Inbound::Fault(who, why)));
                    }
                    if let Some(f) = self.hold(Inbound::Echo(by, e)) {
                        return Ok(Some(f));
                    }
                }
                Some(i @ Inbound::Evidence(..)) => {
                    if let Some(f) = self.hold(i) {
                        return Ok(Some(f));
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Keeps an echo or a copy for a later echo round. An honest member is at most one phase
    /// ahead, so it has at most `2n + 1` such items outstanding (its echo, its relays, its
    /// copies); more from one connection is flooding and names it.
    fn hold(&mut self, i: Inbound) -> Option<Inbound> {
        let by = match &i {
            Inbound::Echo(_, e) if self.done.contains(&e.echo.tag) => return None,
            Inbound::Echo(by, _) | Inbound::Evidence(by, _) => *by,
            _ => 0,
        };
        self.held.push(i);
        let cap = 4 * self.keys.len() + 8;
        if self
            .held
            .iter()
            .filter(|h| matches!(h, Inbound::Echo(b, _) | Inbound::Evidence(b, _) if *b == by))
            .count()
            > cap
        {
            self.held.clear();
            return Some(Inbound::Fault(
                by,
                format!("sent more than {cap} echoes and copies ahead of their round"),
            ));
        }
        None
    }

    /// The envelope this member signs for `m` (what its peers receive and keep).
    pub(crate) fn signed(&self, m: &Message) -> Signed {
        Signed::sign(&self.session, self.me, &self.identity, m.to_bytes())
    }

    /// The echo round of phase `tag` ([`crate::echo`]): sends this member's signed echo of
    /// `received` (every expected broadcast of the phase, keyed by its sender's mesh index,
    /// this member's own included), then feeds the echo state machine what arrives and sends
    /// what it asks for (relays, copies of disputed broadcasts) until it reaches a verdict or
    /// `timeout` passes. A proven equivocation is kept ([`Mesh::evidence`]) and named; a
    /// timeout names the members that did not echo or whose dispute no signed copy settled.
    /// Messages and signatures that arrive meanwhile are kept for [`Mesh::recv_timeout`].
    pub(crate) async fn echo_round(
        &mut self,
        tag: u64,
        received: &BTreeMap<u16, Signed>,
        members: &[u16],
        timeout: Duration,
        round: Round,
    ) -> Result<()> {
        let (mut st, mine) = EchoRound::start(
            &self.session,
            self.me,
            &self.identity,
            tag,
            members,
            received.clone(),
        );
        self.log.record(&mine);
        let frame = signed_envelope(
            &self.session,
            KIND_ECHO,
            &mine.echo.to_bytes(),
            &self.identity,
        );
        self.send_frame(None, frame);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut held = std::mem::take(&mut self.held).into_iter();
        loop {
            match st.verdict().clone() {
                Verdict::Open => {}
                Verdict::Agreed => break,
                Verdict::Proven(ev) => {
                    let (who, why) = self.prove(ev);
                    self.held.extend(held);
                    return Err(misbehaviour(who, round, why));
                }
                Verdict::Fault(who, why) => {
                    self.held.extend(held);
                    return Err(misbehaviour(who, round, why));
                }
            }
            if let Some(Inbound::Fault(who, why)) = self.overflowed() {
                return Err(misbehaviour(who, round, why));
            }
            let item = match held.next() {
                Some(i) => Some(i),
                // `None` at the deadline or once every connection closed.
                None => tokio::time::timeout_at(deadline, self.rx.recv())
                    .await
                    .unwrap_or_default(),
            };
            let (taken, back) = match item {
                Some(Inbound::Echo(by, e)) => {
                    if let Some((who, why)) = self.log_echo(&e) {
                        return Err(misbehaviour(who, round, why));
                    }
                    let t = st.on_echo(e.clone());
                    (t, Inbound::Echo(by, e))
                }
                Some(Inbound::Evidence(by, copy)) => {
                    let t = st.on_copy(copy.clone());
                    (t, Inbound::Evidence(by, copy))
                }
                Some(Inbound::Fault(from, why)) => return Err(misbehaviour(from, round, why)),
                Some(other @ (Inbound::Message(..) | Inbound::Signature(..))) => {
                    self.stash.push_back(other);
                    continue;
                }
                None => {
                    let (culprits, why) = st
                        .on_timeout()
                        .unwrap_or_else(|| (Vec::new(), "echo round timed out".into()));
                    return Err(misbehaviour(
                        culprits.first().copied().unwrap_or(0),
                        round,
                        why,
                    ));
                }
            };
            match taken {
                Taken::OtherPhase => self.held.push(back),
                Taken::Yes(actions) => self.act(actions),
            }
        }
        self.held.extend(held);
        self.done.insert(tag);
        self.held
            .retain(|h| !matches!(h, Inbound::Echo(_, e) if e.echo.tag == tag));
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

    /// Lets the writer tasks drain what was sent and closes the connections.
    pub(crate) async fn finish(&mut self) {
        if self.outs.is_empty() {
            return;
        }
        self.outs.clear();
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
    let me = opts.index;
    let mut mesh = Mesh::connect(session, &config.members, me, secrets, opts.round_timeout).await?;
    let r = join_rounds(&mut mesh, config, secrets, opts, &params).await;
    if r.is_err() {
        keep_evidence(&mesh, &opts.out, session, config.identities())?;
    }
    mesh.finish().await;
    r
}

/// Whether `join` runs its echo rounds: always, except in a build with the measurement-only
/// feature `bench-no-echo` when `MEDTECH_CEREMONY_BENCH_NO_ECHO` is set (to time them).
fn echo_rounds_on() -> bool {
    #[cfg(feature = "bench-no-echo")]
    if std::env::var_os("MEDTECH_CEREMONY_BENCH_NO_ECHO").is_some() {
        return false;
    }
    true
}

/// Writes the proof of an equivocation this member holds, if any, to `out/evidence.json`.
pub(crate) fn keep_evidence(
    mesh: &Mesh,
    out: &Path,
    session: [u8; 32],
    identities: Vec<Identity>,
) -> Result<()> {
    let Some(ev) = mesh.evidence() else {
        return Ok(());
    };
    let file = crate::echo::EvidenceFile::of(ev, &session, identities);
    let json =
        serde_json::to_vec_pretty(&file).map_err(|e| Error::format("evidence", e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write(&out.join("evidence.json"), &json, false)
}

async fn join_rounds(
    mesh: &mut Mesh,
    config: &CeremonyConfig,
    secrets: &LocalSecrets,
    opts: &JoinOptions,
    params: &Parameters,
) -> Result<String> {
    let n = params.parties();
    let me = opts.index;
    #[cfg(test)]
    let address = config
        .members
        .get(usize::from(me).saturating_sub(1))
        .map(|m| m.address.clone())
        .unwrap_or_default();
    let send = |m: &Message, mesh: &Mesh, local: &mut VecDeque<Message>| {
        #[cfg(test)]
        let tampered = {
            let mut m = m.clone();
            hooks::apply(&address, &mut m).then_some(m)
        };
        #[cfg(test)]
        let Some(m) = tampered.as_ref() else {
            return;
        };
        match m.to {
            None => {
                mesh.send(None, m);
                local.push_back(m.clone());
            }
            Some(p) if p.0 == me => local.push_back(m.clone()),
            Some(p) => mesh.send(Some(p.0), m),
        }
    };

    let mut rng = ChaCha20Rng::from_rng(OsRng)
        .map_err(|e| Error::format("random generator", e.to_string()))?;
    let (mut party, first) = Party::new(params, PartyIndex(me), &mut rng)?;
    let mut local: VecDeque<Message> = VecDeque::new();
    let mut pending: Vec<Message> = Vec::new();
    let mut broadcasts: Vec<Message> = Vec::new();
    // Broadcasts of finished candidate batches, kept as hashes only (see `transcript`).
    let mut earlier: Vec<[u8; 32]> = Vec::new();
    let mut signatures: BTreeMap<u16, [u8; 64]> = BTreeMap::new();
    // The signed envelopes of others' broadcasts not yet echoed: (round, batch, envelope).
    let mut envelopes: Vec<(Round, u32, Signed)> = Vec::new();
    let all: Vec<u16> = (1..=n).collect();
    // Direct messages first: on each peer's ordered connection they then arrive before the
    // broadcast, so a member holding a dealer's broadcast knows a missing share was withheld.
    for m in first.direct.iter().chain(&first.broadcast) {
        send(m, mesh, &mut local);
    }
    let started = std::time::Instant::now();
    // Time spent in echo rounds (waiting for the others' echoes included), for the log.
    let mut echo_time = Duration::ZERO;
    let mut echo_phases = 0u32;
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
        // In K1 and K3 a share that never came is complained about in public: the round is
        // complete once every broadcast is in.
        let directs_required = !party.tolerates_missing_directs();
        let complete = |pending: &[Message]| {
            bfrom.iter().all(|p| {
                pending
                    .iter()
                    .any(|m| wanted(m) && m.to.is_none() && m.from == *p)
            }) && (!directs_required
                || dfrom.iter().all(|p| {
                    pending
                        .iter()
                        .any(|m| wanted(m) && m.to.is_some() && m.from == *p)
                }))
        };
        pending.extend(local.drain(..));
        while !complete(&pending) {
            match mesh.recv_timeout(deadline).await {
                Ok(Some(Inbound::Message(from, m, _))) if m.from.0 != from => {
                    return Err(misbehaviour(from, round, "message names another sender"));
                }
                Ok(Some(Inbound::Message(from, m, env))) => {
                    // Bounded buffering: a second message for one round is refused at once (not
                    // when the round comes), and an honest member is never more than a few
                    // rounds ahead (it cannot finish a round without this member's messages of
                    // the rounds that expect them), so more than `MAX_AHEAD` buffered messages
                    // of later rounds name their sender.
                    let same = |p: &Message| {
                        p.from == m.from && p.round == m.round && p.batch == m.batch && p.to == m.to
                    };
                    if pending.iter().any(same) {
                        return Err(misbehaviour(from, round, "sent two messages for one round"));
                    }
                    let ahead = pending
                        .iter()
                        .filter(|p| p.from == m.from && !wanted(p))
                        .count();
                    if !wanted(&m) && ahead >= MAX_AHEAD {
                        return Err(misbehaviour(
                            from,
                            round,
                            format!("sent more than {MAX_AHEAD} messages of later rounds"),
                        ));
                    }
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
        // Only the round's expected broadcasters count (a public set, the same at every honest
        // party); two different broadcasts one of them signed for this round prove on their own.
        let mut received: BTreeMap<u16, Signed> = BTreeMap::new();
        let own = now
            .iter()
            .filter(|m| m.to.is_none() && m.from.0 == me)
            .map(|m| mesh.signed(m));
        for e in these.into_iter().map(|(_, _, e)| e).chain(own) {
            if !bfrom.iter().any(|p| p.0 == e.from) {
                continue;
            }
            if let Some(first) = received.get(&e.from) {
                if first.conflicts_with(&e) {
                    let ev = crate::echo::Evidence::Broadcasts(first.clone(), e);
                    mesh.act(crate::echo::spread(&ev));
                    let (who, why) = mesh.prove(ev);
                    return Err(misbehaviour(who, round, why));
                }
                continue;
            }
            received.insert(e.from, e);
        }
        if !received.is_empty() && echo_rounds_on() {
            let tag = (u64::from(round as u8) << 32) | u64::from(batch);
            let t = std::time::Instant::now();
            mesh.echo_round(tag, &received, &all, opts.round_timeout, round)
                .await?;
            echo_time += t.elapsed();
            echo_phases += 1;
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
                for m in out.direct.iter().chain(&out.broadcast) {
                    send(m, mesh, &mut local);
                }
            }
            Step::Done(o) => break *o,
        }
    };

    if opts.verbose {
        eprintln!(
            "party {me}: [{:>6.1} s] echo rounds: {echo_phases} phases, {:.2} s in all",
            started.elapsed().as_secs_f64(),
            echo_time.as_secs_f64()
        );
    }
    // Every party saw the same broadcasts; sign the transcript head and the key, collect all.
    let key = output.key.clone();
    // First seal the share as pending: a member that never gets every signature keeps it.
    crate::sharefile::refuse_share_files(&opts.out)?;
    crate::sharefile::write_pending(
        &opts.out,
        &key,
        Some(&output.share),
        opts.passphrase.as_ref(),
    )?;
    let unsigned =
        Transcript::build_with(params, &broadcasts, &key, config.identities(), Vec::new());
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
    .await
    .inspect_err(|_| pending_hint(&opts.out))?;
    let records = signatures
        .iter()
        .map(|(p, s)| SignatureRecord {
            party: *p,
            signature: hex::encode(s),
        })
        .collect();
    let transcript =
        Transcript::build_with(params, &broadcasts, &key, config.identities(), records);
    let transcript_json = serde_json::to_vec_pretty(&transcript)
        .map_err(|e| Error::format("transcript", e.to_string()))?;
    verify(&transcript_json, Some(&config.identities()), Some(&key)).require("transcript")?;
    // Let the writer tasks drain, then write the outputs.
    mesh.finish().await;
    crate::sharefile::promote_pending(&opts.out, "transcript.json", &transcript_json)?;
    Ok(hex::encode(key.fingerprint()))
}

/// Tells the operator where its share is when the signatures did not all come.
pub(crate) fn pending_hint(out: &Path) {
    eprintln!(
        "the sealed share is kept in {}; when a member has the finished transcript, run \
         `medtech-ceremony finish --config CONFIG --out {} --transcript TRANSCRIPT` to check it \
         and install the share",
        out.join(crate::sharefile::PENDING).display(),
        out.display()
    );
}

/// How many messages of later rounds one member may have buffered here (see `join_rounds`): an
/// honest member is at most a round or two ahead, with a broadcast and a direct message each.
const MAX_AHEAD: usize = 8;

/// Test hooks: a member that alters what it sends, after its protocol state machine made it
/// and before the transport signs it — how the transport tests play a cheating hospital.
#[cfg(test)]
pub(crate) mod hooks {
    use std::sync::Mutex;

    use medtech_threshold::dkg::Message;

    /// Alters one outgoing message; `false` withholds it.
    pub(crate) type Tamper = fn(&mut Message) -> bool;

    /// Keyed by the member's listening address (unique per test; sessions are not).
    static TAMPERS: Mutex<Vec<(String, Tamper)>> = Mutex::new(Vec::new());

    /// Makes the member listening at `address` apply `tamper` to everything it sends, until the
    /// returned guard is dropped (so that a later test that gets the same port back is not
    /// affected).
    #[must_use]
    pub(crate) fn set(address: &str, tamper: Tamper) -> Guard {
        if let Ok(mut t) = TAMPERS.lock() {
            t.push((address.to_string(), tamper));
        }
        Guard(address.to_string())
    }

    /// Removes its hook when dropped.
    pub(crate) struct Guard(String);

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Ok(mut t) = TAMPERS.lock() {
                t.retain(|(a, _)| *a != self.0);
            }
            if let Ok(mut l) = LATE_MEMBERS.lock() {
                l.retain(|a| *a != self.0);
            }
            if let Ok(mut l) = LATE.lock() {
                l.retain(|(a, _, _)| *a != self.0);
            }
        }
    }

    /// Messages a hook chose to send late, by member address: `(address, recipient, message)`.
    static LATE: Mutex<Vec<(String, u16, Message)>> = Mutex::new(Vec::new());

    /// Members whose withheld messages are sent late rather than never.
    static LATE_MEMBERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// [`set`], with the messages the hook withholds sent later instead of never (the re-sharing
    /// sends them at the start of R1b).
    #[must_use]
    pub(crate) fn set_late(address: &str, tamper: Tamper) -> Guard {
        if let Ok(mut l) = LATE_MEMBERS.lock() {
            l.push(address.to_string());
        }
        set(address, tamper)
    }

    /// Keeps withheld `m` (for `to`) to be sent later, if the member at `address` sends late
    /// (see [`set_late`], [`take_late`]).
    pub(crate) fn send_late(address: &str, to: u16, m: Message) {
        let late = LATE_MEMBERS
            .lock()
            .is_ok_and(|l| l.iter().any(|a| a == address));
        if late {
            if let Ok(mut l) = LATE.lock() {
                l.push((address.to_string(), to, m));
            }
        }
    }

    /// The messages the member at `address` was to send late: `(recipient, message)`.
    pub(crate) fn take_late(address: &str) -> Vec<(u16, Message)> {
        let Ok(mut l) = LATE.lock() else {
            return Vec::new();
        };
        let (mine, rest): (Vec<_>, Vec<_>) = l.drain(..).partition(|(a, _, _)| a == address);
        *l = rest;
        mine.into_iter().map(|(_, to, m)| (to, m)).collect()
    }

    /// Applies the hook of the member at `address`, if any; `false`: withhold the message.
    pub(crate) fn apply(address: &str, m: &mut Message) -> bool {
        let found = TAMPERS
            .lock()
            .ok()
            .and_then(|t| t.iter().find(|(a, _)| a == address).map(|(_, f)| *f));
        found.is_none_or(|f| f(m))
    }
}

/// Assertions the transport tests of `join` and `reshare` share.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use crate::error::{Error, Result};

    /// The members an error names (none unless it is a protocol fault).
    pub(crate) fn culprits(e: &Error) -> Vec<u16> {
        match e {
            Error::Threshold(t) => t.culprits().iter().map(|p| p.0).collect(),
            _ => Vec::new(),
        }
    }

    /// Every member of `honest` stopped (`results` in member order), naming `culprit` in
    /// `round`, and wrote no share to `tmp/out-i`.
    pub(crate) fn assert_named_by(
        results: &[Result<String>],
        honest: &[u16],
        culprit: u16,
        round: &str,
        tmp: &Path,
    ) {
        for &i in honest {
            let e = results[usize::from(i) - 1]
                .as_ref()
                .expect_err("the run must stop");
            let text = e.to_string();
            assert_eq!(
                culprits(e),
                vec![culprit],
                "member {i} must name member {culprit}: {text}"
            );
            assert!(text.contains(round), "member {i}: {text}");
            assert!(!tmp.join(format!("out-{i}/share.json")).exists());
        }
    }

    /// Every member finished, with one key; returns its fingerprint.
    pub(crate) fn assert_one_key(results: &[Result<String>]) -> String {
        let fps: Vec<&String> = results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.as_ref()
                    .unwrap_or_else(|e| panic!("member {} failed: {e}", i + 1))
            })
            .collect();
        assert!(fps.iter().all(|f| *f == fps[0]));
        fps[0].clone()
    }
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

    #[tokio::test]
    async fn a_length_header_over_the_bound_is_refused_before_any_allocation() {
        let wire = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        let mut buf = Vec::new();
        let r = read_frame_into(&mut wire.as_slice(), &mut buf).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn a_batch_whose_messages_would_exceed_the_frame_bound_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut config, _) = loopback(tmp.path());
        config.batch = Some(MAX_BATCH);
        config.parameters().unwrap();
        config.batch = Some(MAX_BATCH + 1);
        let e = config.parameters().unwrap_err().to_string();
        assert!(e.contains("fits a 32 MiB frame"), "{e}");
    }

    #[test]
    fn the_largest_message_of_the_largest_batch_fits_a_frame_with_margin() {
        // Sieve messages depend on the batch and the sieve groups, not on the modulus size: a
        // 512-bit run with the largest batch sends the sieve messages a 2048-bit run does.
        let params = Parameters::new(512, 3, 2, [3; 32])
            .unwrap()
            .with_batch(MAX_BATCH)
            .unwrap();
        let rngs: Vec<ChaCha20Rng> = (0..3).map(ChaCha20Rng::seed_from_u64).collect();
        let mut largest = (0usize, Round::SieveShares);
        let mut record = |m: &mut Message| {
            let len = m.to_bytes().len();
            if len > largest.0 {
                largest = (len, m.round);
            }
        };
        let _ = medtech_threshold::dkg::sim::run_in_process(&params, rngs, Some(&mut record));
        let (len, round) = largest;
        eprintln!("largest message: {len} bytes ({round:?})");
        assert!(len > 1 << 20, "the sieve messages were not measured");
        assert!(
            4 * len <= MAX_FRAME,
            "{len} bytes ({round:?}): less than 4× margin"
        );
    }

    use super::testing::{assert_named_by, assert_one_key, culprits};

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
            // The proof it leaves convinces anyone holding the pinned identity keys.
            let ev = std::fs::read(tmp.path().join(format!("out-{i}/evidence.json")))
                .unwrap_or_else(|_| panic!("party {i} left no evidence.json"));
            let (v, who) = crate::echo::verify_evidence(&ev, Some(&config.identities()));
            assert!(v.ok(), "party {i}'s evidence: {:?}", v.checks);
            assert_eq!(who, Some(1));
        }
        evil.join().unwrap();
    }

    /// Runs `join` for every member of `config` in its own thread (own runtime, own TLS
    /// connections: the real transport, one process); returns each member's result.
    fn join_all(
        tmp: &Path,
        config: &CeremonyConfig,
        dirs: &[PathBuf],
        timeout: Duration,
    ) -> Vec<Result<String>> {
        let handles: Vec<_> = (1..=3u16)
            .map(|i| {
                let (config, dir) = (config.clone(), dirs[usize::from(i) - 1].clone());
                let out = tmp.join(format!("out-{i}"));
                std::thread::spawn(move || {
                    let secrets = load_secrets(&dir)?;
                    join(
                        &config,
                        &secrets,
                        &JoinOptions {
                            index: i,
                            out,
                            passphrase: None,
                            round_timeout: timeout,
                            verbose: false,
                        },
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    /// Issue 30 §1 over the real transport: member 2 sends member 3 a K1 β share off by one
    /// and, when 3 complains, answers with a wrong share too. Before K1b–K1c member 3 stopped
    /// alone naming 2, and member 1 — waiting for 3's K2 broadcast — timed out and named the
    /// victim, 3. Now both honest members name 2, in K1c, and write no share.
    #[test]
    fn a_dealer_that_sends_a_bad_key_share_is_named_by_every_honest_member_not_its_victim() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, dirs) = loopback(tmp.path());
        let _hook = hooks::set(&config.members[1].address, |m| {
            let bad_share = m.round == Round::KeyShares && m.to == Some(PartyIndex(3));
            let bad_answer = m.round == Round::KeyAnswers && m.int_count_for_tests() > 0;
            if bad_share || bad_answer {
                m.tweak_int_for_tests(0, 1);
            }
            true
        });
        let results = join_all(tmp.path(), &config, &dirs, Duration::from_secs(30));
        assert_named_by(&results, &[1, 3], 2, "KeyAnswers", tmp.path());
    }

    /// Attacker review of the complaint rounds, finding 2: member 2 *withholds* member 3's K1
    /// share (sends everything else) and does not answer 3's complaint. Before, member 3 timed
    /// out and named 2 on its own host, while member 1 — which had every message it needed —
    /// went on to the echo round and named 3 for not echoing. Now 3 complains about the missing
    /// share as about a bad one, and both honest members name 2 in K1c.
    #[test]
    fn a_withheld_key_share_is_complained_about_and_its_dealer_named_by_every_honest_member() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, dirs) = loopback(tmp.path());
        let _hook = hooks::set(&config.members[1].address, |m| {
            if m.round == Round::KeyAnswers && m.int_count_for_tests() > 0 {
                m.tweak_int_for_tests(0, 1);
            }
            !(m.round == Round::KeyShares && m.to == Some(PartyIndex(3)))
        });
        let results = join_all(tmp.path(), &config, &dirs, Duration::from_secs(30));
        assert_named_by(&results, &[1, 3], 2, "KeyAnswers", tmp.path());
    }

    /// The same bad share, answered correctly in public: the complaint repairs the run and
    /// every member ends with the same key, as if nothing had happened.
    #[test]
    fn a_bad_key_share_answered_in_public_does_not_stop_the_ceremony() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, dirs) = loopback(tmp.path());
        let _hook = hooks::set(&config.members[1].address, |m| {
            if m.round == Round::KeyShares && m.to == Some(PartyIndex(3)) {
                m.tweak_int_for_tests(0, 1);
            }
            true
        });
        let results = join_all(tmp.path(), &config, &dirs, Duration::from_secs(30));
        assert_one_key(&results);
        // A finished run leaves no pending share behind.
        for i in 1..=3 {
            assert!(!tmp.path().join(format!("out-{i}/pending")).exists());
        }
        a_member_without_every_signature_finishes_later(tmp.path(), &config);
    }

    /// Issue 30 §5: the last signer can withhold its signature while holding the finished
    /// transcript. A member that never got every signature keeps its sealed share in
    /// `out/pending` and installs it with `finish` once handed the finished transcript —
    /// refused for a tampered one, accepted for the real one. (Here member 1's finished
    /// outputs are moved back to `pending/` to play that member.)
    fn a_member_without_every_signature_finishes_later(tmp: &Path, config: &CeremonyConfig) {
        let out = tmp.join("unfinished");
        let pending = out.join(crate::sharefile::PENDING);
        std::fs::create_dir_all(&pending).unwrap();
        for f in ["threshold-key.json", "share.json", "share.key"] {
            std::fs::rename(tmp.join("out-1").join(f), pending.join(f)).unwrap();
        }
        let config_json = serde_json::to_vec(config).unwrap();
        let transcript = std::fs::read(tmp.join("out-2/transcript.json")).unwrap();
        let mut tampered: serde_json::Value = serde_json::from_slice(&transcript).unwrap();
        tampered["signatures"].as_array_mut().unwrap().pop();
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert!(crate::sharefile::finish(&out, &config_json, &tampered).is_err());
        assert!(
            pending.join("share.json").exists(),
            "a refused finish keeps the share"
        );
        let fp = crate::sharefile::finish(&out, &config_json, &transcript).unwrap();
        assert!(!pending.exists());
        let key = crate::files::load_key(&out.join("threshold-key.json")).unwrap();
        assert_eq!(fp, hex::encode(key.fingerprint()));
        let unlock =
            crate::sharefile::parse_key_file(&std::fs::read(out.join("share.key")).unwrap())
                .unwrap();
        crate::sharefile::open(
            &std::fs::read(out.join("share.json")).unwrap(),
            &key,
            &crate::sharefile::Unlock::Key(&unlock),
        )
        .unwrap();
        assert!(out.join("transcript.json").exists());
    }

    #[test]
    fn a_tls12_client_hello_is_refused() {
        // A ClientHello without the supported_versions extension offers TLS 1.2 only.
        let tmp = tempfile::tempdir().unwrap();
        let (config, dirs) = loopback(tmp.path());
        let params = config.parameters().unwrap();
        let addr = config.members[0].address.clone();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let reply = rt.block_on(async move {
            let secrets = load_secrets(&dirs[0]).unwrap();
            // Member 1 listens (and keeps dialling the absent others in the background).
            let members = config.members.clone();
            tokio::spawn(async move {
                let _ = Mesh::connect(
                    params.session(),
                    &members,
                    1,
                    &secrets,
                    Duration::from_secs(5),
                )
                .await;
            });
            let mut tcp = loop {
                match TcpStream::connect(&addr).await {
                    Ok(t) => break t,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let mut body = vec![0x03, 0x03];
            body.extend_from_slice(&[0x11; 32]); // random
            body.push(0); // no session id
            body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE GCM suites
            body.extend_from_slice(&[0x01, 0x00]); // null compression
            let exts: &[u8] = &[
                0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d, // supported_groups: x25519
                0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
                0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms
            ];
            body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
            body.extend_from_slice(exts);
            let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
            hs.extend_from_slice(&body);
            let mut rec = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
            rec.extend_from_slice(&hs);
            tcp.write_all(&rec).await.unwrap();
            let mut reply = vec![0u8; 7];
            tcp.read_exact(&mut reply).await.unwrap();
            reply
        });
        // An alert record (21), fatal (2), protocol_version (70): no ServerHello.
        assert_eq!(reply[0], 0x15, "expected an alert, got {reply:?}");
        assert_eq!(
            &reply[5..7],
            &[2, 70],
            "expected protocol_version, got {reply:?}"
        );
    }
}
