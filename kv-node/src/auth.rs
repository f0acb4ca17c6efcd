//! Bearer tokens: the token files, roles, and which role each request
//! needs (SECURITY.md).
//!
//! Client token file (`--auth-token-file`), one token a line:
//!
//! ```text
//! # role   token (16 to 512 visible ASCII characters, no spaces)
//! read     9f2c1e7a0b3d4c5e6f708192a3b4c5d6
//! write    0a1b2c3d4e5f60718293a4b5c6d7e8f9
//! admin    f0e1d2c3b4a5968778695a4b3c2d1e0f
//! ```
//!
//! Roles nest: `write` may do all that `read` may, `admin` all that `write`
//! may. The peer token file (`--peer-token-file`) holds one line, the
//! cluster token. It never travels: a node posting to peer `p` sends
//! [`PeerSecret::credential_for`]`(p)`, an HMAC-SHA256 of `p`'s name keyed
//! with the cluster token, and each node accepts on `/raft/*` only the
//! credential made for its own name. So whoever receives a node's raft
//! traffic (the owner of a member URL an admin chose) learns a credential
//! good for that one name only, never one that another node accepts. No
//! client token, not even an admin one, may post raft messages.
//!
//! Tokens are compared in constant time, after a length check (a token
//! longer than [`MAX_TOKEN_CHARS`] is refused without comparing), and never
//! logged: [`Auth`]'s `Debug` shows only how many tokens of each role it
//! holds.

use ring::hmac;
use std::fmt;
use std::path::{Path, PathBuf};
use warp::http::Method;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Longest token accepted.
pub const MAX_TOKEN_CHARS: usize = 512;

/// What a client token may do. Ordered: a higher role includes the lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// What a request needs before it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `/healthz` and `/readyz`: load balancers probe without a token.
    Open,
    /// A client token of at least this role.
    Client(Role),
    /// Peer traffic (`/raft` and everything under it): the credential
    /// derived from the cluster token for this node, or mutual TLS.
    Peer,
}

impl Access {
    /// Which access a request needs, from its method and path alone, so
    /// that routes added later are covered without being listed here.
    pub fn of(method: &Method, path: &str) -> Access {
        let reading = *method == Method::GET || *method == Method::HEAD;
        if path == "/healthz" || path == "/readyz" {
            Access::Open
        } else if path == "/raft" || path.starts_with("/raft/") {
            Access::Peer
        } else if path.starts_with("/admin/") {
            Access::Client(Role::Admin)
        } else if path.starts_with("/cluster/") {
            Access::Client(if reading { Role::Read } else { Role::Admin })
        } else if reading {
            Access::Client(Role::Read)
        } else {
            Access::Client(Role::Write)
        }
    }
}

/// Why a request was refused. Messages never contain the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
}

/// The cluster token, kept to derive per-node credentials from.
#[derive(Clone)]
pub struct PeerSecret(hmac::Key);

impl PeerSecret {
    pub fn new(cluster_token: &[u8]) -> PeerSecret {
        PeerSecret(hmac::Key::new(hmac::HMAC_SHA256, cluster_token))
    }

    /// The bearer credential that node `name` accepts on its peer
    /// endpoint: hex of HMAC-SHA256(cluster token, domain || name). It is
    /// 64 characters, and useless at any other node.
    pub fn credential_for(&self, name: &str) -> String {
        let mut message = b"raftkv peer credential v1\0".to_vec();
        message.extend_from_slice(name.as_bytes());
        let tag = hmac::sign(&self.0, &message);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

/// How peer traffic proves itself.
#[derive(Clone)]
enum PeerCheck {
    /// No peer credential: peer traffic is open (no client auth either).
    Open,
    /// A cluster token from `--peer-token-file`: peers present the
    /// credential made for this node's name (`expected`).
    Token {
        secret: PeerSecret,
        expected: Vec<u8>,
    },
    /// Mutual TLS: the server accepted only connections whose client
    /// certificate the CA signed, so every request reaching us qualifies.
    MutualTls,
}

/// The tokens a node checks requests against.
#[derive(Clone)]
pub struct Auth {
    /// `None`: client routes are open (only peer traffic is checked).
    clients: Option<Vec<(Vec<u8>, Role)>>,
    peer: PeerCheck,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |role| {
            self.clients
                .as_ref()
                .map_or(0, |c| c.iter().filter(|(_, r)| *r == role).count())
        };
        f.debug_struct("Auth")
            .field("client_auth", &self.clients.is_some())
            .field("read_tokens", &count(Role::Read))
            .field("write_tokens", &count(Role::Write))
            .field("admin_tokens", &count(Role::Admin))
            .field(
                "peer",
                &match self.peer {
                    PeerCheck::Open => "open",
                    PeerCheck::Token { .. } => "cluster token",
                    PeerCheck::MutualTls => "mutual TLS",
                },
            )
            .finish()
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path} holds no token")]
    Empty { path: PathBuf },
    #[error(
        "--auth-token-file needs a peer credential, --peer-token-file or --tls-client-auth: \
         without one the peer endpoint (/raft/*) would be open to anyone, whatever the peer list"
    )]
    NoPeerCredential,
}

impl Auth {
    /// Loads the token files. `None` when neither is given: everything is
    /// open, as before auth existed. Client tokens without a peer
    /// credential are refused whatever the peer list: a single node or a
    /// joiner gains peers at run time, and its peer endpoint must never be
    /// the one open door. `this_name` is the node's `--id`, whose
    /// credential peers must present.
    pub fn load(
        token_file: Option<&Path>,
        peer_token_file: Option<&Path>,
        mutual_tls: bool,
        this_name: &str,
    ) -> Result<Option<Auth>, TokenFileError> {
        let clients = token_file
            .map(|path| parse_token_file(path, &read(path)?))
            .transpose()?;
        let peer = match peer_token_file {
            Some(path) => peer_check(&parse_peer_token(path, &read(path)?)?, this_name),
            None if mutual_tls => PeerCheck::MutualTls,
            None if clients.is_some() => return Err(TokenFileError::NoPeerCredential),
            None => PeerCheck::Open,
        };
        if clients.is_none() && matches!(peer, PeerCheck::Open) {
            return Ok(None);
        }
        Ok(Some(Auth { clients, peer }))
    }

    /// Builds from token lists directly (tests); `this_name` as in `load`.
    pub fn from_tokens(
        clients: Option<Vec<(String, Role)>>,
        peer_token: Option<String>,
        this_name: &str,
    ) -> Auth {
        Auth {
            clients: clients.map(|c| c.into_iter().map(|(t, r)| (t.into_bytes(), r)).collect()),
            peer: peer_token.map_or(PeerCheck::Open, |t| peer_check(t.as_bytes(), this_name)),
        }
    }

    /// The cluster secret this node derives its peers' credentials from.
    pub fn peer_secret(&self) -> Option<PeerSecret> {
        match &self.peer {
            PeerCheck::Token { secret, .. } => Some(secret.clone()),
            _ => None,
        }
    }

    /// Checks a request's `Authorization` header against what it needs.
    pub fn check(&self, access: Access, authorization: Option<&str>) -> Result<(), Denied> {
        let presented = authorization.and_then(bearer);
        // No configured token is longer: refuse without comparing, so the
        // work per request stays bounded whatever the header holds.
        if presented.is_some_and(|p| p.len() > MAX_TOKEN_CHARS) && access != Access::Open {
            return Err(Denied::Unauthorized(
                "the bearer token is too long to be valid",
            ));
        }
        match access {
            Access::Open => Ok(()),
            Access::Client(needed) => {
                let Some(clients) = &self.clients else {
                    return Ok(());
                };
                let presented = presented.ok_or(Denied::Unauthorized(
                    "this request needs an `Authorization: Bearer <token>` header",
                ))?;
                match find_role(clients, presented) {
                    None => Err(Denied::Unauthorized("the bearer token is not valid")),
                    Some(role) if role < needed => Err(Denied::Forbidden(format!(
                        "a {} token may not do this; it needs a {} token",
                        role.as_str(),
                        needed.as_str()
                    ))),
                    Some(_) => Ok(()),
                }
            }
            Access::Peer => match &self.peer {
                PeerCheck::Open | PeerCheck::MutualTls => Ok(()),
                PeerCheck::Token { expected, .. } => match presented {
                    Some(p) if constant_time_eq(p.as_bytes(), expected) => Ok(()),
                    Some(p)
                        if self
                            .clients
                            .as_ref()
                            .is_some_and(|c| find_role(c, p).is_some()) =>
                    {
                        Err(Denied::Forbidden(
                            "peer traffic needs the cluster token; client tokens may not send raft messages".into(),
                        ))
                    }
                    _ => Err(Denied::Unauthorized(
                        "peer traffic needs this node's peer credential (derived from the cluster token) as a bearer token",
                    )),
                },
            },
        }
    }
}

/// The check for peers presenting the credential made for `this_name`.
fn peer_check(cluster_token: &[u8], this_name: &str) -> PeerCheck {
    let secret = PeerSecret::new(cluster_token);
    let expected = secret.credential_for(this_name).into_bytes();
    PeerCheck::Token { secret, expected }
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The role of `presented`, comparing it with every token in constant time
/// (no early exit, so the time does not say which token nearly matched).
fn find_role(clients: &[(Vec<u8>, Role)], presented: &str) -> Option<Role> {
    let mut found = None;
    for (token, role) in clients {
        if constant_time_eq(presented.as_bytes(), token) {
            found = Some(*role);
        }
    }
    found
}

/// Equality whose time depends only on the length of `presented`, never
/// on where it differs from `secret`.
pub fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != secret.len());
    for (i, byte) in presented.iter().enumerate() {
        let other = secret.get(i % secret.len().max(1)).copied().unwrap_or(0);
        diff |= byte ^ other;
    }
    std::hint::black_box(diff) == 0
}

fn read(path: &Path) -> Result<String, TokenFileError> {
    crate::secret_file::warn_if_exposed(path, "token file");
    std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn check_token(path: &Path, line: usize, token: &str) -> Result<(), TokenFileError> {
    let bad = |reason: String| TokenFileError::BadLine {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let chars = token.chars().count();
    if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&chars) {
        return Err(bad(format!(
            "a token must have {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters, this one has {chars}"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("a token must be visible ASCII".into()));
    }
    Ok(())
}

/// Lines of `role token`; blank lines and `#` comments are skipped.
pub fn parse_token_file(path: &Path, text: &str) -> Result<Vec<(Vec<u8>, Role)>, TokenFileError> {
    let mut tokens: Vec<(Vec<u8>, Role)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| TokenFileError::BadLine {
            path: path.to_path_buf(),
            line: line_no,
            reason: reason.to_string(),
        };
        let mut fields = line.split_whitespace();
        let (Some(role), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `ROLE TOKEN` (ROLE is read, write or admin)"));
        };
        let role = Role::parse(role).ok_or_else(|| bad("the role must be read, write or admin"))?;
        check_token(path, line_no, token)?;
        if tokens.iter().any(|(t, _)| t == token.as_bytes()) {
            return Err(bad("the same token is listed twice"));
        }
        tokens.push((token.as_bytes().to_vec(), role));
    }
    if tokens.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(tokens)
}

/// The single token of a peer token file (comments allowed).
fn parse_peer_token(path: &Path, text: &str) -> Result<Vec<u8>, TokenFileError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((line, token)) = lines.next() else {
        return Err(TokenFileError::Empty {
            path: path.to_path_buf(),
        });
    };
    check_token(path, line, token)?;
    if let Some((line, _)) = lines.next() {
        return Err(TokenFileError::BadLine {
            path: path.to_path_buf(),
            line,
            reason: "a peer token file holds exactly one token".into(),
        });
    }
    Ok(token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "read-token-0123456789";
    const WRITE: &str = "write-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";
    const PEER: &str = "peer-token-0123456789";

    fn auth() -> Auth {
        Auth::from_tokens(
            Some(vec![
                (READ.into(), Role::Read),
                (WRITE.into(), Role::Write),
                (ADMIN.into(), Role::Admin),
            ]),
            Some(PEER.into()),
            "n1",
        )
    }

    fn peer_credential(name: &str) -> String {
        PeerSecret::new(PEER.as_bytes()).credential_for(name)
    }

    fn bearer_of(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn each_path_needs_its_access() {
        let cases = [
            (Method::GET, "/healthz", Access::Open),
            (Method::GET, "/readyz", Access::Open),
            (Method::GET, "/kv/a", Access::Client(Role::Read)),
            (Method::GET, "/kv", Access::Client(Role::Read)),
            (Method::GET, "/status", Access::Client(Role::Read)),
            (Method::GET, "/metrics", Access::Client(Role::Read)),
            (Method::PUT, "/kv/a", Access::Client(Role::Write)),
            (Method::DELETE, "/kv/a", Access::Client(Role::Write)),
            (Method::POST, "/kv/a/cas", Access::Client(Role::Write)),
            (Method::POST, "/kv/mput", Access::Client(Role::Write)),
            (Method::POST, "/txn", Access::Client(Role::Write)),
            (
                Method::PUT,
                "/admin/read-policy",
                Access::Client(Role::Admin),
            ),
            (Method::POST, "/admin/snapshot", Access::Client(Role::Admin)),
            (Method::GET, "/admin/backup", Access::Client(Role::Admin)),
            (
                Method::DELETE,
                "/cluster/members/n2",
                Access::Client(Role::Admin),
            ),
            (
                Method::POST,
                "/cluster/transfer-leader",
                Access::Client(Role::Admin),
            ),
            (Method::POST, "/raft/anything", Access::Peer),
            (
                Method::GET,
                "/admin/read-policy",
                Access::Client(Role::Admin),
            ),
            (Method::GET, "/cluster/members", Access::Client(Role::Read)),
            (
                Method::POST,
                "/cluster/members",
                Access::Client(Role::Admin),
            ),
            (Method::POST, "/raft/messages", Access::Peer),
            (Method::POST, "/lease", Access::Client(Role::Write)),
            (
                Method::POST,
                "/lease/7/keepalive",
                Access::Client(Role::Write),
            ),
            (Method::DELETE, "/lease/7", Access::Client(Role::Write)),
            (Method::GET, "/lease/7", Access::Client(Role::Read)),
            (Method::GET, "/lease", Access::Client(Role::Read)),
        ];
        for (method, path, access) in cases {
            assert_eq!(Access::of(&method, path), access, "{method} {path}");
        }
    }

    #[test]
    fn roles_nest_and_a_missing_or_wrong_token_is_unauthorized() {
        let a = auth();
        let write = Access::Client(Role::Write);
        assert!(matches!(a.check(write, None), Err(Denied::Unauthorized(_))));
        assert!(matches!(
            a.check(write, Some("Bearer not-a-token-at-all")),
            Err(Denied::Unauthorized(_))
        ));
        assert!(matches!(
            a.check(write, Some(&bearer_of(READ))),
            Err(Denied::Forbidden(_))
        ));
        assert!(a.check(write, Some(&bearer_of(WRITE))).is_ok());
        assert!(a.check(write, Some(&bearer_of(ADMIN))).is_ok());
        assert!(a.check(Access::Open, None).is_ok());
    }

    #[test]
    fn only_the_credential_made_for_this_node_may_send_raft_messages() {
        let a = auth();
        assert!(
            a.check(Access::Peer, Some(&bearer_of(&peer_credential("n1"))))
                .is_ok()
        );
        // The raw cluster token never travels, and another node's
        // credential (what a member URL pointed elsewhere would leak)
        // is worthless here.
        for wrong in [PEER.to_string(), peer_credential("n2")] {
            assert!(matches!(
                a.check(Access::Peer, Some(&bearer_of(&wrong))),
                Err(Denied::Unauthorized(_))
            ));
        }
        assert_eq!(peer_credential("n1").len(), 64);
        assert_ne!(peer_credential("n1"), peer_credential("n2"));
        assert!(matches!(
            a.check(Access::Peer, Some(&bearer_of(ADMIN))),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            a.check(Access::Peer, None),
            Err(Denied::Unauthorized(_))
        ));
        // The cluster token is no client token.
        assert!(matches!(
            a.check(Access::Client(Role::Read), Some(&bearer_of(PEER))),
            Err(Denied::Unauthorized(_))
        ));
    }

    #[test]
    fn the_token_file_parses_and_bad_lines_are_named() {
        let path = Path::new("tokens");
        let text = format!("# comment\n\nread {READ}\n  admin   {ADMIN}  \n");
        let tokens = parse_token_file(path, &text).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[1], (ADMIN.as_bytes().to_vec(), Role::Admin));
        for bad in [
            format!("root {READ}"),
            "read short".to_string(),
            format!("read {READ} extra"),
            format!("read {READ}\nwrite {READ}"),
        ] {
            assert!(
                matches!(
                    parse_token_file(path, &bad),
                    Err(TokenFileError::BadLine { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_token_file(path, "# nothing\n"),
            Err(TokenFileError::Empty { .. })
        ));
    }

    #[test]
    fn an_over_long_token_is_refused_before_comparing() {
        let a = auth();
        let long = "x".repeat(MAX_TOKEN_CHARS + 1);
        for access in [Access::Peer, Access::Client(Role::Read)] {
            assert_eq!(
                a.check(access, Some(&bearer_of(&long))),
                Err(Denied::Unauthorized(
                    "the bearer token is too long to be valid"
                ))
            );
        }
        assert!(a.check(Access::Open, Some(&bearer_of(&long))).is_ok());
    }

    #[test]
    fn client_tokens_without_a_peer_credential_are_refused_even_alone() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("admin {ADMIN}\n")).unwrap();
        assert!(matches!(
            Auth::load(Some(&tokens), None, false, "n1"),
            Err(TokenFileError::NoPeerCredential)
        ));
        assert!(
            Auth::load(Some(&tokens), None, true, "n1")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn debug_never_shows_a_token() {
        let shown = format!("{:?}", auth());
        assert!(!shown.contains("0123456789"), "{shown}");
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdeg", b"abcdef"));
        assert!(!constant_time_eq(b"abc", b"abcdef"));
        assert!(!constant_time_eq(b"abcdefg", b"abcdef"));
        assert!(!constant_time_eq(b"", b"abcdef"));
    }
}
