//! The real agent's extensions: installs of verified artifacts under the agent's own
//! directory, switched atomically, with hooks, a supervised service and measured
//! health. Used by `parley agent --dir DIR`; the demo fleet and the simulator never
//! touch it.
//!
//! Layout under `DIR/extensions/<name>/`:
//!
//! ```text
//! <version>/            an unpacked, verified version (appears by rename, whole)
//! current -> <version>  the active version (a relative link, replaced by rename)
//! .staging-<version>/   an unpack in progress (removed at start: a crash leaves none)
//! ```
//!
//! and `DIR/downloads/` (partial downloads, resumed), `DIR/logs/` (one log per service
//! version and per hook run).
//!
//! An install: fetch, verify the SHA-256 (before anything is unpacked), unpack into
//! staging, check the manifest, run `install` there, rename staging to `<version>`;
//! then `deactivate` the old version (its service stopped), switch `current`,
//! `activate` the new one (its service started and probed). A failing step leaves
//! the previous version active and says why; the previous version's directory is
//! kept, so a rollback is a link switch plus hooks, never a download.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::protocol::{ExtensionHealth, Metrics, ProbeState};
use crate::agent::service::{self, ProbeWindow, ProcSampler, Supervised};
use crate::artifact::fetch::{self, FetchLimits};
use crate::artifact::manifest::{Hook, Manifest};
use crate::artifact::unpack;
use crate::artifact::{ArtifactError, ArtifactRef};

/// The file in a version's directory naming the artifact it was unpacked from.
const MARKER: &str = ".parley-artifact";
/// How long activation waits for a new service to answer its first probe.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(
        "{name} {version} is not on this agent and the request names no artifact; this agent installs real artifacts (url and sha256, from the catalog)"
    )]
    NoArtifact { name: String, version: String },
    #[error("the artifact's extension.toml is {found}, not {name} {version}")]
    WrongManifest { name: String, version: String, found: String },
    #[error("the artifact for {name} {version} is not signed, and this agent accepts only signed artifacts")]
    Unsigned { name: String, version: String },
    #[error("the signature of {name} {version} does not verify with this agent's public key: {why}")]
    BadSignature { name: String, version: String, why: String },
    #[error("{what} failed: {why}; {left}")]
    Step { what: String, why: String, left: String },
    #[error("{name} is not installed")]
    NotInstalled { name: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let context = context.into();
    move |source| InstallError::Io { context, source }
}

/// Verifies artifact signatures (see `artifact::signed_statement`).
pub trait SignatureCheck: Send + Sync + std::fmt::Debug {
    /// `Ok` when `signature` (hex) signs `statement`.
    fn verify(&self, statement: &str, signature: &str) -> Result<(), String>;
}

#[derive(Debug, Clone)]
pub struct RealOptions {
    pub dir: PathBuf,
    pub fetch: FetchLimits,
    pub start_timeout: Duration,
    /// When set, only artifacts signed by this key are installed.
    pub signatures: Option<Arc<dyn SignatureCheck>>,
}

impl RealOptions {
    pub fn new(dir: PathBuf) -> RealOptions {
        RealOptions { dir, fetch: FetchLimits::default(), start_timeout: DEFAULT_START_TIMEOUT, signatures: None }
    }
}

/// One active version and what runs for it.
#[derive(Debug)]
struct Active {
    version: String,
    dir: PathBuf,
    manifest: Manifest,
    service: Option<Supervised>,
    window: Arc<ProbeWindow>,
    _prober: Option<service::AbortOnDrop>,
    /// Error rate and p95 from the extension's own Prometheus endpoint, when it has one.
    prom: Arc<Mutex<PromFigures>>,
    _scraper: Option<service::AbortOnDrop>,
}

#[derive(Debug, Default, Clone)]
struct PromFigures {
    error_rate_pct: Option<f64>,
    p95_ms: Option<f64>,
    /// The last scrape as read (counter totals and buckets); `None` while the
    /// endpoint does not answer.
    last: Option<crate::agent::prom::Scrape>,
}

/// What a real agent measures of one active version, for `GET /metrics`: nothing in
/// it is derived from anything but a probe, `/proc` or the extension's own endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub name: String,
    pub version: String,
    /// The last probe's result and how long it took, seconds; `None`: no probe yet
    /// (or the manifest names none).
    pub last_probe: Option<(bool, f64)>,
    /// Probes since activation: (passed, failed).
    pub probes: (u64, u64),
    /// The extension's own endpoint as last read, when the manifest names one and it
    /// answers.
    pub scrape: Option<crate::agent::prom::Scrape>,
}

#[derive(Debug)]
pub struct RealExtensions {
    options: RealOptions,
    http: reqwest::Client,
    probes: reqwest::Client,
    /// One install or removal at a time.
    busy: tokio::sync::Mutex<()>,
    active: Mutex<BTreeMap<String, Active>>,
    sampler: ProcSampler,
}

impl RealExtensions {
    /// Opens the agent directory, cleaning up what a killed agent left (staging
    /// directories, half-made links) and finding each extension's active version from
    /// its `current` link. Nothing is started yet: see [`RealExtensions::resume`].
    pub fn open(options: RealOptions) -> Result<(Arc<RealExtensions>, BTreeMap<String, String>), InstallError> {
        let root = options.dir.join("extensions");
        for d in [&root, &options.dir.join("downloads"), &options.dir.join("logs")] {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&root).map_err(io(format!("reading {}", root.display())))?.flatten() {
            let ext_dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !ext_dir.is_dir() || !crate::agent::names::is_name(&name) {
                continue;
            }
            for e in std::fs::read_dir(&ext_dir).map_err(io(format!("reading {}", ext_dir.display())))?.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(".staging-") {
                    tracing::warn!(path = %e.path().display(), "removing an unfinished unpack");
                    let _ = std::fs::remove_dir_all(e.path());
                } else if n.starts_with(".current.") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            match current_of(&ext_dir) {
                Some(v) => {
                    found.insert(name, v);
                }
                None => {
                    // A link to nothing (or no link): nothing is active.
                    let _ = std::fs::remove_file(ext_dir.join("current"));
                }
            }
        }
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().map_err(|e| {
            InstallError::Io { context: "building the HTTP client".into(), source: std::io::Error::other(e) }
        })?;
        let probes = reqwest::Client::builder().no_proxy().build().map_err(|e| InstallError::Io {
            context: "building the HTTP client".into(),
            source: std::io::Error::other(e),
        })?;
        let real = Arc::new(RealExtensions {
            options,
            http,
            probes,
            busy: tokio::sync::Mutex::new(()),
            active: Mutex::new(BTreeMap::new()),
            sampler: ProcSampler::default(),
        });
        Ok((real, found))
    }

    /// Starts the services of the active versions (no hooks: they ran when the
    /// versions were activated). A version that cannot be read is reported and left.
    pub async fn resume(&self) {
        let _busy = self.busy.lock().await;
        let root = self.options.dir.join("extensions");
        let Ok(entries) = std::fs::read_dir(&root) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = current_of(&entry.path()) else { continue };
            let dir = entry.path().join(&version);
            match Manifest::load(&dir) {
                Ok(m) => match self.activate(&name, &version, &dir, m, false).await {
                    Ok(a) => {
                        self.lock().insert(name, a);
                    }
                    Err(why) => {
                        tracing::error!(extension = %name, %version, %why, "could not start the active version")
                    }
                },
                Err(e) => tracing::error!(extension = %name, %version, error = %e, "the active version's manifest"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// Installs and activates `version` of `name`. On any failure the previous version
    /// (if any) is active, and the error says which.
    pub async fn install(&self, name: &str, version: &str, artifact: Option<&ArtifactRef>) -> Result<(), InstallError> {
        let _busy = self.busy.lock().await;
        let ext_dir = self.options.dir.join("extensions").join(name);
        let old = current_of(&ext_dir);
        if old.as_deref() == Some(version) && self.lock().contains_key(name) {
            return Ok(());
        }
        let vdir = ext_dir.join(version);
        let on_disk = read_marker(&vdir);
        let reuse = match (artifact, &on_disk) {
            (Some(a), Some(have)) => have.eq_ignore_ascii_case(&a.sha256),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if let (Some(a), true) = (artifact, self.options.signatures.is_some()) {
            // Checked even for a version on disk: the request must be one the key signed.
            self.check_signature(name, version, a)?;
        }
        if !reuse {
            let a = artifact.ok_or_else(|| InstallError::NoArtifact { name: name.into(), version: version.into() })?;
            a.check()?;
            self.check_signature(name, version, a)?;
            self.unpack_new(name, version, a, &ext_dir, &vdir).await?;
        }
        let manifest = Manifest::load(&vdir)?;
        self.switch(name, old, version, &ext_dir, manifest).await
    }

    fn check_signature(&self, name: &str, version: &str, a: &ArtifactRef) -> Result<(), InstallError> {
        let Some(check) = &self.options.signatures else { return Ok(()) };
        let sig = a
            .signature
            .as_deref()
            .ok_or_else(|| InstallError::Unsigned { name: name.into(), version: version.into() })?;
        check
            .verify(&crate::artifact::signed_statement(name, version, &a.sha256), sig)
            .map_err(|why| InstallError::BadSignature { name: name.into(), version: version.into(), why })
    }

    /// Fetch, verify, unpack into staging, check the manifest, run `install`, rename.
    async fn unpack_new(
        &self,
        name: &str,
        version: &str,
        a: &ArtifactRef,
        ext_dir: &Path,
        vdir: &Path,
    ) -> Result<(), InstallError> {
        let downloads = self.options.dir.join("downloads");
        let part = downloads.join(format!("{name}-{version}.part"));
        let fetched = fetch::fetch(&self.http, a, &part, self.options.fetch).await?;
        std::fs::create_dir_all(ext_dir).map_err(io(format!("creating {}", ext_dir.display())))?;
        let staging = ext_dir.join(format!(".staging-{version}"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(io(format!("creating {}", staging.display())))?;
        let result = self.prepare(name, version, &fetched.path, &staging, &fetched.sha256).await;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        if vdir.exists() {
            // An older unpack of another artifact under the same version, not active.
            std::fs::remove_dir_all(vdir).map_err(io(format!("removing {}", vdir.display())))?;
        }
        std::fs::rename(&staging, vdir).map_err(io(format!("moving {} into place", staging.display())))?;
        sync_dir(ext_dir);
        let _ = std::fs::remove_file(&part);
        tracing::info!(extension = %name, %version, bytes = fetched.size, "unpacked and verified");
        Ok(())
    }

    async fn prepare(
        &self,
        name: &str,
        version: &str,
        archive: &Path,
        staging: &Path,
        sha256: &str,
    ) -> Result<(), InstallError> {
        let (archive, into) = (archive.to_path_buf(), staging.to_path_buf());
        tokio::task::spawn_blocking(move || unpack::unpack(&archive, &into))
            .await
            .map_err(|e| ArtifactError::Archive(e.to_string()))??;
        let manifest = Manifest::load(staging)?;
        if manifest.name != name || manifest.version != version {
            return Err(InstallError::WrongManifest {
                name: name.into(),
                version: version.into(),
                found: format!("{} {}", manifest.name, manifest.version),
            });
        }
        std::fs::write(staging.join(MARKER), format!("{sha256}\n")).map_err(io("writing the artifact marker"))?;
        if let Some(cmd) = manifest.hooks.get(Hook::Install) {
            let log = self.hook_log(name, version, Hook::Install);
            run_hook(cmd, staging, manifest.hooks.timeout, None, &log).await.map_err(|why| InstallError::Step {
                what: format!("the install hook of {name} {version}"),
                why,
                left: "nothing was changed".into(),
            })?;
        }
        Ok(())
    }

    fn hook_log(&self, name: &str, version: &str, hook: Hook) -> PathBuf {
        self.options.dir.join("logs").join(format!("{name}-{version}.{}.log", hook.as_str()))
    }

    /// Deactivates `old`, switches `current` to `new`, activates it; on failure puts
    /// `old` back.
    async fn switch(
        &self,
        name: &str,
        old: Option<String>,
        new: &str,
        ext_dir: &Path,
        manifest: Manifest,
    ) -> Result<(), InstallError> {
        let previous = self.lock().remove(name);
        if let Some(prev) = previous {
            if let Err(why) = self.deactivate(name, &prev).await {
                let v = prev.version.clone();
                self.lock().insert(name.to_string(), prev);
                return Err(InstallError::Step {
                    what: format!("the deactivate hook of {name} {v}"),
                    why,
                    left: format!("{name} {v} is still active"),
                });
            }
            if let Some(s) = prev.service {
                s.stop().await;
            }
        }
        set_current(ext_dir, new)?;
        let vdir = ext_dir.join(new);
        match self.activate(name, new, &vdir, manifest, true).await {
            Ok(a) => {
                self.lock().insert(name.to_string(), a);
                prune(ext_dir, new, old.as_deref());
                tracing::info!(extension = %name, version = %new, previous = ?old, "active");
                Ok(())
            }
            Err(why) => {
                let left = match &old {
                    Some(v) => {
                        set_current(ext_dir, v)?;
                        let dir = ext_dir.join(v);
                        let back = match Manifest::load(&dir) {
                            Ok(m) => self.activate(name, v, &dir, m, true).await,
                            Err(e) => Err(e.to_string()),
                        };
                        match back {
                            Ok(a) => {
                                self.lock().insert(name.to_string(), a);
                                format!("{name} {v} is active again")
                            }
                            Err(e) => format!("{name} {v} is linked as current but did not start again: {e}"),
                        }
                    }
                    None => {
                        let _ = std::fs::remove_file(ext_dir.join("current"));
                        sync_dir(ext_dir);
                        format!("{name} is not active")
                    }
                };
                Err(InstallError::Step { what: format!("activating {name} {new}"), why, left })
            }
        }
    }

    /// Runs `activate` (when `hook`), starts the service and waits for its first probe.
    async fn activate(
        &self,
        name: &str,
        version: &str,
        dir: &Path,
        manifest: Manifest,
        hook: bool,
    ) -> Result<Active, String> {
        let port = match &manifest.service {
            Some(_) => Some(service::free_port().map_err(|e| format!("no free port for the service: {e}"))?),
            None => None,
        };
        if hook {
            if let Some(cmd) = manifest.hooks.get(Hook::Activate) {
                let log = self.hook_log(name, version, Hook::Activate);
                run_hook(cmd, dir, manifest.hooks.timeout, port, &log)
                    .await
                    .map_err(|w| format!("the activate hook {w}"))?;
            }
        }
        let service = match (&manifest.service, port) {
            (Some(s), Some(port)) => {
                let log = self.options.dir.join("logs").join(format!("{name}-{version}.log"));
                Some(Supervised::start(s.command.clone(), dir.to_path_buf(), log, port))
            }
            _ => None,
        };
        let window = Arc::new(ProbeWindow::default());
        // The first probe result is in the window before the install answers, so the
        // very next health reading already measures the new version.
        let deadline = Instant::now() + self.options.start_timeout;
        if let Some(h) = &manifest.health {
            loop {
                let r = service::probe_once(&self.probes, h, dir, port).await;
                if r.ok || Instant::now() >= deadline {
                    window.push(r);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(s) = &service {
            // A service must be up after its first probe (or a short settle without one).
            if manifest.health.is_none() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if s.pid().is_none() {
                let log = s.log.display().to_string();
                if let Some(s) = service {
                    s.stop().await;
                }
                return Err(format!("its service exited right after starting (see {log})"));
            }
        }
        let prober = manifest
            .health
            .clone()
            .map(|h| service::spawn_prober(self.probes.clone(), h, dir.to_path_buf(), port, Arc::clone(&window)));
        let prom = Arc::new(Mutex::new(PromFigures::default()));
        let every = manifest.health.as_ref().map(|h| h.interval).unwrap_or(Duration::from_secs(1));
        let scraper = manifest
            .metrics
            .clone()
            .map(|spec| spawn_scraper(self.probes.clone(), spec, port, every, Arc::clone(&prom)));
        Ok(Active {
            version: version.into(),
            dir: dir.to_path_buf(),
            manifest,
            service,
            window,
            _prober: prober,
            prom,
            _scraper: scraper,
        })
    }

    async fn deactivate(&self, name: &str, a: &Active) -> Result<(), String> {
        let Some(cmd) = a.manifest.hooks.get(Hook::Deactivate) else { return Ok(()) };
        let log = self.hook_log(name, &a.version, Hook::Deactivate);
        run_hook(cmd, &a.dir, a.manifest.hooks.timeout, a.service.as_ref().map(|s| s.port), &log).await
    }

    /// Deactivates and removes `name`: its service stopped, `remove` run, its
    /// directory gone.
    pub async fn remove(&self, name: &str) -> Result<(), InstallError> {
        let _busy = self.busy.lock().await;
        let ext_dir = self.options.dir.join("extensions").join(name);
        let Some(a) = self.lock().remove(name) else {
            if ext_dir.exists() {
                std::fs::remove_dir_all(&ext_dir).map_err(io(format!("removing {}", ext_dir.display())))?;
                return Ok(());
            }
            return Err(InstallError::NotInstalled { name: name.into() });
        };
        if let Err(why) = self.deactivate(name, &a).await {
            let v = a.version.clone();
            self.lock().insert(name.to_string(), a);
            return Err(InstallError::Step {
                what: format!("the deactivate hook of {name} {v}"),
                why,
                left: format!("{name} {v} is still active"),
            });
        }
        let (version, dir, hooks) = (a.version.clone(), a.dir.clone(), a.manifest.hooks.clone());
        if let Some(s) = a.service {
            s.stop().await;
        }
        if let Some(cmd) = hooks.get(Hook::Remove) {
            let log = self.hook_log(name, &version, Hook::Remove);
            if let Err(why) = run_hook(cmd, &dir, hooks.timeout, None, &log).await {
                // The service is already stopped; the files go anyway, and the log says so.
                tracing::warn!(extension = %name, %version, %why, "the remove hook failed");
            }
        }
        let _ = std::fs::remove_file(ext_dir.join("current"));
        sync_dir(&ext_dir);
        std::fs::remove_dir_all(&ext_dir).map_err(io(format!("removing {}", ext_dir.display())))?;
        Ok(())
    }

    /// Stops every service (the agent is shutting down).
    pub async fn shutdown(&self) {
        let all: Vec<Active> = std::mem::take(&mut *self.lock()).into_values().collect();
        for a in all {
            if let Some(s) = a.service {
                s.stop().await;
            }
        }
    }

    /// What the agent measures: error rate and p95 from the probe windows, CPU and
    /// memory of the service processes. A figure with nothing behind it is NaN
    /// (`null` on the wire: unknown).
    pub fn metrics(&self) -> Metrics {
        let (results, pids, prom) = {
            let active = self.lock();
            let results: Vec<_> = active.values().flat_map(|a| a.window.snapshot()).collect();
            let pids: Vec<u32> = active.values().filter_map(|a| a.service.as_ref().and_then(Supervised::pid)).collect();
            let prom: Vec<PromFigures> =
                active.values().map(|a| a.prom.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect();
            (results, pids, prom)
        };
        let (error_rate_pct, p95_ms) = if results.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            let failed = results.iter().filter(|r| !r.ok).count();
            let mut ms: Vec<f64> = results.iter().map(|r| r.ms).collect();
            ms.sort_by(f64::total_cmp);
            let idx = ((ms.len() as f64 * 0.95).ceil() as usize).clamp(1, ms.len()) - 1;
            (failed as f64 * 100.0 / results.len() as f64, ms[idx])
        };
        // The service's own figures describe its real traffic, the probes its
        // availability: the worse of the two counts.
        let worst = |probe: f64, theirs: Option<f64>| match theirs {
            Some(t) if probe.is_nan() || t > probe => t,
            _ => probe,
        };
        let (error_rate_pct, p95_ms) =
            prom.iter().fold((error_rate_pct, p95_ms), |(e, p), f| (worst(e, f.error_rate_pct), worst(p, f.p95_ms)));
        let usage = if pids.is_empty() { None } else { self.sampler.usage(&pids) };
        let r = |x: f64, scale: f64| (x * scale).round() / scale;
        Metrics {
            cpu_pct: usage.map(|u| r(u.cpu_pct, 10.0)).unwrap_or(f64::NAN),
            mem_pct: usage.map(|u| r(u.mem_pct, 10.0)).unwrap_or(f64::NAN),
            error_rate_pct: r(error_rate_pct, 100.0),
            p95_ms: r(p95_ms, 1.0),
        }
    }

    /// What is measured of each active version, for `GET /metrics`.
    pub fn measured(&self) -> Vec<Measured> {
        self.lock()
            .iter()
            .map(|(name, a)| Measured {
                name: name.clone(),
                version: a.version.clone(),
                last_probe: a.window.snapshot().last().map(|r| (r.ok, r.ms / 1000.0)),
                probes: a.window.totals(),
                scrape: a.prom.lock().unwrap_or_else(|p| p.into_inner()).last.clone(),
            })
            .collect()
    }

    /// Per extension: where its health comes from and what it says now.
    pub fn health_of(&self, name: &str) -> Option<ExtensionHealth> {
        let active = self.lock();
        let a = active.get(name)?;
        let results = a.window.snapshot();
        let port = a.service.as_ref().map(|s| s.port);
        let probe = a.manifest.health.as_ref().map(|h| match &h.probe {
            crate::artifact::manifest::Probe::Http(u) => format!("GET {}", service::substitute(u, port)),
            crate::artifact::manifest::Probe::Command(c) => format!("command {c}"),
        });
        let state = match results.last() {
            None => ProbeState::Unknown,
            Some(r) if r.ok => ProbeState::Ok,
            Some(_) => ProbeState::Failing,
        };
        Some(ExtensionHealth { probe, state, pid: a.service.as_ref().and_then(Supervised::pid), port })
    }
}

/// Scrapes the extension's Prometheus endpoint every `every`; after each scrape,
/// `figures` holds the error rate and p95 since the scrape before.
fn spawn_scraper(
    http: reqwest::Client,
    spec: crate::agent::prom::PromSpec,
    port: Option<u16>,
    every: Duration,
    figures: Arc<Mutex<PromFigures>>,
) -> service::AbortOnDrop {
    let url = service::substitute(&spec.url, port);
    service::AbortOnDrop::spawn(async move {
        let mut last: Option<crate::agent::prom::Scrape> = None;
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let text = match http.get(&url).timeout(every.max(Duration::from_millis(500))).send().await {
                Ok(r) if r.status().is_success() => r.text().await.ok(),
                _ => None,
            };
            let Some(text) = text else {
                // No answer: what it said before is no longer known.
                *figures.lock().unwrap_or_else(|p| p.into_inner()) = PromFigures::default();
                last = None;
                continue;
            };
            let now = crate::agent::prom::parse(&text, &spec);
            {
                let mut f = figures.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(before) = &last {
                    (f.error_rate_pct, f.p95_ms) = crate::agent::prom::between(before, &now);
                }
                f.last = Some(now.clone());
            }
            last = Some(now);
        }
    })
}

/// The version `current` links to, when it is a version directory.
fn current_of(ext_dir: &Path) -> Option<String> {
    let target = std::fs::read_link(ext_dir.join("current")).ok()?;
    let v = target.to_str()?.to_string();
    if crate::agent::names::check_version(&v).is_err() || !ext_dir.join(&v).join(MARKER).is_file() {
        return None;
    }
    Some(v)
}

fn read_marker(vdir: &Path) -> Option<String> {
    std::fs::read_to_string(vdir.join(MARKER)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Points `current` at `version` atomically: a new link beside it, renamed over it.
fn set_current(ext_dir: &Path, version: &str) -> Result<(), InstallError> {
    let tmp = ext_dir.join(format!(".current.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(version, &tmp).map_err(io(format!("linking {}", tmp.display())))?;
    std::fs::rename(&tmp, ext_dir.join("current")).map_err(io(format!("switching {}/current", ext_dir.display())))?;
    sync_dir(ext_dir);
    Ok(())
}

/// Removes version directories other than the active one and the one before it.
fn prune(ext_dir: &Path, keep: &str, previous: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(ext_dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n == keep || Some(n.as_str()) == previous || n == "current" || n.starts_with('.') {
            continue;
        }
        if e.path().join(MARKER).is_file() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Runs a hook with `sh -c` in `dir` under `timeout`; its output goes to `log`.
/// `Err` says how it failed, with the last line it wrote.
async fn run_hook(cmd: &str, dir: &Path, timeout: Duration, port: Option<u16>, log: &Path) -> Result<(), String> {
    let out = std::fs::File::create(log).map_err(|e| format!("could not open its log {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd).current_dir(dir).kill_on_drop(true);
    c.stdin(std::process::Stdio::null()).stdout(out).stderr(err);
    // In its own process group, gone with the agent even when the agent is SIGKILLed.
    service::die_with_agent(&mut c);
    if let Some(p) = port {
        c.env("PORT", p.to_string());
    }
    let mut child = c.spawn().map_err(|e| format!("could not be started: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => {
            let tail = std::fs::read_to_string(log)
                .ok()
                .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string))
                .unwrap_or_default();
            let code = status.code().map(|c| format!("status {c}")).unwrap_or_else(|| "a signal".into());
            Err(if tail.is_empty() { format!("exited with {code}") } else { format!("exited with {code}: {tail}") })
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            // The hook and everything it started.
            service::kill_group(pid);
            let _ = child.kill().await;
            Err(format!("did not finish within {} s", timeout.as_secs()))
        }
    }
}
