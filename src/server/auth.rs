//! Who is calling: the local Unix socket by the peer's uid (the same uid as the
//! server is the local operator, an admin), TCP by a bearer token from the tokens
//! file (`TOKEN USER ROLE` per line, mode 0600). What each caller may do is the
//! operation's own rule ([`crate::ops::Operation::required_role`]), asked by the dialog
//! session; here only the identity and its role are settled, and `--read-only` caps
//! every role at viewer.
//!
//! A bridge (the Slack bridge: one client serving many people) speaks for others:
//! a turn may carry `on_behalf_of` (user and role), honoured only for a caller
//! allowed to act for others — over TCP a token marked `bridge` in the tokens file,
//! on the Unix socket the server's own uid — and never above the caller's own role
//! ([`Caller::speaker`], the one owner of that rule).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::listener::Peer;
use super::routes::error;
use super::ServerState;
use crate::ops::Role;

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "the tokens file {path} has mode {mode:04o}; it holds secrets, so only its owner may read it: chmod 600 {path}"
    )]
    Mode { path: String, mode: u32 },
    #[error("{path} line {line}: {reason} (each line is `TOKEN USER ROLE [bridge]`, the role one of viewer, operator, admin)")]
    Line { path: String, line: usize, reason: String },
    #[error("the tokens file {0} has no tokens")]
    Empty(String),
}

/// One user's token. Only its SHA-256 is kept, so comparisons take the same time
/// whatever the token's length, and the token itself is never in memory to log.
struct Entry {
    digest: [u8; 32],
    user: String,
    role: Role,
    /// Marked `bridge`: may speak for other people (`on_behalf_of`), up to `role`.
    bridge: bool,
}

/// What a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    pub user: String,
    pub role: Role,
    pub bridge: bool,
}

/// The tokens a TCP caller may present.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digests: a debug print must not help anyone guess.
        f.debug_struct("Tokens").field("users", &self.entries.iter().map(|e| &e.user).collect::<Vec<_>>()).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads the tokens file, refusing one that others may read or write.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        use std::os::unix::fs::PermissionsExt as _;
        let shown = path.display().to_string();
        let meta =
            std::fs::metadata(path).map_err(|e| TokensError::Read { path: shown.clone(), reason: e.to_string() })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokensError::Mode { path: shown, mode });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokensError::Read { path: shown.clone(), reason: e.to_string() })?;
        Tokens::parse(&text, &shown)
    }

    pub fn parse(text: &str, path: &str) -> Result<Tokens, TokensError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| TokensError::Line { path: path.to_string(), line: i + 1, reason };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (token, user, role, bridge) = match fields[..] {
                [token, user, role] => (token, user, role, false),
                [token, user, role, "bridge"] => (token, user, role, true),
                [_, _, _, other] => {
                    return Err(bad(format!("`{other}` after the role: the only mark there is `bridge`")))
                }
                _ => return Err(bad(format!("{} fields instead of 3", fields.len()))),
            };
            if token.len() < 16 {
                return Err(bad("the token is shorter than 16 characters".into()));
            }
            let role = Role::parse(role).ok_or_else(|| bad(format!("`{role}` is no role")))?;
            let d = digest(token);
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&d))) {
                return Err(bad("this token is already given to someone".into()));
            }
            entries.push(Entry { digest: d, user: user.to_string(), role, bridge });
        }
        if entries.is_empty() {
            return Err(TokensError::Empty(path.to_string()));
        }
        Ok(Tokens { entries })
    }

    /// The user and role a token names. Every entry is compared, in constant time
    /// each, so the time taken says nothing about which one (if any) matched.
    pub fn check(&self, token: &str) -> Option<TokenUser> {
        let d = digest(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&d)) {
                found = Some(TokenUser { user: e.user.clone(), role: e.role, bridge: e.bridge });
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How a caller reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
        }
    }
}

/// An authenticated caller, in each request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    /// The role authentication granted.
    pub granted: Role,
    /// The role in effect: `granted`, capped at viewer on a read-only server.
    pub role: Role,
    pub transport: Transport,
    /// May speak for other people (`on_behalf_of`): a `bridge` token, or the
    /// server's own uid on the Unix socket.
    pub bridge: bool,
}

/// Whom a bridge's turn speaks for: `{"user": "slack:U123", "role": "operator"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnBehalfOf {
    /// `SOURCE:ID` (`slack:U0123ABC`): the source keeps the people a bridge speaks
    /// for apart from the tokens file's users, so a bridge can never act as one.
    pub user: String,
    /// The role the bridge gives that person (its own mapping, `[slack.users]`).
    pub role: Role,
}

/// Whether `name` is a `SOURCE:ID` user name a bridge may speak for.
fn delegated_name(name: &str) -> bool {
    let Some((source, id)) = name.split_once(':') else { return false };
    name.len() <= 128
        && !source.is_empty()
        && source.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

impl Caller {
    /// Refuses a caller whose granted role is below `needed`, naming the role. For
    /// the server's own controls (stopping it), which change no agent and so stay
    /// the admin's even on a read-only server. `Some`: the refusal to answer with.
    pub fn refuse_below(&self, needed: Role, what: &str) -> Option<Response> {
        if self.granted >= needed {
            return None;
        }
        Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("{what} needs the {} role; {} is {}", needed.as_str(), self.name, article_role(self.granted)),
        ))
    }
}

impl Caller {
    /// Who a turn speaks as, and with which role: the caller itself, or (for a caller
    /// allowed to act for others) the person it names, with the lower of the claimed
    /// role and the caller's own (so a bridge never grants more than it holds, and a
    /// read-only server stays read-only). `Err`: the refusal, in a sentence.
    pub fn speaker(&self, claim: Option<&OnBehalfOf>) -> Result<(String, Role), String> {
        let Some(claim) = claim else { return Ok((self.name.clone(), self.role)) };
        if !self.bridge {
            return Err(match self.transport {
                Transport::Tcp => format!(
                    "`on_behalf_of` is only for a bridge: {}'s token is not marked `bridge` in the server's tokens file (`TOKEN USER ROLE bridge`)",
                    self.name
                ),
                Transport::Unix => format!("`on_behalf_of` is only for a bridge; {} may not act for others", self.name),
            });
        }
        if !delegated_name(&claim.user) {
            return Err(format!("`on_behalf_of.user` must be SOURCE:ID (like `slack:U0123ABC`), not {:?}", claim.user));
        }
        Ok((claim.user.clone(), claim.role.min(self.role)))
    }
}

fn article_role(role: Role) -> String {
    format!("{} {}", if role == Role::Viewer { "a" } else { "an" }, role.as_str())
}

/// The local user's name, for the Unix socket's caller.
pub fn local_user() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".to_string())
}

/// Middleware for the Unix socket: the peer must run as the server's own uid.
pub async fn unix(State(state): State<Arc<ServerState>>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<Peer>>().map(|c| c.0.clone());
    let uid = peer.and_then(|p| p.uid);
    match uid {
        Some(uid) if uid == state.uid => {
            let role = state.cap(Role::Admin);
            req.extensions_mut().insert(Caller {
                name: state.local_user.clone(),
                granted: Role::Admin,
                role,
                transport: Transport::Unix,
                // The server's own uid is the local operator, who may run a bridge
                // on the socket.
                bridge: true,
            });
            next.run(req).await
        }
        Some(uid) => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!(
                "this socket is for uid {} (who runs the server); uid {uid} must use the TCP listener with a token",
                state.uid
            ),
        ),
        None => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "could not tell who is calling on the socket (no peer credentials)",
        ),
    }
}

/// Middleware for TCP: a bearer token from the tokens file.
pub async fn tcp(State(state): State<Arc<ServerState>>, mut req: Request, next: Next) -> Response {
    let Some(tokens) = state.tokens.as_ref() else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "this server takes no tokens; use its Unix socket");
    };
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty()) else {
        return unauthorized("this request has no token: send `Authorization: Bearer TOKEN` (clients: set PARLEY_TOKEN to a token from the server's tokens file)");
    };
    match tokens.check(token) {
        Some(TokenUser { user: name, role: granted, bridge }) => {
            let role = state.cap(granted);
            req.extensions_mut().insert(Caller { name, granted, role, transport: Transport::Tcp, bridge });
            next.run(req).await
        }
        None => unauthorized("the token is not one of this server's (its tokens file names each user's token)"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    r.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_and_role_and_nothing_else_matches() {
        let t = Tokens::parse(
            "# team\nviewer-token-0123456789 wall viewer\noperator-token-0123456 alice operator\n",
            "tokens",
        )
        .unwrap();
        let named = |user: &str, role, bridge| Some(TokenUser { user: user.to_string(), role, bridge });
        assert_eq!(t.check("operator-token-0123456"), named("alice", Role::Operator, false));
        assert_eq!(t.check("viewer-token-0123456789"), named("wall", Role::Viewer, false));
        assert_eq!(t.check("operator-token-012345"), None);
        assert_eq!(t.check(""), None);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = Tokens::parse("abcdefghijklmnopq alice root\n", "t").unwrap_err().to_string();
        assert_eq!(
            e,
            "t line 1: `root` is no role (each line is `TOKEN USER ROLE [bridge]`, the role one of viewer, operator, admin)"
        );
        let e = Tokens::parse("abcdefghijklmnopq slack operator brige\n", "t").unwrap_err().to_string();
        assert!(e.starts_with("t line 1: `brige` after the role: the only mark there is `bridge`"), "{e}");
        let e = Tokens::parse("short alice admin\n", "t").unwrap_err().to_string();
        assert!(e.starts_with("t line 1: the token is shorter than 16 characters"), "{e}");
        assert_eq!(Tokens::parse("# nothing\n", "t").unwrap_err().to_string(), "the tokens file t has no tokens");
    }

    fn caller(bridge: bool, role: Role, transport: Transport) -> Caller {
        Caller { name: "slackbot".into(), granted: role, role, transport, bridge }
    }

    fn claim(user: &str, role: Role) -> OnBehalfOf {
        OnBehalfOf { user: user.to_string(), role }
    }

    #[test]
    fn a_bridge_token_is_marked_in_the_file() {
        let t = Tokens::parse("bridge-token-0123456789 slackbot operator bridge\n", "t").unwrap();
        assert_eq!(
            t.check("bridge-token-0123456789"),
            Some(TokenUser { user: "slackbot".into(), role: Role::Operator, bridge: true })
        );
    }

    #[test]
    fn a_bridge_speaks_for_others_never_above_its_own_role() {
        let bridge = caller(true, Role::Operator, Transport::Tcp);
        assert_eq!(bridge.speaker(None), Ok(("slackbot".to_string(), Role::Operator)));
        assert_eq!(bridge.speaker(Some(&claim("slack:U1", Role::Viewer))), Ok(("slack:U1".to_string(), Role::Viewer)));
        assert_eq!(
            bridge.speaker(Some(&claim("slack:U1", Role::Operator))),
            Ok(("slack:U1".to_string(), Role::Operator))
        );
        // Claimed admin, but the bridge itself is only an operator.
        assert_eq!(bridge.speaker(Some(&claim("slack:U1", Role::Admin))), Ok(("slack:U1".to_string(), Role::Operator)));
        // A read-only server caps the bridge, and so everyone it speaks for.
        let capped = Caller { role: Role::Viewer, ..bridge.clone() };
        assert_eq!(capped.speaker(Some(&claim("slack:U1", Role::Admin))), Ok(("slack:U1".to_string(), Role::Viewer)));
        // The server's own uid on the socket may run a bridge too.
        let local = caller(true, Role::Admin, Transport::Unix);
        assert_eq!(local.speaker(Some(&claim("slack:U9", Role::Admin))), Ok(("slack:U9".to_string(), Role::Admin)));
    }

    #[test]
    fn only_a_bridge_may_speak_for_others_and_only_for_source_ids() {
        let alice = Caller { name: "alice".into(), ..caller(false, Role::Admin, Transport::Tcp) };
        assert_eq!(
            alice.speaker(Some(&claim("slack:U1", Role::Viewer))),
            Err("`on_behalf_of` is only for a bridge: alice's token is not marked `bridge` in the server's tokens file (`TOKEN USER ROLE bridge`)".to_string())
        );
        assert_eq!(alice.speaker(None), Ok(("alice".to_string(), Role::Admin)));
        let bridge = caller(true, Role::Admin, Transport::Tcp);
        // A token user's name (no source) cannot be claimed: the bridge must not act as alice.
        for bad in ["alice", "slack:", ":U1", "Slack:U1", "slack:U 1", "slack:U1\n"] {
            assert_eq!(
                bridge.speaker(Some(&claim(bad, Role::Viewer))),
                Err(format!("`on_behalf_of.user` must be SOURCE:ID (like `slack:U0123ABC`), not {bad:?}")),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "abcdefghijklmnopq alice admin\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Tokens::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the tokens file {p} has mode 0644; it holds secrets, so only its owner may read it: chmod 600 {p}",
                p = path.display()
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Tokens::load(&path).unwrap().len(), 1);
    }
}
