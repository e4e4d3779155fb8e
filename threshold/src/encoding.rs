//! Canonical, versioned byte encodings.
//!
//! Every encoded object starts with the 3-byte magic `MTC`, a one-byte type tag and a one-byte
//! format version. Fields follow in a fixed order: integers as a `u32` big-endian length and a
//! minimal unsigned big-endian magnitude (no leading zero byte; zero is empty), so that each value
//! has exactly one encoding — transcripts and signatures hash these bytes. Decoding checks the
//! header, every length against a per-field limit before allocating, canonical form, and that no
//! bytes trail; hostile input gets an [`Error`], never a panic.

use crate::bigint::Int;
use crate::error::{Error, Result};

pub(crate) const MAGIC: &[u8; 3] = b"MTC";
/// The only format version this build writes and reads.
pub(crate) const VERSION: u8 = 1;

/// Type tags of encoded objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    PublicKey = 1,
    ThresholdKey = 2,
    KeyShare = 3,
    Ciphertext = 4,
    PartialDecryption = 5,
    RangeProof = 6,
    DkgMessage = 7,
}

pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(tag: Tag) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(MAGIC);
        buf.push(tag as u8);
        buf.push(VERSION);
        Writer { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u128(&mut self, v: u128) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Lengths are bounded by the object sizes we create (< 4 GiB by construction).
        self.buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(b);
        self
    }

    /// Fixed-length bytes, no length prefix (the decoder knows the length).
    pub(crate) fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// A non-negative integer (callers never encode negative values).
    pub(crate) fn int(&mut self, v: &Int) -> &mut Self {
        debug_assert!(!v.is_negative());
        self.bytes(&v.to_bytes_be())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, tag: Tag, bytes: &'a [u8]) -> Result<Self> {
        let Some((head, rest)) = bytes.split_first_chunk::<5>() else {
            return Err(Error::malformed(what, "shorter than the 5-byte header"));
        };
        if &head[..3] != MAGIC {
            return Err(Error::malformed(
                what,
                "bad magic (not a MedTech Chain object)",
            ));
        }
        if head[3] != tag as u8 {
            return Err(Error::malformed(
                what,
                format!("type tag {} where {} was expected", head[3], tag as u8),
            ));
        }
        if head[4] != VERSION {
            return Err(Error::UnsupportedVersion {
                what,
                found: head[4],
                supported: VERSION,
            });
        }
        Ok(Reader { what, rest })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::malformed(self.what, "truncated"));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Exactly `n` bytes, no length prefix.
    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u128(&mut self) -> Result<u128> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(u128::from_be_bytes(a))
    }

    pub(crate) fn bytes(&mut self, max_len: usize) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max_len {
            return Err(Error::malformed(
                self.what,
                format!("field of {len} bytes exceeds the limit of {max_len}"),
            ));
        }
        self.take(len)
    }

    /// A canonical non-negative integer of at most `max_bits` bits.
    pub(crate) fn int(&mut self, max_bits: usize) -> Result<Int> {
        let b = self.bytes(max_bits.div_ceil(8))?;
        if b.first() == Some(&0) {
            return Err(Error::malformed(
                self.what,
                "integer has a leading zero byte",
            ));
        }
        let v = Int::from_bytes_be(b);
        if v.bits() > max_bits {
            return Err(Error::malformed(self.what, "integer too large"));
        }
        Ok(v)
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::malformed(
                self.what,
                format!("{} trailing bytes", self.rest.len()),
            ))
        }
    }
}

/// Implements serde for a type through its canonical bytes: a hex string in human-readable
/// formats (JSON), raw bytes otherwise.
macro_rules! serde_via_bytes {
    ($ty:ty, $what:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
                let bytes = self.to_bytes();
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(bytes))
                } else {
                    s.serialize_bytes(&bytes)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> core::result::Result<Self, D::Error> {
                use serde::de::Error as _;
                let bytes: Vec<u8> = if d.is_human_readable() {
                    let s = <String as serde::Deserialize>::deserialize(d)?;
                    hex::decode(s.as_bytes())
                        .map_err(|e| D::Error::custom(format!("{}: bad hex: {e}", $what)))?
                } else {
                    <$crate::encoding::serde_bytes_compat::Bytes as serde::Deserialize>::deserialize(d)?.0
                };
                <$ty>::from_bytes(&bytes).map_err(D::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_bytes;

/// A minimal `serde_bytes` replacement (accepts bytes or a sequence of u8).
pub(crate) mod serde_bytes_compat {
    pub(crate) struct Bytes(pub(crate) Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Bytes, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = a.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Bytes(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}
