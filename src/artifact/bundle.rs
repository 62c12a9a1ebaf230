//! Offline bundles: a catalog and its artifacts in one `.tar.gz`, for a Parley with no
//! network. Inside:
//!
//! ```text
//! bundle.toml          format, and every other file with its SHA-256 and size
//! bundle.sig           optional: hex Ed25519 signature of bundle.toml's SHA-256
//! catalog.toml         the catalog, artifact URLs relative to the bundle
//! artifacts/<name>-<version>.tar.gz
//! ```
//!
//! `verify` unpacks (with the same refusals as an artifact) into a temporary directory
//! and checks everything, naming each problem; `import` verifies, then copies the
//! artifacts under a directory and merges the catalog there, which becomes the
//! artifact source (`catalog = "DIR/catalog.toml"`). An incremental bundle (created
//! with the target's catalog) carries only the artifacts the target lacks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sign::{PublicKey, SecretKey};
use super::{fetch, sha256_hex, ArtifactError, ArtifactRef};
use crate::agent::real::SignatureCheck;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("the bundle does not check: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

fn file_err(path: &Path) -> impl FnOnce(String) -> BundleError + '_ {
    move |reason| BundleError::File { path: path.display().to_string(), reason }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleManifest {
    format: u32,
    #[serde(default)]
    file: Vec<BundleFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleFile {
    path: String,
    sha256: String,
    size: u64,
}

fn bundle_statement(manifest: &[u8]) -> String {
    format!("parley-bundle v1\n{}\n", sha256_hex(manifest))
}

/// What `create` put in a bundle.
#[derive(Debug)]
pub struct Created {
    pub artifacts: usize,
    pub skipped: usize,
    pub signed: bool,
}

/// Packs `catalog` (a file) and its artifacts into `out`. With `have` (the target's
/// catalog), artifacts it already has with the same hash are left out.
pub async fn create(
    catalog: &Path,
    have: Option<&Path>,
    key: Option<&SecretKey>,
    out: &Path,
) -> Result<Created, BundleError> {
    let text = std::fs::read_to_string(catalog).map_err(|e| file_err(catalog)(e.to_string()))?;
    let parsed = crate::topology::Catalog::from_toml(&text, &catalog.display().to_string())
        .map_err(|e| file_err(catalog)(e.to_string()))?
        .relative_to(catalog.parent());
    let known: BTreeMap<(String, String), ArtifactRef> = match have {
        Some(h) => {
            let t = std::fs::read_to_string(h).map_err(|e| file_err(h)(e.to_string()))?;
            crate::topology::Catalog::from_toml(&t, &h.display().to_string())
                .map_err(|e| file_err(h)(e.to_string()))?
                .artifacts()
        }
        None => BTreeMap::new(),
    };
    let work = tempfile::tempdir().map_err(|e| file_err(out)(e.to_string()))?;
    std::fs::create_dir(work.path().join("artifacts")).map_err(|e| file_err(out)(e.to_string()))?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| file_err(catalog)(e.to_string()))?;
    let http = reqwest::Client::new();
    let (mut artifacts, mut skipped) = (0, 0);
    let all = parsed.artifacts();
    if let Some(toml::Value::Array(exts)) = doc.get_mut("extension") {
        for ext in exts.iter_mut().filter_map(toml::Value::as_table_mut) {
            let name = ext.get("name").and_then(toml::Value::as_str).unwrap_or_default().to_string();
            let Some(toml::Value::Table(table)) = ext.get_mut("artifacts") else { continue };
            let versions: Vec<String> = table.keys().cloned().collect();
            for version in versions {
                let normal = version.parse::<crate::ops::Version>().map(|v| v.to_string()).unwrap_or(version.clone());
                let Some(a) = all.get(&(name.clone(), normal.clone())) else { continue };
                if known.get(&(name.clone(), normal)).is_some_and(|k| k.sha256.eq_ignore_ascii_case(&a.sha256)) {
                    table.remove(&version);
                    skipped += 1;
                    continue;
                }
                let file = format!("artifacts/{name}-{version}.tar.gz");
                // Fetched and verified like an agent would: a bundle never carries a
                // file that does not match its catalog.
                let limits = fetch::FetchLimits::default();
                fetch::fetch(&http, a, &work.path().join(&file), limits).await?;
                if let Some(toml::Value::Table(entry)) = table.get_mut(&version) {
                    entry.insert("url".into(), toml::Value::String(file));
                }
                artifacts += 1;
            }
        }
    }
    let catalog_text = toml::to_string(&doc).map_err(|e| file_err(catalog)(e.to_string()))?;
    std::fs::write(work.path().join("catalog.toml"), &catalog_text).map_err(|e| file_err(out)(e.to_string()))?;
    let mut files = Vec::new();
    for rel in list_files(work.path()) {
        let bytes = std::fs::read(work.path().join(&rel)).map_err(|e| file_err(out)(e.to_string()))?;
        files.push(BundleFile { path: rel, sha256: sha256_hex(&bytes), size: bytes.len() as u64 });
    }
    let manifest =
        toml::to_string(&BundleManifest { format: 1, file: files }).map_err(|e| file_err(out)(e.to_string()))?;
    std::fs::write(work.path().join("bundle.toml"), &manifest).map_err(|e| file_err(out)(e.to_string()))?;
    if let Some(k) = key {
        std::fs::write(work.path().join("bundle.sig"), format!("{}\n", k.sign(&bundle_statement(manifest.as_bytes()))))
            .map_err(|e| file_err(out)(e.to_string()))?;
    }
    write_tar_gz(work.path(), out).map_err(|e| file_err(out)(e.to_string()))?;
    Ok(Created { artifacts, skipped, signed: key.is_some() })
}

/// Relative paths of every file under `root`, sorted.
fn list_files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(at) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn write_tar_gz(dir: &Path, out: &Path) -> std::io::Result<()> {
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp)?;
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    b.follow_symlinks(false);
    for rel in list_files(dir) {
        b.append_path_with_name(dir.join(&rel), &rel)?;
    }
    b.into_inner()?.finish()?.sync_all()?;
    std::fs::rename(&tmp, out)
}

/// The result of checking a bundle.
#[derive(Debug)]
pub struct Checked {
    /// Everything wrong, one line each; empty when the bundle checks.
    pub problems: Vec<String>,
    pub artifacts: usize,
    /// `Some(true)`: signed and the signature verified; `Some(false)`: signed, not checked (no key).
    pub signature: Option<bool>,
    /// The unpacked bundle (removed when dropped).
    dir: tempfile::TempDir,
}

/// Unpacks and checks a bundle completely. With `key`, a missing or wrong signature
/// is a problem.
pub fn verify(bundle: &Path, key: Option<&PublicKey>) -> Result<Checked, BundleError> {
    let dir = tempfile::tempdir().map_err(|e| file_err(bundle)(e.to_string()))?;
    super::unpack::unpack_tar_gz(bundle, dir.path())?;
    let root = dir.path();
    let mut problems = Vec::new();
    let manifest_bytes =
        std::fs::read(root.join("bundle.toml")).map_err(|_| file_err(bundle)("it has no bundle.toml".into()))?;
    let manifest: BundleManifest = toml::from_str(&String::from_utf8_lossy(&manifest_bytes))
        .map_err(|e| file_err(bundle)(format!("bundle.toml: {e}")))?;
    if manifest.format != 1 {
        problems.push(format!("bundle.toml is format {}, this Parley reads format 1", manifest.format));
    }
    let listed: BTreeMap<&str, &BundleFile> = manifest.file.iter().map(|f| (f.path.as_str(), f)).collect();
    for f in &manifest.file {
        match std::fs::read(root.join(&f.path)) {
            Err(_) => problems.push(format!("{} is listed but missing", f.path)),
            Ok(bytes) => {
                let got = sha256_hex(&bytes);
                if bytes.len() as u64 != f.size {
                    problems.push(format!("{} is {} bytes, bundle.toml says {}", f.path, bytes.len(), f.size));
                } else if !got.eq_ignore_ascii_case(&f.sha256) {
                    problems.push(format!("{} has SHA-256 {got}, bundle.toml says {}", f.path, f.sha256));
                }
            }
        }
    }
    for rel in list_files(root) {
        if rel != "bundle.toml" && rel != "bundle.sig" && !listed.contains_key(rel.as_str()) {
            problems.push(format!("{rel} is in the bundle but not in bundle.toml"));
        }
    }
    let signature = match (std::fs::read_to_string(root.join("bundle.sig")).ok(), key) {
        (None, Some(_)) => {
            problems.push("the bundle is not signed, and a public key was given".into());
            None
        }
        (None, None) => None,
        (Some(sig), Some(k)) => match k.verify(&bundle_statement(&manifest_bytes), sig.trim()) {
            Ok(()) => Some(true),
            Err(why) => {
                problems.push(format!("bundle.sig does not verify: {why}"));
                Some(false)
            }
        },
        (Some(_), None) => Some(false),
    };
    let mut artifacts = 0;
    match std::fs::read_to_string(root.join("catalog.toml")) {
        Err(_) => problems.push("catalog.toml is missing".into()),
        Ok(text) => match crate::topology::Catalog::from_toml(&text, "catalog.toml") {
            Err(e) => problems.push(e.to_string()),
            Ok(c) => {
                for ((name, version), a) in c.artifacts() {
                    artifacts += 1;
                    match listed.get(a.url.as_str()) {
                        None => problems.push(format!("{name} {version}: its artifact {} is not in the bundle", a.url)),
                        Some(f) if !f.sha256.eq_ignore_ascii_case(&a.sha256) => problems.push(format!(
                            "{name} {version}: the catalog says SHA-256 {}, the bundle's file has {}",
                            a.sha256, f.sha256
                        )),
                        Some(_) => {}
                    }
                }
            }
        },
    }
    Ok(Checked { problems, artifacts, signature, dir })
}

/// Verifies `bundle`, then copies its artifacts into `into/artifacts/` and merges its
/// catalog into `into/catalog.toml`. Answers how many artifacts were imported.
pub fn import(bundle: &Path, key: Option<&PublicKey>, into: &Path) -> Result<usize, BundleError> {
    let checked = verify(bundle, key)?;
    if !checked.problems.is_empty() {
        return Err(BundleError::Invalid(checked.problems));
    }
    let root = checked.dir.path();
    let art = into.join("artifacts");
    std::fs::create_dir_all(&art).map_err(|e| file_err(&art)(e.to_string()))?;
    let text = std::fs::read_to_string(root.join("catalog.toml")).map_err(|e| file_err(bundle)(e.to_string()))?;
    let incoming: toml::Table = toml::from_str(&text).map_err(|e| file_err(bundle)(e.to_string()))?;
    let target = into.join("catalog.toml");
    let mut merged: toml::Table = match std::fs::read_to_string(&target) {
        Ok(t) => toml::from_str(&t).map_err(|e| file_err(&target)(e.to_string()))?,
        Err(_) => toml::Table::new(),
    };
    let mut imported = 0;
    let empty = Vec::new();
    let exts = incoming.get("extension").and_then(toml::Value::as_array).unwrap_or(&empty);
    for ext in exts.iter().filter_map(toml::Value::as_table) {
        if let Some(artifacts) = ext.get("artifacts").and_then(toml::Value::as_table) {
            for a in artifacts.values().filter_map(toml::Value::as_table) {
                if let Some(url) = a.get("url").and_then(toml::Value::as_str) {
                    let from = root.join(url);
                    let to = into.join(url);
                    std::fs::copy(&from, &to).map_err(|e| file_err(&to)(e.to_string()))?;
                    imported += 1;
                }
            }
        }
        merge_extension(&mut merged, ext);
    }
    let out = toml::to_string(&merged).map_err(|e| file_err(&target)(e.to_string()))?;
    // The merged catalog must load, or nothing is written.
    crate::topology::Catalog::from_toml(&out, &target.display().to_string())
        .map_err(|e| file_err(&target)(e.to_string()))?;
    crate::agent::server::write_atomically(&target, out.as_bytes(), 0).map_err(|e| file_err(&target)(e.to_string()))?;
    Ok(imported)
}

/// Adds `ext`'s versions and artifacts to the extension of the same name in `into`.
fn merge_extension(into: &mut toml::Table, ext: &toml::Table) {
    let list = into.entry("extension").or_insert_with(|| toml::Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else { return };
    let name = ext.get("name").and_then(toml::Value::as_str);
    let Some(existing) = list
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|e| e.get("name").and_then(toml::Value::as_str) == name)
    else {
        list.push(toml::Value::Table(ext.clone()));
        return;
    };
    if let (Some(toml::Value::Array(have)), Some(toml::Value::Array(new))) =
        (existing.get("versions").cloned(), ext.get("versions"))
    {
        let mut all = have;
        for v in new {
            if !all.contains(v) {
                all.push(v.clone());
            }
        }
        existing.insert("versions".into(), toml::Value::Array(all));
    }
    if let Some(toml::Value::Table(new)) = ext.get("artifacts") {
        let arts = existing.entry("artifacts").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(arts) = arts.as_table_mut() {
            for (k, v) in new {
                arts.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Where `import` puts things, for messages.
pub fn catalog_in(dir: &Path) -> PathBuf {
    dir.join("catalog.toml")
}
