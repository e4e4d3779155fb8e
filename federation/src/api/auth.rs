//! Roles and session tokens.
//!
//! A token is `mt1.<claims>.<signature>` (both base64url, no padding): the claims are JSON
//! (`sub`, `role`, `iss`, `iat`, `exp`, `jti`, and `mcp`, `pwg` below), signed with Ed25519 by the issuing member's
//! ledger key under a domain separator of their own
//! ([`medtech_ledger::checkpoint::API_TOKEN_DOMAIN`]). Every member checks a token against the
//! committee on its applied ledger, so a token from any member works at every member; one
//! signed by a key that is not a current member's, expired, issued in the future, or living
//! longer than the configured lifetime is refused. A researcher's token also stops working
//! everywhere as soon as the ledger records them as disabled.
//!
//! A token issued to an account that must change its password carries `mcp`: every member
//! accepts it only for the password change and `/api/v1/me`. A token carries the account's
//! password generation `pwg`; the issuing member, which holds the account, refuses tokens of
//! an older generation, so a password change revokes every token issued before it there. The
//! other members do not hold the account: they honour such a token until it expires (at most
//! the token lifetime, 15 minutes by default).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use medtech_ledger::raft::node::NodeHandle;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

/// Who a user is to the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers researchers, sets budgets, reads the committee's status and history.
    Admin,
    /// Submits queries within their budget and reads their own results.
    Researcher,
    /// A hospital operator: uploads and inspects this hospital's devices, reads node status.
    Operator,
    /// Reads the ledger: entries, checkpoints, proofs, the export and its verification.
    Auditor,
}

impl Role {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Researcher => "researcher",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "researcher" => Role::Researcher,
            "operator" => Role::Operator,
            "auditor" => Role::Auditor,
            _ => return None,
        })
    }
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Format version (1).
    pub v: u8,
    /// The user.
    pub sub: String,
    /// Their role.
    pub role: Role,
    /// The member that issued it.
    pub iss: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Random token id.
    pub jti: String,
    /// The account must change its password: this token only changes it (and reads `/me`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mcp: bool,
    /// The account's password generation when the token was issued; the issuing member
    /// refuses the token once the password has changed since (see [`super::ApiState::verify`]).
    #[serde(default)]
    pub pwg: u64,
}

/// Why a token is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of this format.
    #[error("malformed token")]
    Malformed,
    /// Its issuer is not a current committee member.
    #[error("token issued by {0:?}, not a current committee member")]
    UnknownIssuer(String),
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// Expired, not yet valid, or living longer than allowed.
    #[error("token expired or not valid now; sign in again")]
    Expired,
    /// The researcher is disabled or unknown on the ledger.
    #[error("researcher {0:?} is not enabled on the ledger")]
    Disabled(String),
    /// The ledger could not be read.
    #[error("ledger: {0}")]
    Ledger(String),
}

/// Clock skew tolerated between members, seconds.
const SKEW: u64 = 60;

fn now_s() -> u64 {
    medtech_ledger::entry::now_ms() / 1000
}

/// What a token says about the account beyond its name and role.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccountState {
    /// The account must change its password first ([`Claims::mcp`]).
    pub must_change_password: bool,
    /// Its password generation ([`Claims::pwg`]).
    pub password_generation: u64,
}

/// Issues a token for `sub` with `role`, valid for `ttl`, signed by this member.
pub fn issue_token(
    node: &NodeHandle,
    sub: &str,
    role: Role,
    ttl: Duration,
    account: AccountState,
) -> (String, Claims) {
    let mut jti = [0u8; 12];
    OsRng.fill_bytes(&mut jti);
    let iat = now_s();
    let claims = Claims {
        v: 1,
        sub: sub.to_owned(),
        role,
        iss: node.name().to_owned(),
        iat,
        exp: iat + ttl.as_secs(),
        jti: hex::encode(jti),
        mcp: account.must_change_password,
        pwg: account.password_generation,
    };
    // Serialising plain data cannot fail.
    let body = serde_json::to_vec(&claims).unwrap_or_default();
    let sig = node.sign_api_token(&body);
    (
        format!(
            "mt1.{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(sig)
        ),
        claims,
    )
}

/// Checks `token` against the committee on `node`'s applied ledger.
pub fn verify_token(
    node: &NodeHandle,
    token: &str,
    max_ttl: Duration,
) -> Result<Claims, TokenError> {
    if token.len() > 4096 {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some("mt1"), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?
        .try_into()
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
    if claims.v != 1 {
        return Err(TokenError::Malformed);
    }
    let ledger = node.read().map_err(|e| TokenError::Ledger(e.to_string()))?;
    let state = ledger.state();
    let issuer = state
        .committee()
        .member(&claims.iss)
        .ok_or_else(|| TokenError::UnknownIssuer(claims.iss.clone()))?;
    if !medtech_ledger::checkpoint::verify_api_token(issuer, &body, &sig) {
        return Err(TokenError::BadSignature);
    }
    let now = now_s();
    if claims.exp <= now
        || claims.iat > now + SKEW
        || claims.exp.saturating_sub(claims.iat) > max_ttl.as_secs()
    {
        return Err(TokenError::Expired);
    }
    if claims.role == Role::Researcher && !state.researcher(&claims.sub).is_some_and(|r| r.enabled)
    {
        return Err(TokenError::Disabled(claims.sub.clone()));
    }
    Ok(claims)
}
