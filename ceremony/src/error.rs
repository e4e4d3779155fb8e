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

/// Writes a file, naming it in the error: into a fresh temporary file beside it (mode 0600 on
/// Unix when `secret`), synced, then renamed over `path`. So a reader never sees half a file, a
/// failed write leaves the old one intact, and a secret file is 0600 even where `path` already
/// existed with a wider mode (the rename replaces the inode; the old mode does not carry over).
pub(crate) fn write(path: &std::path::Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path.display().to_string(), "is not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = secret;
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Decodes a hex field.
pub(crate) fn unhex(what: &str, s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|e| Error::format(what, format!("not hex: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[cfg(unix)]
    #[test]
    fn a_secret_written_over_a_world_readable_file_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.key");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write(&path, b"new secret", true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "an existing file's wider mode must not survive"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"new secret");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
