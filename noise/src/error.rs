//! The crate's one error type.

/// Everything that can go wrong in `medtech-noise`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A parameter outside what the mechanism supports.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// An intermediate value left the integer range the exact samplers work in.
    #[error("integer overflow in {0}")]
    Overflow(&'static str),
    /// Encrypting, proving or verifying a noise share failed; the threshold error names the
    /// reason (and, for a member's bad proof, the caller knows the member it came from).
    #[error("noise share encryption: {0}")]
    Crypto(#[from] medtech_threshold::Error),
}

/// Shorthand for `Result<T, medtech_noise::Error>`.
pub type Result<T> = core::result::Result<T, Error>;
