//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the ceremony tool.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it claims to be (JSON, version, field).
    #[error("{what}: {reason}")]
    Format {
        /// Which file or object.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A key-share file did not decrypt: wrong passphrase or key file, or the file was altered.
    #[error("the key-share file does not decrypt (wrong passphrase or key file, or altered)")]
    Decrypt,
    /// The threshold layer refused something (names the culprit where there is one).
    #[error(transparent)]
    Threshold(#[from] medtech_threshold::Error),
}

impl Error {
    pub(crate) fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Shorthand.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Writes a file (created with mode 0600 on Unix when `secret`), naming it in the error.
pub(crate) fn write(path: &std::path::Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Decodes a hex field.
pub(crate) fn unhex(what: &str, s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|e| Error::format(what, format!("not hex: {e}")))
}
