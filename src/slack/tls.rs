//! Which certificates the bridge trusts for `https://` (Web API) and `wss://`
//! (Socket Mode).
//!
//! By default the built-in Mozilla roots (webpki-roots), the same for both, so
//! real Slack works with no setup. `[slack] ca_file` adds the CA certificates of a
//! PEM file on top of them (a TLS-inspecting corporate proxy, or a test's own CA);
//! the built-in roots are never replaced, so the setting cannot cut real Slack off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("slack.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The roots to trust beyond the built-in ones.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    extra: Vec<CertificateDer<'static>>,
    /// Where `extra` came from, for messages.
    source: Option<PathBuf>,
}

impl Trust {
    /// The built-in roots only.
    pub fn builtin() -> Trust {
        Trust::default()
    }

    /// The built-in roots plus every certificate in the PEM file at `path` (there
    /// must be at least one; an empty or unreadable file is an error, not a silent
    /// fallback).
    pub fn with_ca_file(path: &Path) -> Result<Trust, TlsError> {
        let err = |reason: String| TlsError::CaFile { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let extra = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("not PEM certificates: {e}")))?;
        if extra.is_empty() {
            return Err(err("no CERTIFICATE block in the file".to_string()));
        }
        Ok(Trust { extra, source: Some(path.to_path_buf()) })
    }

    /// From the `[slack]` settings.
    pub fn from_ca_file(ca_file: Option<&Path>) -> Result<Trust, TlsError> {
        match ca_file {
            Some(path) => Trust::with_ca_file(path),
            None => Ok(Trust::builtin()),
        }
    }

    /// Adds the extra roots to a reqwest client (whose rustls backend already has
    /// the built-in ones).
    pub fn apply(&self, mut builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, TlsError> {
        for der in &self.extra {
            let cert = reqwest::Certificate::from_der(der.as_ref()).map_err(|e| self.bad(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(builder)
    }

    /// A rustls configuration for the Socket Mode WebSocket, or `None` when the
    /// built-in roots are all there is (tokio-tungstenite then uses them itself).
    pub fn websocket(&self) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
        if self.extra.is_empty() {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in &self.extra {
            roots.add(der.clone()).map_err(|e| self.bad(e.to_string()))?;
        }
        // ring, explicitly: the one provider this build has (no aws-lc).
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    fn bad(&self, reason: String) -> TlsError {
        let path = self.source.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        TlsError::CaFile { path, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "# nothing here\n").unwrap();
        let e = Trust::with_ca_file(&empty).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
        let missing = dir.path().join("missing.pem");
        assert!(Trust::with_ca_file(&missing).unwrap_err().to_string().starts_with("slack.ca_file "));
        // Without a file: the built-in roots, and tokio-tungstenite's own setup.
        assert!(Trust::builtin().websocket().unwrap().is_none());
    }
}
