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
    /// A sampler used up its work budget (`medtech_noise::samplers::Work`) without a sample.
    /// The draw is void: discard it and fail, never draw again (a re-draw would truncate the
    /// distribution).
    #[error("the noise sampler used up its budget of {0} steps; the draw is void")]
    WorkExceeded(u64),
    /// The requested privacy parameter is too small for its noise to be proven within any of
    /// the noise-share proof bounds (`commitment::SHARE_BOUNDS`) with a per-share tail below
    /// `2^−80`.
    #[error(
        "epsilon {} is below the smallest epsilon accepted for this query, {}: its noise \
         shares could not be proven within a bound (2^31 at most) that an honest share leaves \
         with probability at most 2^-80",
        .requested.as_f64(),
        .smallest.as_f64()
    )]
    BelowEpsilonFloor {
        /// The ε asked for.
        requested: crate::mechanism::Micros,
        /// The smallest ε accepted for the same query (same kind, target and sensitivity).
        smallest: crate::mechanism::Micros,
    },
    /// No noise-share proof bound holds the share of this calibration (non-Laplace
    /// mechanisms; the discrete Laplace reports [`Error::BelowEpsilonFloor`]).
    #[error(
        "no noise-share proof bound holds this calibration's shares with a tail below 2^-80: {0}"
    )]
    NoShareBound(String),
    /// Encrypting, proving or verifying a noise share failed; the threshold error names the
    /// reason (and, for a member's bad proof, the caller knows the member it came from).
    #[error("noise share encryption: {0}")]
    Crypto(#[from] medtech_threshold::Error),
}

/// Shorthand for `Result<T, medtech_noise::Error>`.
pub type Result<T> = core::result::Result<T, Error>;
