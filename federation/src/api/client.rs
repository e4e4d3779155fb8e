//! A minimal HTTP/1.1 client for the node's API over plain TCP (one request per connection):
//! what the tests, the query benchmark and the scenarios use to talk to nodes the way a
//! researcher's tools would.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<Reply> {
    request_with(addr, method, path, token, content_type, &[], body).await
}

/// [`request`] with more headers (`X-Forwarded-For`, as a proxy would add).
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(t) = token {
        head.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    if let Some(ct) = content_type {
        head.push_str(&format!("content-type: {ct}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    // Read until the body is complete: by Content-Length, by the last chunk, or to EOF (some
    // servers keep the connection open whatever the request said).
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if complete(&raw) {
            break;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse(&raw)
}

/// Whether `raw` holds a whole response.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    for line in head.split("\r\n") {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

/// Sends a JSON body (or none for `Value::Null`).
pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> std::io::Result<Reply> {
    if body.is_null() {
        request(addr, method, path, token, None, b"").await
    } else {
        let b = serde_json::to_vec(body)?;
        request(addr, method, path, token, Some("application/json"), &b).await
    }
}

/// Signs in and returns the token.
pub async fn login(addr: SocketAddr, user: &str, password: &str) -> std::io::Result<String> {
    let r = json(
        addr,
        "POST",
        "/api/v1/login",
        None,
        &serde_json::json!({ "username": user, "password": password }),
    )
    .await?;
    match r.json()["token"].as_str() {
        Some(t) if r.status == 200 => Ok(t.to_owned()),
        _ => Err(std::io::Error::other(format!(
            "login as {user} failed: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ))),
    }
}

/// Signs in as `user`; when the account must change its (generated) password first, changes it
/// to `new_password` and returns the token the change gives. A token of an account that must
/// change its password is good for nothing else.
pub async fn first_login(
    addr: SocketAddr,
    user: &str,
    password: &str,
    new_password: &str,
) -> std::io::Result<String> {
    let r = json(
        addr,
        "POST",
        "/api/v1/login",
        None,
        &serde_json::json!({ "username": user, "password": password }),
    )
    .await?;
    let token = match r.json()["token"].as_str() {
        Some(t) if r.status == 200 => t.to_owned(),
        _ => {
            return Err(std::io::Error::other(format!(
                "login as {user} failed: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )))
        }
    };
    if r.json()["must_change_password"] != true {
        return Ok(token);
    }
    let c = json(
        addr,
        "POST",
        "/api/v1/password",
        Some(&token),
        &serde_json::json!({ "old_password": password, "new_password": new_password }),
    )
    .await?;
    match c.json()["token"].as_str() {
        Some(t) if c.status == 200 => Ok(t.to_owned()),
        // A member that does not give a token with the change: sign in with the new password.
        None if c.status == 200 => login(addr, user, new_password).await,
        _ => Err(std::io::Error::other(format!(
            "changing {user}'s password failed: {} {}",
            c.status,
            String::from_utf8_lossy(&c.body)
        ))),
    }
}

fn bad(m: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned())
}

fn parse(raw: &[u8]) -> std::io::Result<Reply> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("bad chunk"))?;
        let size_text = std::str::from_utf8(&b[..nl]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Approves, as the member serving `addr` (with its admin `token`), every change pending on the
/// ledger, once at least `expect` are pending there (waiting up to `wait` for them to reach that
/// member; an error if they do not). Returns how many it approved. What loosens a privacy
/// limit needs `t` members (docs/privacy.md), so a tool that registers a researcher at one
/// member calls this at `t − 1` others.
pub async fn approve_pending(
    addr: SocketAddr,
    token: &str,
    expect: usize,
    wait: std::time::Duration,
) -> std::io::Result<usize> {
    let until = std::time::Instant::now() + wait;
    loop {
        let r = json(
            addr,
            "GET",
            "/api/v1/changes/pending",
            Some(token),
            &Value::Null,
        )
        .await?;
        if r.status != 200 {
            return Err(std::io::Error::other(format!(
                "pending changes: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )));
        }
        let body = r.json();
        let ids: Vec<String> = body["pending"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|p| p["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() && ids.len() >= expect {
            for id in &ids {
                let path = format!("/api/v1/changes/{id}/approve");
                let a = json(addr, "POST", &path, Some(token), &Value::Null).await?;
                if a.status >= 300 {
                    return Err(std::io::Error::other(format!(
                        "approve {id}: {} {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    )));
                }
            }
            return Ok(ids.len());
        }
        if std::time::Instant::now() >= until {
            return Err(std::io::Error::other(format!(
                "{} changes pending after {wait:?}, expected {expect}",
                ids.len()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
