//! TLS material for the committee transport: a committee CA and one certificate per member,
//! generated with rcgen (ECDSA P-256). Members authenticate each other with these certificates
//! (mutual TLS), and each member's certificate digest is pinned in the Raft membership, so a
//! certificate issued by the committee CA to one member cannot be used to speak for another.
//!
//! Real deployments may bring their own CA; only the PEM files and the digests matter.

use std::fmt;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sha2::{Digest, Sha256};

/// Errors making or reading TLS material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen failed.
    #[error("certificate generation: {0}")]
    Generate(String),
    /// A PEM file does not hold what it should.
    #[error("bad PEM: {0}")]
    Pem(String),
}

fn gen(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// A committee CA (its key is secret: redacted in `Debug`).
pub struct CommitteeCa {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl fmt::Debug for CommitteeCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitteeCa {{ key: <redacted> }}")
    }
}

/// One member's certificate and key (PEM; the key is redacted in `Debug`).
#[derive(Clone)]
pub struct NodeTls {
    /// The committee CA certificate.
    pub ca_pem: String,
    /// This member's certificate.
    pub cert_pem: String,
    /// This member's private key.
    pub key_pem: String,
    /// SHA-256 of the certificate (DER), lowercase hex: what the membership pins.
    pub cert_sha256: String,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeTls {{ cert_sha256: {}, key: <redacted> }}",
            self.cert_sha256
        )
    }
}

impl CommitteeCa {
    /// A fresh CA named `name`.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().map_err(gen)?;
        let cert_pem = params.self_signed(&key).map_err(gen)?.pem();
        Ok(CommitteeCa {
            params,
            key,
            cert_pem,
        })
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for member `name` (its DNS name in the certificate, which clients
    /// check), valid for server and client authentication.
    pub fn issue(&self, name: &str) -> Result<NodeTls, TlsError> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(gen)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(gen)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(gen)?;
        Ok(NodeTls {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_sha256: hex::encode(Sha256::digest(cert.der())),
        })
    }
}

/// SHA-256 (hex) of a certificate given as DER.
pub fn cert_digest(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// SHA-256 (hex) of the first certificate in a PEM text.
pub fn pem_cert_digest(pem: &str) -> Result<String, TlsError> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    if body.is_empty() {
        return Err(TlsError::Pem("no CERTIFICATE block".into()));
    }
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    Ok(cert_digest(&der))
}
