//! `extension.toml`, the manifest at the root of every artifact: what the extension is,
//! what it needs, its lifecycle hooks, how its health is probed and the service it
//! runs, if any.
//!
//! ```toml
//! name = "hello-svc"
//! version = "2.0.0"
//! description = "A tiny HTTP service"
//! requires = []                                   # agent capabilities
//! depends = [{ name = "log-shipper", version = ">= 1.4" }]
//!
//! [hooks]                                         # each run with `sh -c` in the version's directory
//! install = "sh hooks/install.sh"                 # once, before the version can be activated
//! activate = "sh hooks/activate.sh"               # each time it becomes the active version
//! deactivate = "sh hooks/deactivate.sh"           # each time it stops being the active version
//! remove = "sh hooks/remove.sh"                   # before the extension is removed
//! timeout_secs = 30                               # for each hook
//!
//! [service]                                       # a supervised child process, started on activate
//! command = ["python3", "server.py"]              # argv, no shell; $PORT is the port the agent chose
//!
//! [health]
//! http = "http://127.0.0.1:${PORT}/health"        # a GET that must answer 2xx ...
//! # command = "sh check.sh"                       # ... or a command that must exit 0
//! interval_ms = 1000
//! timeout_ms = 1000
//!
//! [metrics]                                       # optional: the service's own Prometheus endpoint
//! prometheus = "http://127.0.0.1:${PORT}/metrics"
//! requests = "hello_requests_total"               # counter of requests
//! errors = "hello_errors_total"                   # counter of failed requests
//! latency = "hello_request_seconds"               # histogram of latency, seconds
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::ArtifactError;
use crate::agent::names::{self, Kind};
use crate::ops::VersionReq;

pub const MANIFEST_FILE: &str = "extension.toml";

#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub requires: Vec<String>,
    pub depends: Vec<(String, VersionReq)>,
    pub hooks: Hooks,
    pub service: Option<Service>,
    pub health: Option<Health>,
    /// The extension's own Prometheus endpoint, as a health source.
    pub metrics: Option<crate::agent::prom::PromSpec>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hooks {
    pub install: Option<String>,
    pub activate: Option<String>,
    pub deactivate: Option<String>,
    pub remove: Option<String>,
    pub timeout: Duration,
}

/// Which lifecycle hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Install,
    Activate,
    Deactivate,
    Remove,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Install => "install",
            Hook::Activate => "activate",
            Hook::Deactivate => "deactivate",
            Hook::Remove => "remove",
        }
    }
}

impl Hooks {
    pub fn get(&self, hook: Hook) -> Option<&str> {
        match hook {
            Hook::Install => self.install.as_deref(),
            Hook::Activate => self.activate.as_deref(),
            Hook::Deactivate => self.deactivate.as_deref(),
            Hook::Remove => self.remove.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Program and arguments; `${PORT}` in any of them is replaced by the service's port.
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `GET` this URL (`${PORT}` replaced); healthy when it answers 2xx in time.
    Http(String),
    /// Run with `sh -c` in the version's directory; healthy when it exits 0 in time.
    Command(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    depends: Vec<DependsFile>,
    #[serde(default)]
    hooks: HooksFile,
    service: Option<ServiceFile>,
    health: Option<HealthFile>,
    metrics: Option<MetricsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    prometheus: String,
    requests: String,
    errors: Option<String>,
    latency: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DependsFile {
    name: String,
    version: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HooksFile {
    install: Option<String>,
    activate: Option<String>,
    deactivate: Option<String>,
    remove: Option<String>,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    command: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    http: Option<String>,
    command: Option<String>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ArtifactError> {
        let bad = ArtifactError::Manifest;
        let f: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        names::check_name(Kind::Extension, &f.name).map_err(|e| bad(e.to_string()))?;
        names::check_version(&f.version).map_err(|e| bad(e.to_string()))?;
        let mut depends = Vec::new();
        for d in f.depends {
            names::check_name(Kind::Extension, &d.name).map_err(|e| bad(e.to_string()))?;
            let req = d.version.parse::<VersionReq>().map_err(|e| bad(format!("depends on `{}`: {e}", d.name)))?;
            depends.push((d.name, req));
        }
        let service = match f.service {
            Some(s) if s.command.is_empty() || s.command[0].trim().is_empty() => {
                return Err(bad("service.command is empty".into()))
            }
            Some(s) => Some(Service { command: s.command }),
            None => None,
        };
        let health = match f.health {
            None => None,
            Some(h) => {
                let probe = match (h.http, h.command) {
                    (Some(url), None) if url.starts_with("http://") || url.starts_with("https://") => Probe::Http(url),
                    (Some(url), None) => return Err(bad(format!("health.http `{url}` is not an http(s) URL"))),
                    (None, Some(cmd)) if !cmd.trim().is_empty() => Probe::Command(cmd),
                    (None, Some(_)) => return Err(bad("health.command is empty".into())),
                    (Some(_), Some(_)) => return Err(bad("health has both http and command; give one".into())),
                    (None, None) => return Err(bad("health needs http or command".into())),
                };
                Some(Health {
                    probe,
                    interval: Duration::from_millis(h.interval_ms.unwrap_or(1000).clamp(50, 3_600_000)),
                    timeout: Duration::from_millis(h.timeout_ms.unwrap_or(1000).clamp(10, 600_000)),
                })
            }
        };
        let metrics = match f.metrics {
            Some(m) if !(m.prometheus.starts_with("http://") || m.prometheus.starts_with("https://")) => {
                return Err(bad(format!("metrics.prometheus `{}` is not an http(s) URL", m.prometheus)))
            }
            Some(m) => Some(crate::agent::prom::PromSpec {
                url: m.prometheus,
                requests: m.requests,
                errors: m.errors,
                latency: m.latency,
            }),
            None => None,
        };
        Ok(Manifest {
            metrics,
            name: f.name,
            version: f.version,
            description: f.description,
            requires: f.requires,
            depends,
            hooks: Hooks {
                install: f.hooks.install,
                activate: f.hooks.activate,
                deactivate: f.hooks.deactivate,
                remove: f.hooks.remove,
                timeout: Duration::from_secs(f.hooks.timeout_secs.unwrap_or(30).clamp(1, 3600)),
            },
            service,
            health,
        })
    }

    /// Reads `extension.toml` from an unpacked version's directory.
    pub fn load(dir: &std::path::Path) -> Result<Manifest, ArtifactError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ArtifactError::Manifest(format!("cannot read {MANIFEST_FILE} at the archive's root: {e}")))?;
        Manifest::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_manifest_parses() {
        let m = Manifest::parse(
            r#"
name = "hello-svc"
version = "2.0.0"
depends = [{ name = "log-shipper", version = ">= 1.4" }]
[hooks]
install = "true"
timeout_secs = 5
[service]
command = ["python3", "server.py"]
[health]
http = "http://127.0.0.1:${PORT}/health"
interval_ms = 200
"#,
        )
        .unwrap();
        assert_eq!(m.version, "2.0.0");
        assert_eq!(m.hooks.get(Hook::Install), Some("true"));
        assert_eq!(m.hooks.timeout, Duration::from_secs(5));
        assert_eq!(m.service.unwrap().command, ["python3", "server.py"]);
        let h = m.health.unwrap();
        assert_eq!(h.probe, Probe::Http("http://127.0.0.1:${PORT}/health".into()));
        assert_eq!(h.interval, Duration::from_millis(200));
        assert_eq!(m.depends[0].0, "log-shipper");
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let e = Manifest::parse("name = \"../x\"\nversion = \"1\"\n").unwrap_err().to_string();
        assert!(e.contains("extension name `../x` is not valid"), "{e}");
        let e = Manifest::parse("name = \"x\"\nversion = \"1\"\n[health]\nhttp = \"ftp://h\"\n").unwrap_err();
        assert_eq!(e.to_string(), "extension.toml: health.http `ftp://h` is not an http(s) URL");
        let e = Manifest::parse("name = \"x\"\nversion = \"1\"\n[service]\ncommand = []\n").unwrap_err();
        assert_eq!(e.to_string(), "extension.toml: service.command is empty");
    }
}
