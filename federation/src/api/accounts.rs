//! This node's local accounts: who may sign in here, with which role.
//!
//! Passwords are stored only as Argon2id PHC strings (the `argon2` crate's defaults: 19 MiB,
//! two passes). The file is JSON, written atomically (temporary file, fsync, rename) with mode
//! 0600. A failed login costs the same time whether or not the user exists. Accounts live on
//! the node where they were created; the tokens that node signs are accepted by every member
//! (see [`super::auth`]), and a researcher's registration and budget live on the ledger, so
//! disabling a researcher there locks them out everywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use super::auth::Role;

/// One account.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The login name (for researchers, also their ledger id).
    pub username: String,
    /// Role.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Disabled accounts cannot sign in.
    pub enabled: bool,
    /// Full name.
    #[serde(default)]
    pub display_name: String,
    /// E-mail.
    #[serde(default)]
    pub email: String,
    /// Affiliation.
    #[serde(default)]
    pub affiliation: String,
    /// Created, ms since the Unix epoch.
    pub created_ms: u64,
    /// Set for generated passwords until the user changes theirs.
    #[serde(default)]
    pub must_change_password: bool,
    /// Counts password changes; tokens carry it, and this member refuses tokens issued before
    /// the latest change.
    #[serde(default)]
    pub password_generation: u64,
}

impl Account {
    /// An enabled account for `username` with `role` and no details, created now; its password
    /// is set by [`Accounts::create`].
    pub fn new(username: &str, role: Role) -> Self {
        Account {
            username: username.to_owned(),
            role,
            password_hash: String::new(),
            enabled: true,
            display_name: String::new(),
            email: String::new(),
            affiliation: String::new(),
            created_ms: medtech_ledger::entry::now_ms(),
            must_change_password: false,
            password_generation: 0,
        }
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("enabled", &self.enabled)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    format: String,
    accounts: BTreeMap<String, Account>,
}

const FORMAT: &str = "medtech-accounts/1";

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Unknown user or wrong password (deliberately not told apart).
    #[error("unknown user or wrong password")]
    BadCredentials,
    /// The account is disabled.
    #[error("account is disabled")]
    Disabled,
    /// The username is taken.
    #[error("account {0:?} exists already")]
    Exists(String),
    /// No such account.
    #[error("no account {0:?}")]
    Unknown(String),
    /// A username or password does not meet the rules.
    #[error("{0}")]
    Invalid(String),
    /// The accounts file could not be read or written.
    #[error("accounts file {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The accounts of this node.
pub struct Accounts {
    path: Option<PathBuf>,
    inner: Mutex<BTreeMap<String, Account>>,
    /// A hash verified when the user is unknown, so both cases take as long.
    dummy: String,
}

/// Checks a username: 1–64 characters of `A–Z a–z 0–9 . _ @ -`.
pub fn check_username(u: &str) -> Result<(), AccountError> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(
            "usernames are 1–64 characters of letters, digits and . _ @ -".into(),
        ))
    }
}

fn check_password(p: &str) -> Result<(), AccountError> {
    if p.chars().count() < 12 || p.len() > 1024 {
        return Err(AccountError::Invalid(
            "passwords are at least 12 characters (and at most 1024 bytes)".into(),
        ));
    }
    Ok(())
}

/// Hashes a password with Argon2id and a fresh salt.
pub fn hash_password(p: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(p.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("hashing: {e}")))
}

fn verify_password(p: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(p.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// A random 20-character password (letters and digits, ~119 bits).
pub fn generate_password() -> zeroize::Zeroizing<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = zeroize::Zeroizing::new(String::with_capacity(20));
    let mut b = [0u8; 1];
    while out.len() < 20 {
        rand_core::OsRng.fill_bytes(&mut b);
        // Rejection sampling keeps the choice uniform.
        let v = usize::from(b[0]);
        if v < 256 - 256 % ALPHABET.len() {
            out.push(char::from(ALPHABET[v % ALPHABET.len()]));
        }
    }
    out
}

impl Accounts {
    /// Opens (or starts) the accounts file at `path`.
    pub fn open(path: &Path) -> Result<Self, AccountError> {
        let io = |e: String| AccountError::Io {
            path: path.display().to_string(),
            message: e,
        };
        let accounts = match std::fs::read(path) {
            Ok(bytes) => {
                let f: AccountsFile =
                    serde_json::from_slice(&bytes).map_err(|e| io(e.to_string()))?;
                if f.format != FORMAT {
                    return Err(io(format!("unsupported format {:?}", f.format)));
                }
                f.accounts
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e.to_string())),
        };
        Ok(Accounts {
            path: Some(path.to_owned()),
            inner: Mutex::new(accounts),
            dummy: hash_password("medtech dummy password")?,
        })
    }

    /// Accounts kept in memory only (tests).
    pub fn in_memory() -> Result<Self, AccountError> {
        Ok(Accounts {
            path: None,
            inner: Mutex::new(BTreeMap::new()),
            dummy: hash_password("medtech dummy password")?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Account>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn save(&self, accounts: &BTreeMap<String, Account>) -> Result<(), AccountError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |e: std::io::Error| AccountError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let f = AccountsFile {
            format: FORMAT.into(),
            accounts: accounts.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| AccountError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let mut file = o.open(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Creates an account with `password`.
    pub fn create(
        &self,
        mut account: Account,
        password: &str,
        generated: bool,
    ) -> Result<(), AccountError> {
        check_username(&account.username)?;
        check_password(password)?;
        account.password_hash = hash_password(password)?;
        account.must_change_password = generated;
        let mut a = self.lock();
        if a.contains_key(&account.username) {
            return Err(AccountError::Exists(account.username));
        }
        let mut next = a.clone();
        next.insert(account.username.clone(), account);
        self.save(&next)?;
        *a = next;
        Ok(())
    }

    /// Checks a login.
    pub fn login(&self, username: &str, password: &str) -> Result<Account, AccountError> {
        let found = self.lock().get(username).cloned();
        match found {
            None => {
                let _ = verify_password(password, &self.dummy);
                Err(AccountError::BadCredentials)
            }
            Some(a) => {
                if !verify_password(password, &a.password_hash) {
                    return Err(AccountError::BadCredentials);
                }
                if !a.enabled {
                    return Err(AccountError::Disabled);
                }
                Ok(a)
            }
        }
    }

    /// Changes `username`'s password after checking the old one; returns the account as it is
    /// now (its password generation advanced, so earlier tokens are refused here).
    pub fn change_password(
        &self,
        username: &str,
        old: &str,
        new: &str,
    ) -> Result<Account, AccountError> {
        self.login(username, old)?;
        check_password(new)?;
        if old == new {
            return Err(AccountError::Invalid(
                "the new password must differ from the old".into(),
            ));
        }
        let hash = hash_password(new)?;
        self.update(username, |a| {
            a.password_hash = hash;
            a.must_change_password = false;
            a.password_generation = a.password_generation.wrapping_add(1);
        })?;
        self.get(username)
            .ok_or_else(|| AccountError::Unknown(username.to_owned()))
    }

    /// Changes an account with `f`.
    pub fn update(&self, username: &str, f: impl FnOnce(&mut Account)) -> Result<(), AccountError> {
        let mut a = self.lock();
        let mut next = a.clone();
        let acc = next
            .get_mut(username)
            .ok_or_else(|| AccountError::Unknown(username.to_owned()))?;
        f(acc);
        self.save(&next)?;
        *a = next;
        Ok(())
    }

    /// The account `username`.
    pub fn get(&self, username: &str) -> Option<Account> {
        self.lock().get(username).cloned()
    }

    /// Every account.
    pub fn list(&self) -> Vec<Account> {
        self.lock().values().cloned().collect()
    }

    /// Whether there are no accounts yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(u: &str, role: Role) -> Account {
        Account::new(u, role)
    }

    #[test]
    fn wrong_password_and_unknown_user_give_the_same_error() {
        let a = Accounts::in_memory().unwrap();
        a.create(
            acc("alice", Role::Researcher),
            "correct horse battery",
            false,
        )
        .unwrap();
        assert!(a.login("alice", "correct horse battery").is_ok());
        let wrong = a.login("alice", "correct horse batterx").unwrap_err();
        let unknown = a.login("bob", "correct horse battery").unwrap_err();
        assert_eq!(wrong.to_string(), unknown.to_string());
    }

    #[test]
    fn accounts_survive_reopening_and_the_file_holds_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.json");
        let a = Accounts::open(&path).unwrap();
        a.create(acc("admin", Role::Admin), "a long admin password", true)
            .unwrap();
        a.change_password("admin", "a long admin password", "another long password")
            .unwrap();
        drop(a);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("another long password"));
        assert!(text.contains("$argon2id$"));
        let a = Accounts::open(&path).unwrap();
        assert!(a.login("admin", "another long password").is_ok());
        assert!(a.login("admin", "a long admin password").is_err());
        assert!(!a.get("admin").unwrap().must_change_password);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "accounts file readable by others: {mode:o}"
            );
        }
    }

    #[test]
    fn disabled_accounts_and_bad_names_are_refused() {
        let a = Accounts::in_memory().unwrap();
        assert!(a
            .create(acc("bad name", Role::Admin), "long enough password", false)
            .is_err());
        assert!(a.create(acc("short", Role::Admin), "short", false).is_err());
        a.create(acc("carol", Role::Auditor), "long enough password", false)
            .unwrap();
        assert!(matches!(
            a.create(acc("carol", Role::Auditor), "long enough password", false),
            Err(AccountError::Exists(_))
        ));
        a.update("carol", |x| x.enabled = false).unwrap();
        assert!(matches!(
            a.login("carol", "long enough password"),
            Err(AccountError::Disabled)
        ));
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let p = generate_password();
        let q = generate_password();
        assert_eq!(p.len(), 20);
        assert_ne!(*p, *q);
        assert!(check_password(&p).is_ok());
    }
}
