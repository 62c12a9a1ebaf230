//! Ed25519 signatures of artifacts (ed25519-dalek). A signature covers
//! [`super::signed_statement`] — extension, version and SHA-256 — and is carried in
//! the catalog beside the artifact (`signature = "<hex>"`). Keys are files of hex: the
//! secret key (32 bytes, mode 0600) and the public key (32 bytes) an agent is given
//! with `--public-key`.

use std::path::Path;

use ed25519_dalek::{Signer, Verifier};

use crate::agent::real::SignatureCheck;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("catalog {path}: {reason}")]
    Catalog { path: String, reason: String },
}

/// An agent's public key.
#[derive(Debug, Clone)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

fn hex32(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<PublicKey, SignError> {
        let bad = |reason: String| SignError::Key { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let bytes = hex32(&text).map_err(bad)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map(PublicKey).map_err(|e| bad(e.to_string()))
    }

    pub fn hex(&self) -> String {
        super::hex(self.0.as_bytes())
    }
}

impl SignatureCheck for PublicKey {
    fn verify(&self, statement: &str, signature: &str) -> Result<(), String> {
        let t = signature.trim();
        if t.len() != 128 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the signature is not 128 hex digits".into());
        }
        let mut bytes = [0u8; 64];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        self.0
            .verify(statement.as_bytes(), &sig)
            .map_err(|_| "it was made by another key or for another artifact".into())
    }
}

/// A signing key.
pub struct SecretKey(ed25519_dalek::SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> SecretKey {
        use rand::RngCore;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn load(path: &Path) -> Result<SecretKey, SignError> {
        let bad = |reason: String| SignError::Key { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Ok(SecretKey(ed25519_dalek::SigningKey::from_bytes(&hex32(&text).map_err(bad)?)))
    }

    pub fn public_hex(&self) -> String {
        super::hex(self.0.verifying_key().as_bytes())
    }

    /// Writes the secret key (0600) to `secret` and the public key to `public`.
    pub fn save(&self, secret: &Path, public: &Path) -> Result<(), SignError> {
        let bad = |p: &Path, e: std::io::Error| SignError::Key { path: p.display().to_string(), reason: e.to_string() };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(secret).map_err(|e| bad(secret, e))?;
        std::io::Write::write_all(&mut f, format!("{}\n", super::hex(&self.0.to_bytes())).as_bytes())
            .map_err(|e| bad(secret, e))?;
        std::fs::write(public, format!("{}\n", self.public_hex())).map_err(|e| bad(public, e))
    }

    /// Hex signature of `statement`.
    pub fn sign(&self, statement: &str) -> String {
        super::hex(&self.0.sign(statement.as_bytes()).to_bytes())
    }
}

/// Signs every artifact of a catalog file in place (each `[extension.artifacts."V"]`
/// gets `signature`); answers how many. Comments in the file are not kept.
pub fn sign_catalog(path: &Path, key: &SecretKey) -> Result<usize, SignError> {
    let bad = |reason: String| SignError::Catalog { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    // Parsed as a catalog first, so only a valid catalog is signed.
    crate::topology::Catalog::from_toml(&text, &path.display().to_string()).map_err(|e| bad(e.to_string()))?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut signed = 0;
    if let Some(toml::Value::Array(exts)) = doc.get_mut("extension") {
        for ext in exts.iter_mut().filter_map(toml::Value::as_table_mut) {
            let name = ext.get("name").and_then(toml::Value::as_str).unwrap_or_default().to_string();
            let Some(toml::Value::Table(artifacts)) = ext.get_mut("artifacts") else { continue };
            for (version, a) in artifacts.iter_mut() {
                let Some(a) = a.as_table_mut() else { continue };
                let sha = a.get("sha256").and_then(toml::Value::as_str).unwrap_or_default().to_string();
                let sig = key.sign(&super::signed_statement(&name, version, &sha));
                a.insert("signature".into(), toml::Value::String(sig));
                signed += 1;
            }
        }
    }
    let out = toml::to_string(&doc).map_err(|e| bad(e.to_string()))?;
    crate::agent::server::write_atomically(path, out.as_bytes(), 0).map_err(|e| bad(e.to_string()))?;
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_statement_and_key() {
        let key = SecretKey::generate();
        let tmp = tempfile::tempdir().unwrap();
        key.save(&tmp.path().join("k"), &tmp.path().join("k.pub")).unwrap();
        let public = PublicKey::load(&tmp.path().join("k.pub")).unwrap();
        let st = crate::artifact::signed_statement("hello-svc", "1.0.0", &"a".repeat(64));
        let sig = key.sign(&st);
        assert_eq!(public.verify(&st, &sig), Ok(()));
        let other = crate::artifact::signed_statement("hello-svc", "1.0.1", &"a".repeat(64));
        assert!(public.verify(&other, &sig).is_err());
        let stranger = SecretKey::generate().sign(&st);
        assert_eq!(
            public.verify(&st, &stranger),
            Err("it was made by another key or for another artifact".to_string())
        );
        assert_eq!(public.verify(&st, "zz"), Err("the signature is not 128 hex digits".to_string()));
    }
}
