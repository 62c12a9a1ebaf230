//! Extension artifacts: the package an extension version ships as, and the steps an
//! agent takes with it before anything runs: fetch (size limit, timeout, resume),
//! verify (SHA-256, and an Ed25519 signature when the agent has a public key), read
//! the manifest, unpack (never outside its directory). Each stage is its own module;
//! the install state machine that strings them together is `agent::real`.

pub mod bundle;
pub mod fetch;
pub mod manifest;
pub mod sign;
pub mod unpack;

use serde::{Deserialize, Serialize};

/// Where an extension version's artifact is and what it must hash to. Carried by the
/// catalog (`[extension.artifacts."1.0.0"]`) and by the install request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    /// A local path, a `file://` URL or an `http(s)://` URL of a `.tar.gz`.
    pub url: String,
    /// Lowercase hex SHA-256 of the artifact file.
    pub sha256: String,
    /// The artifact's size in bytes, when known: a download of another size is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Hex Ed25519 signature of [`signed_statement`], checked by an agent that has a
    /// public key (an agent with one refuses an artifact without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What a signature covers: the extension, its version and the artifact's hash, so a
/// signature can be moved neither to another artifact nor to another version.
pub fn signed_statement(name: &str, version: &str, sha256: &str) -> String {
    format!("parley-artifact v1\n{name}\n{version}\n{}\n", sha256.to_ascii_lowercase())
}

impl ArtifactRef {
    /// Checks the fields' form (not the artifact): a hash is 64 hex digits.
    pub fn check(&self) -> Result<(), ArtifactError> {
        if !is_sha256(&self.sha256) {
            return Err(ArtifactError::BadReference(format!(
                "sha256 `{}` is not 64 hex digits",
                self.sha256.chars().take(80).collect::<String>()
            )));
        }
        if self.url.trim().is_empty() {
            return Err(ArtifactError::BadReference("the artifact url is empty".into()));
        }
        Ok(())
    }
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What can go wrong with an artifact before it is installed. Each names the artifact
/// and, for a hash mismatch, both hashes.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("bad artifact reference: {0}")]
    BadReference(String),
    #[error("could not fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} did not finish downloading within {ms} ms")]
    Timeout { url: String, ms: u64 },
    #[error("{url} is over the size limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url} is larger than the {want} bytes the catalog says")]
    LargerThanSaid { url: String, want: u64 },
    #[error("{url} is {got} bytes, the catalog says {want} bytes")]
    WrongSize { url: String, want: u64, got: u64 },
    #[error("{url} does not match its SHA-256: the catalog says {want}, the file has {got}")]
    HashMismatch { url: String, want: String, got: String },
    #[error("archive entry `{entry}` {why}; the archive is refused")]
    UnsafeEntry { entry: String, why: String },
    #[error("the archive cannot be unpacked: {0}")]
    Archive(String),
    #[error("extension.toml: {0}")]
    Manifest(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl ArtifactError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArtifactError {
        let context = context.into();
        move |source| ArtifactError::Io { context, source }
    }
}
