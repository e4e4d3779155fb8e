//! A Fabric MSP identity: an X.509 certificate issued by an organization's CA, its MSP ID, and
//! the ECDSA P-256 key that signs proposals, transactions and commit-status requests.
//!
//! Fabric signs `SHA-256(message)` with ECDSA P-256 and accepts only *low-S* signatures in DER
//! (an `s` above n/2 is rejected as malleable); [`MspIdentity::sign`] normalizes `s` and
//! [`verify_signature`] refuses high-S ones, as a peer does.

use std::fmt;

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey as _;
use prost::Message as _;

use medtech_protos::fabric::SerializedIdentity;

use super::FabricError;

/// A client identity in a Fabric organization (MSP). The signing key is zeroized on drop (p256's
/// `SigningKey` does so) and never printed.
#[derive(Clone)]
pub struct MspIdentity {
    msp_id: String,
    cert_pem: String,
    key: SigningKey,
    serialized: Vec<u8>,
}

impl MspIdentity {
    /// An identity from its MSP ID, its PEM certificate, and its PEM private key (PKCS#8
    /// `PRIVATE KEY`, as in a Fabric MSP `keystore/`, or SEC1 `EC PRIVATE KEY`). The key must be
    /// the certificate's.
    pub fn from_pem(msp_id: &str, cert_pem: &str, key_pem: &str) -> Result<Self, FabricError> {
        if msp_id.is_empty() {
            return Err(FabricError::Identity("empty MSP ID".into()));
        }
        let secret = p256::SecretKey::from_pkcs8_pem(key_pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(key_pem))
            .map_err(|_| {
                FabricError::Identity(
                    "private key is neither a PKCS#8 nor a SEC1 PEM P-256 key".into(),
                )
            })?;
        let key = SigningKey::from(&secret);
        let cert_key = certificate_key(cert_pem.as_bytes())?;
        if &cert_key != key.verifying_key() {
            return Err(FabricError::Identity(
                "the private key does not match the certificate".into(),
            ));
        }
        let serialized = SerializedIdentity {
            mspid: msp_id.to_owned(),
            id_bytes: cert_pem.as_bytes().to_vec(),
        }
        .encode_to_vec();
        Ok(MspIdentity {
            msp_id: msp_id.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key,
            serialized,
        })
    }

    /// Reads the certificate and key from files.
    pub fn from_files(
        msp_id: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, FabricError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map_err(|e| FabricError::Identity(format!("reading {}: {e}", p.display())))
        };
        Self::from_pem(msp_id, &read(cert)?, &read(key)?)
    }

    /// The MSP ID.
    pub fn msp_id(&self) -> &str {
        &self.msp_id
    }

    /// The PEM certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The serialized `msp.SerializedIdentity` (the `creator` of every header it signs).
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }

    /// ECDSA P-256 over `SHA-256(message)`, low-S, DER-encoded.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(message);
        let sig = sig.normalize_s().unwrap_or(sig);
        sig.to_der().as_bytes().to_vec()
    }
}

impl fmt::Debug for MspIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MspIdentity")
            .field("msp_id", &self.msp_id)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The P-256 public key of a PEM certificate.
pub fn certificate_key(cert_pem: &[u8]) -> Result<VerifyingKey, FabricError> {
    let bad = |m: &str| FabricError::Identity(format!("certificate: {m}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem).map_err(|_| bad("not PEM"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| bad("not an X.509 certificate"))?;
    let spki = cert.public_key();
    VerifyingKey::from_sec1_bytes(&spki.subject_public_key.data)
        .map_err(|_| bad("public key is not a P-256 point"))
}

/// Decodes a serialized identity and checks `signature` (DER, low-S) over `message` with its
/// certificate's key, as a peer checks a creator's signature.
pub fn verify_signature(
    serialized_identity: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<SerializedIdentity, FabricError> {
    let id = SerializedIdentity::decode(serialized_identity)
        .map_err(|e| FabricError::Identity(format!("serialized identity: {e}")))?;
    let key = certificate_key(&id.id_bytes)?;
    let sig = Signature::from_der(signature)
        .map_err(|_| FabricError::BadSignature("not a DER ECDSA signature".into()))?;
    if sig.normalize_s().is_some() {
        return Err(FabricError::BadSignature("high-S signature".into()));
    }
    key.verify(message, &sig)
        .map_err(|_| FabricError::BadSignature(format!("does not verify for {}", id.mspid)))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn test_identity(msp: &str) -> MspIdentity {
        let (cert, key) = super::super::sim::issue_identity(msp, "client").unwrap();
        MspIdentity::from_pem(msp, &cert, &key).unwrap()
    }

    #[test]
    fn signatures_verify_and_are_low_s() {
        let id = test_identity("Org1MSP");
        for i in 0..64u32 {
            let msg = i.to_be_bytes();
            let sig = id.sign(&msg);
            let parsed = Signature::from_der(&sig).unwrap();
            assert!(parsed.normalize_s().is_none(), "high-S signature emitted");
            verify_signature(id.serialized(), &msg, &sig).unwrap();
        }
    }

    #[test]
    fn high_s_signature_is_refused() {
        let id = test_identity("Org1MSP");
        let msg = b"proposal bytes";
        let sig = Signature::from_der(&id.sign(msg)).unwrap();
        // s' = n - s is the same signature's malleable twin.
        let (r, s) = sig.split_scalars();
        let high = Signature::from_scalars(r, -*s).unwrap();
        assert!(high.normalize_s().is_some());
        let err = verify_signature(id.serialized(), msg, high.to_der().as_bytes()).unwrap_err();
        assert!(matches!(err, FabricError::BadSignature(m) if m.contains("high-S")));
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let (cert, _) = super::super::sim::issue_identity("Org1MSP", "a").unwrap();
        let (_, key) = super::super::sim::issue_identity("Org1MSP", "b").unwrap();
        let err = MspIdentity::from_pem("Org1MSP", &cert, &key).unwrap_err();
        assert!(err.to_string().contains("does not match"));
    }

    #[test]
    fn garbage_pem_gets_a_clear_error() {
        let err = MspIdentity::from_pem("Org1MSP", "not a cert", "not a key").unwrap_err();
        assert!(err.to_string().contains("private key"));
        assert!(!format!("{:?}", test_identity("Org1MSP")).contains("PRIVATE"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn tweaked_message_or_signature_fails(msg in proptest::collection::vec(any::<u8>(), 1..200),
                                              flip in any::<usize>()) {
            let id = test_identity("Org1MSP");
            let sig = id.sign(&msg);
            let mut m2 = msg.clone();
            let i = flip % m2.len();
            m2[i] ^= 1;
            prop_assert!(verify_signature(id.serialized(), &m2, &sig).is_err());
            let mut s2 = sig.clone();
            let j = flip % s2.len();
            s2[j] ^= 0x40;
            prop_assert!(verify_signature(id.serialized(), &msg, &s2).is_err());
        }
    }
}
