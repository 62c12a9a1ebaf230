//! Parley's configuration: a TOML file (optional) with command-line overrides applied
//! by `main.rs`. The library never reads arguments; it gets a finished [`Config`].
//!
//! ```toml
//! # ~/.config/parley/parley.toml
//! data_dir = "/var/lib/parley"           # registry, history, logs, demo agent state
//! [registry]
//! url = "postgres://parley@db.example/parley"  # a team's PostgreSQL; omit for <data_dir>/parley.db
//! [fleet]
//! inventory = "/etc/parley/fleet.toml"   # omit to run the embedded demo fleet
//! token_env = "PARLEY_AGENT_TOKEN"       # environment variable holding the agents' bearer token
//! timeout_ms = 2000                      # bound on every status, health and action call
//! install_timeout_ms = 600000            # bound on one install or removal (download, hooks, start)
//! [rollout]
//! bake_secs = 2
//! max_failed_per_step = 0   # agents that may fail to install in one step
//! max_failed_total = 0      # ... and over the whole rollout
//! batch_percent = 25
//! blue_green_retire_secs = 3600  # blue is retired by itself this long after the switch; 0: only on "promote"
//! [poll]
//! interval_ms = 1000
//! suspect_after_ms = 2000
//! down_after_ms = 3500
//! flap_threshold = 4                     # liveness changes within flap_window_ms that make an agent flapping
//! flap_window_ms = 60000
//! concurrency = 64                       # status requests in flight at once (and keep-alive connections kept per host)
//! [discovery]
//! listen = "0.0.0.0:7070"                # registration endpoint for self-registering agents
//! srv = "_parley._tcp.fleet.example"     # DNS SRV name listing agents
//! srv_interval_ms = 30000               # sooner when the records' TTL runs out sooner
//! nameservers = ["127.0.0.1:8600"]       # instead of /etc/resolv.conf's (its search domains stay)
//! srv_grace_ms = 90000                   # an agent whose record is gone this long is dropped
//! [routing]
//! listen = "127.0.0.1:7080"              # GET /v1/routing for load balancers and agents
//! auto_failback_secs = 300               # fail a recovered region back after this long healthy; omit: never
//! cpu_limit_pct = 80                     # a failover target's projected CPU may not exceed this
//! mem_limit_pct = 85                     # ... nor its agents' memory
//! [llm]                                  # omit to keep the language model off
//! base_url = "http://127.0.0.1:11434/v1" # any OpenAI-compatible Chat Completions endpoint
//! model = "llama3.1"
//! api_key_env = "PARLEY_LLM_API_KEY"     # environment variable holding the key, if any
//! timeout_ms = 10000
//! mode = "auto"                          # auto | json_schema | tools | plain
//! prompts_dir = "prompts"                # replaces the built-in system prompt and examples
//! [metrics]                              # omit to keep the built-in health gates
//! prometheus = "http://127.0.0.1:9090"   # asked by the catalog's analysis templates
//! token_env = "PARLEY_PROMETHEUS_TOKEN"  # bearer token, or username + password_env
//! timeout_ms = 5000
//! [slack]                                # `parley slack`; see `slack::config` for every key
//! mode = "socket"
//! [slack.users]
//! U012ALICE = "operator"
//! [server]                               # the local `parley serve` the front-ends use
//! autostart = true                       # start one in the background when none answers; false: in-process
//! idle_stop_secs = 300                   # an auto-started server stops after this long with no client and nothing running
//! [[notify]]                             # webhook targets; see `notify::config`
//! url = "https://hooks.example.com/parley"
//! secret_env = "PARLEY_NOTIFY_SECRET"    # HMAC-SHA256 key; `secret = ...` needs a 0600 file
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::llm::{LlmConfig, LlmMode};
use crate::orchestrate::RolloutSettings;
use crate::routing::RoutingSettings;
use crate::topology::discovery::{DiscoverySettings, SrvSettings};
use crate::topology::poller::PollerConfig;

/// A real install downloads, verifies, unpacks, runs hooks and starts a service: ten
/// minutes covers a large artifact on a slow link, and a hung agent still ends.
pub const DEFAULT_INSTALL_TIMEOUT_MS: u64 = 600_000;
/// A day: longer is almost surely a typo.
const MAX_INSTALL_TIMEOUT_MS: u64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("no data directory: set $HOME or pass --data-dir")]
    NoDataDir,
}

/// Where the agents come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetSource {
    /// Start the embedded 48-agent demo fleet, with optional faults (see `agent::faults`).
    Demo { faults: String },
    /// Poll the agents listed in an inventory file.
    Inventory(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The registry database; defaults to `<data_dir>/parley.db`.
    pub db: Option<PathBuf>,
    /// `[registry] url` (or `--db postgres://...`): where the registry lives when it
    /// is not the SQLite file `db`. Its Debug hides a password.
    pub registry_url: Option<crate::registry::Location>,
    /// A directory of `*.toml` intent files replacing the built-in ones.
    pub intents_dir: Option<PathBuf>,
    /// A catalog file replacing the built-in demo catalog.
    pub catalog: Option<PathBuf>,
    pub fleet: FleetSource,
    /// Bearer token for the agents.
    pub agent_token: Option<String>,
    /// Bound on every status, health and action call to an agent.
    pub agent_timeout: Duration,
    /// Bound on one install or removal on one agent (`[fleet] install_timeout_ms`): a
    /// real agent downloads, unpacks, runs hooks and starts a service in that time.
    pub install_timeout: Duration,
    /// The `[rollout]` section: the orchestrator's own settings.
    pub rollout: crate::orchestrate::RolloutSettings,
    /// The `[poll]` section: the poller's own settings.
    pub poll: crate::topology::poller::PollerConfig,
    /// The `[discovery]` section: registration and DNS SRV.
    pub discovery: crate::topology::discovery::DiscoverySettings,
    /// The language-model fallback; `None` keeps it off.
    pub llm: Option<LlmConfig>,
    /// The Slack bridge's settings (no secrets); defaults when there is no `[slack]`.
    pub slack: crate::slack::config::SlackSettings,
    /// The `[routing]` section.
    pub routing: crate::routing::RoutingSettings,
    /// The `[metrics]` section: the Prometheus that analysis templates ask; `None`
    /// keeps the built-in gates.
    pub metrics: Option<crate::analysis::PrometheusConfig>,
    /// The `[[notify]]` webhook targets (none: no notifications).
    pub notify: Vec<crate::notify::NotifyTarget>,
    /// The `[server]` section: how the front-ends find or start `parley serve`.
    pub server: ServerSettings,
}

/// How the front-ends reach the local server (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// With no `--server` and none answering on the data directory's socket, start
    /// `parley serve` in the background (`true`) or run in-process (`false`).
    pub autostart: bool,
    /// How long a server started that way waits with no client and nothing running
    /// before it stops by itself.
    pub idle_stop: Duration,
}

/// The idle period of an auto-started server when the config file says nothing.
pub const DEFAULT_IDLE_STOP_SECS: u64 = 300;
/// At most a day: longer is a server that should be started by hand.
const MAX_IDLE_STOP_SECS: u64 = 86_400;

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings { autostart: true, idle_stop: Duration::from_secs(DEFAULT_IDLE_STOP_SECS) }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    autostart: Option<bool>,
    idle_stop_secs: Option<u64>,
}

impl ServerFile {
    fn resolve(self) -> Result<ServerSettings, String> {
        let secs = self.idle_stop_secs.unwrap_or(DEFAULT_IDLE_STOP_SECS);
        if !(1..=MAX_IDLE_STOP_SECS).contains(&secs) {
            return Err(format!("server.idle_stop_secs must be between 1 and {MAX_IDLE_STOP_SECS} (a day)"));
        }
        Ok(ServerSettings { autostart: self.autostart.unwrap_or(true), idle_stop: Duration::from_secs(secs) })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    db: Option<PathBuf>,
    intents_dir: Option<PathBuf>,
    catalog: Option<PathBuf>,
    registry: Option<RegistryFile>,
    #[serde(default)]
    fleet: FleetFile,
    #[serde(default)]
    rollout: RolloutFile,
    #[serde(default)]
    poll: PollFile,
    #[serde(default)]
    discovery: DiscoveryFile,
    llm: Option<LlmFile>,
    slack: Option<crate::slack::config::SlackFile>,
    #[serde(default)]
    routing: RoutingFile,
    metrics: Option<MetricsFile>,
    #[serde(default)]
    notify: Vec<crate::notify::config::NotifyFile>,
    #[serde(default)]
    server: ServerFile,
}

/// `[registry]`: where the registry lives (a team's PostgreSQL).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    url: Option<String>,
}

/// The URL may hold a password: never shown.
impl std::fmt::Debug for RegistryFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFile").field("url", &self.url.as_deref().map(crate::registry::redact_url)).finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    prometheus: Option<String>,
    /// Environment variable holding a bearer token.
    token_env: Option<String>,
    /// Basic auth: the user, with the password in `password_env`.
    username: Option<String>,
    password_env: Option<String>,
    timeout_ms: Option<u64>,
}

impl MetricsFile {
    fn resolve(self) -> Result<crate::analysis::PrometheusConfig, String> {
        use crate::analysis::Auth;
        let url = self.prometheus.unwrap_or_default().trim().trim_end_matches('/').to_string();
        let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
            return Err("metrics.prometheus must be an http:// or https:// URL".into());
        };
        if rest.split('/').next().is_some_and(|host| host.contains('@')) {
            // A password in the URL would end up in every error message.
            return Err(
                "metrics.prometheus must not carry credentials; use username and password_env, or token_env".into()
            );
        }
        let secret = |var: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("the environment variable {var} is not set"))
        };
        let auth = match (self.token_env, self.username, self.password_env) {
            (Some(_), Some(_), _) => return Err("metrics: use token_env or username, not both".into()),
            (Some(var), None, _) => Auth::Bearer(secret(&var).map_err(|e| format!("metrics.token_env: {e}"))?),
            (None, Some(username), Some(var)) => {
                Auth::Basic { username, password: secret(&var).map_err(|e| format!("metrics.password_env: {e}"))? }
            }
            (None, Some(_), None) => return Err("metrics.username needs password_env".into()),
            (None, None, _) => Auth::None,
        };
        let timeout_ms = self.timeout_ms.unwrap_or(5000);
        if !(100..=60_000).contains(&timeout_ms) {
            return Err("metrics.timeout_ms must be between 100 and 60000".into());
        }
        Ok(crate::analysis::PrometheusConfig { url, auth, timeout: Duration::from_millis(timeout_ms) })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingFile {
    listen: Option<String>,
    auto_failback_secs: Option<f64>,
    cpu_limit_pct: Option<f64>,
    mem_limit_pct: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoveryFile {
    listen: Option<String>,
    srv: Option<String>,
    srv_interval_ms: Option<u64>,
    nameservers: Option<Vec<String>>,
    srv_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmFile {
    base_url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    timeout_ms: Option<u64>,
    mode: Option<LlmMode>,
    prompts_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    inventory: Option<PathBuf>,
    token_env: Option<String>,
    timeout_ms: Option<u64>,
    install_timeout_ms: Option<u64>,
    demo_faults: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutFile {
    bake_secs: Option<f64>,
    batch_percent: Option<u8>,
    max_failed_per_step: Option<usize>,
    max_failed_total: Option<usize>,
    blue_green_retire_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollFile {
    interval_ms: Option<u64>,
    suspect_after_ms: Option<u64>,
    down_after_ms: Option<u64>,
    flap_threshold: Option<usize>,
    flap_window_ms: Option<u64>,
    concurrency: Option<usize>,
}

// Each section resolves over its owner's `Default`: a key the file leaves out is
// what the poller, the orchestrator, discovery or the router would use anyway, and
// a range a setting may take is checked by its owner (the command line's
// `--bake-secs` asks the same one).

impl RolloutFile {
    fn resolve(self) -> Result<RolloutSettings, String> {
        let mut s = RolloutSettings::default();
        if let Some(secs) = self.bake_secs {
            s.bake = RolloutSettings::bake_secs(secs).map_err(|e| format!("rollout.bake_secs {e}"))?;
        }
        if let Some(p) = self.batch_percent {
            s.default_batch_percent =
                RolloutSettings::batch_percent(p).map_err(|e| format!("rollout.batch_percent {e}"))?;
        }
        if let Some(secs) = self.blue_green_retire_secs {
            s.blue_retire_after =
                RolloutSettings::blue_retire_secs(secs).map_err(|e| format!("rollout.blue_green_retire_secs {e}"))?;
        }
        s.max_failed_per_step = self.max_failed_per_step.unwrap_or(s.max_failed_per_step);
        s.max_failed_total = self.max_failed_total.unwrap_or(s.max_failed_total);
        Ok(s)
    }
}

impl PollFile {
    fn resolve(self) -> Result<PollerConfig, String> {
        let d = PollerConfig::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        let poll = PollerConfig {
            interval: ms(self.interval_ms, d.interval),
            suspect_after: ms(self.suspect_after_ms, d.suspect_after),
            down_after: ms(self.down_after_ms, d.down_after),
            concurrency: self.concurrency.unwrap_or(d.concurrency).clamp(1, 4096),
            thresholds: d.thresholds,
            flap_threshold: self.flap_threshold.unwrap_or(d.flap_threshold),
            flap_window: ms(self.flap_window_ms, d.flap_window),
        };
        if poll.interval.is_zero() {
            return Err("poll.interval_ms must be more than 0".into());
        }
        if poll.down_after < poll.suspect_after {
            return Err("poll.down_after_ms must not be shorter than poll.suspect_after_ms".into());
        }
        Ok(poll)
    }
}

impl DiscoveryFile {
    fn resolve(self) -> Result<DiscoverySettings, String> {
        let d = DiscoverySettings::default();
        Ok(DiscoverySettings {
            listen: match self.listen {
                Some(addr) => Some(
                    addr.parse()
                        .map_err(|_| format!("discovery.listen `{addr}` is not an address like 127.0.0.1:7070"))?,
                ),
                None => d.listen,
            },
            srv_name: self.srv.filter(|s| !s.trim().is_empty()),
            srv_interval: self.srv_interval_ms.map_or(d.srv_interval, Duration::from_millis),
            srv: SrvSettings {
                nameservers: self
                    .nameservers
                    .unwrap_or_default()
                    .iter()
                    .map(|n| SrvSettings::parse_nameserver(n))
                    .collect::<Result<_, _>>()?,
                grace: self.srv_grace_ms.map(Duration::from_millis).or(d.srv.grace),
            },
        })
    }
}

impl RoutingFile {
    fn resolve(self) -> Result<RoutingSettings, String> {
        let d = RoutingSettings::default();
        Ok(RoutingSettings {
            limits: crate::routing::capacity::Limits {
                cpu_pct: self.cpu_limit_pct.unwrap_or(d.limits.cpu_pct).clamp(1.0, 100.0),
                mem_pct: self.mem_limit_pct.unwrap_or(d.limits.mem_pct).clamp(1.0, 100.0),
            },
            auto_failback_after: match self.auto_failback_secs {
                // Bounded: Duration::from_secs_f64 panics on values past its range.
                Some(s) if s.is_finite() && s > 0.0 && s <= 30.0 * 86_400.0 => Some(Duration::from_secs_f64(s)),
                Some(_) => {
                    return Err("routing.auto_failback_secs must be more than 0 and at most 30 days (2592000)".into())
                }
                None => d.auto_failback_after,
            },
            listen: match self.listen {
                Some(addr) => Some(
                    addr.parse()
                        .map_err(|_| format!("routing.listen `{addr}` is not an address like 127.0.0.1:7080"))?,
                ),
                None => d.listen,
            },
        })
    }
}

impl LlmFile {
    fn resolve(self, rel: impl Fn(PathBuf) -> PathBuf) -> Result<LlmConfig, String> {
        let base_url = self.base_url.unwrap_or_default().trim().trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err("llm.base_url must be an http:// or https:// URL".into());
        }
        let model = self.model.unwrap_or_default();
        if model.trim().is_empty() {
            return Err("llm.model must name the model".into());
        }
        let timeout_ms = self.timeout_ms.unwrap_or(10_000);
        if !(100..=600_000).contains(&timeout_ms) {
            return Err("llm.timeout_ms must be between 100 and 600000".into());
        }
        let key_env = self.api_key_env.unwrap_or_else(|| "PARLEY_LLM_API_KEY".to_string());
        Ok(LlmConfig {
            base_url,
            model,
            api_key: std::env::var(&key_env).ok().filter(|k| !k.is_empty()),
            timeout: Duration::from_millis(timeout_ms),
            mode: self.mode.unwrap_or(LlmMode::Auto),
            prompts_dir: self.prompts_dir.map(rel),
        })
    }
}

impl Config {
    /// The configuration from `path` (when given, it must exist) or from the default
    /// location (used only if present), on top of built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default_path =
            directories::ProjectDirs::from("dev", "parley", "parley").map(|d| d.config_dir().join("parley.toml"));
        let (file, origin) = match path {
            Some(p) => (Some(read(p)?), Some(p.to_path_buf())),
            None => match default_path {
                Some(p) if p.is_file() => (Some(read(&p)?), Some(p)),
                _ => (None, None),
            },
        };
        let file = file.unwrap_or_default();
        // Relative paths in a config file are relative to the file, not to wherever
        // Parley happens to be started.
        let base = origin.as_ref().and_then(|p| p.parent()).map(Path::to_path_buf);
        let rel = |p: PathBuf| match &base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        let data_dir = match file.data_dir {
            Some(d) => rel(d),
            None => default_data_dir()?,
        };
        let token_env = file.fleet.token_env.unwrap_or_else(|| "PARLEY_AGENT_TOKEN".to_string());
        let agent_token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
        let at = |reason: String| bad(origin.as_deref(), &reason);
        let install_timeout_ms = file.fleet.install_timeout_ms.unwrap_or(DEFAULT_INSTALL_TIMEOUT_MS);
        if !(1000..=MAX_INSTALL_TIMEOUT_MS).contains(&install_timeout_ms) {
            return Err(at("fleet.install_timeout_ms must be between 1000 (1 s) and 86400000 (24 hours)".into()));
        }
        let rollout = file.rollout.resolve().map_err(at)?;
        let poll = file.poll.resolve().map_err(at)?;
        let discovery = file.discovery.resolve().map_err(at)?;
        let routing = file.routing.resolve().map_err(at)?;
        let server = file.server.resolve().map_err(at)?;
        let llm = file.llm.map(|l| l.resolve(rel)).transpose().map_err(at)?;
        let slack = match file.slack {
            Some(section) => section.resolve(rel).map_err(|reason| bad(origin.as_deref(), &reason))?,
            None => crate::slack::config::SlackSettings::default(),
        };
        let metrics = match file.metrics {
            Some(m) => Some(m.resolve().map_err(|reason| bad(origin.as_deref(), &reason))?),
            None => None,
        };
        let notify = crate::notify::config::resolve(file.notify, origin.as_deref(), |k| std::env::var(k).ok())
            .map_err(|reason| bad(origin.as_deref(), &reason))?;
        let registry_url = match file.registry.and_then(|r| r.url) {
            Some(url) => {
                Some(match crate::registry::Location::parse(&url).map_err(|e| at(format!("registry.url: {e}")))? {
                    crate::registry::Location::Sqlite(p) => crate::registry::Location::Sqlite(rel(p)),
                    pg => pg,
                })
            }
            None => None,
        };
        let config = Config {
            metrics,
            notify,
            data_dir,
            db: file.db.map(rel),
            registry_url,
            intents_dir: file.intents_dir.map(rel),
            catalog: file.catalog.map(rel),
            fleet: match file.fleet.inventory {
                Some(inv) => FleetSource::Inventory(rel(inv)),
                None => FleetSource::Demo { faults: file.fleet.demo_faults.unwrap_or_default() },
            },
            agent_token,
            agent_timeout: Duration::from_millis(file.fleet.timeout_ms.unwrap_or(2000)),
            install_timeout: Duration::from_millis(install_timeout_ms),
            rollout,
            poll,
            discovery,
            llm,
            slack,
            routing,
            server,
        };
        Ok(config)
    }

    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| self.data_dir.join("parley.db"))
    }

    /// Where the registry lives: `[registry] url` when given, else the SQLite file.
    pub fn registry_location(&self) -> crate::registry::Location {
        match &self.registry_url {
            Some(url) => url.clone(),
            None => crate::registry::Location::Sqlite(self.db_path()),
        }
    }

    pub fn history_path(&self) -> PathBuf {
        self.data_dir.join("history.txt")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// Where the demo fleet's agents keep their state, beside the registry that
    /// remembers what was rolled out to them.
    pub fn demo_state_dir(&self) -> PathBuf {
        self.data_dir.join("demo-fleet")
    }
}

fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.to_string() })?;
    toml::from_str(&text).map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.to_string() })
}

fn bad(origin: Option<&Path>, reason: &str) -> ConfigError {
    ConfigError::File {
        path: origin.map(|p| p.display().to_string()).unwrap_or_else(|| "(defaults)".to_string()),
        reason: reason.to_string(),
    }
}

fn default_data_dir() -> Result<PathBuf, ConfigError> {
    if let Some(dir) = std::env::var_os("PARLEY_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("dev", "parley", "parley")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or(ConfigError::NoDataDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_paths_relative_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(
            &path,
            "data_dir = \"state\"\n[fleet]\ninventory = \"fleet.toml\"\n[rollout]\nbake_secs = 0.5\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.data_dir, dir.path().join("state"));
        assert_eq!(c.fleet, FleetSource::Inventory(dir.path().join("fleet.toml")));
        assert_eq!(c.rollout.bake, Duration::from_millis(500));
        assert_eq!(c.db_path(), dir.path().join("state").join("parley.db"));
    }

    #[test]
    fn a_file_without_rollout_settings_runs_rollouts_as_the_orchestrator_defaults_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, "data_dir = \"state\"\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        let d = crate::orchestrate::RolloutSettings::default();
        assert_eq!(
            (
                c.rollout.bake,
                c.rollout.default_batch_percent,
                c.rollout.max_failed_per_step,
                c.rollout.max_failed_total,
                c.rollout.blue_retire_after
            ),
            (d.bake, d.default_batch_percent, d.max_failed_per_step, d.max_failed_total, d.blue_retire_after)
        );
        assert_eq!(
            (c.rollout.bake, c.rollout.default_batch_percent, c.rollout.blue_retire_after),
            (Duration::from_secs(2), 25, Some(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn installs_have_their_own_bound_ten_minutes_unless_the_file_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        let load = |text: &str| {
            std::fs::write(&path, format!("data_dir = \"state\"\n{text}")).unwrap();
            Config::load(Some(&path)).map_err(|e| e.to_string())
        };
        let c = load("").unwrap();
        assert_eq!((c.agent_timeout, c.install_timeout), (Duration::from_secs(2), Duration::from_secs(600)));
        let c = load("[fleet]\ntimeout_ms = 500\ninstall_timeout_ms = 90000\n").unwrap();
        assert_eq!((c.agent_timeout, c.install_timeout), (Duration::from_millis(500), Duration::from_secs(90)));
        for bad in ["999", "86400001"] {
            assert_eq!(
                load(&format!("[fleet]\ninstall_timeout_ms = {bad}\n")).unwrap_err(),
                format!(
                    "config file {}: fleet.install_timeout_ms must be between 1000 (1 s) and 86400000 (24 hours)",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, "[rollout]\nbatch_percent = 0\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert_eq!(e, format!("config file {}: rollout.batch_percent must be between 1 and 100", path.display()));
        std::fs::write(&path, "colour = \"red\"\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = Config::load(Some(&dir.path().join("missing.toml"))).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
        // A value past what a Duration holds is refused, not a panic.
        std::fs::write(&path, "[routing]\nauto_failback_secs = 1e30\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "config file {}: routing.auto_failback_secs must be more than 0 and at most 30 days (2592000)",
                path.display()
            )
        );
    }

    #[test]
    fn the_blue_green_retire_timer_is_an_hour_unless_the_file_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        let with = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(Some(&path))
        };
        assert_eq!(with("").unwrap().rollout.blue_retire_after, Some(Duration::from_secs(3600)));
        assert_eq!(
            with("[rollout]\nblue_green_retire_secs = 1800\n").unwrap().rollout.blue_retire_after,
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            with("[rollout]\nblue_green_retire_secs = 90.5\n").unwrap().rollout.blue_retire_after,
            Some(Duration::from_millis(90_500))
        );
        assert_eq!(with("[rollout]\nblue_green_retire_secs = 0\n").unwrap().rollout.blue_retire_after, None);
        for bad in ["-1", "1e30", "nan", "inf"] {
            let e = with(&format!("[rollout]\nblue_green_retire_secs = {bad}\n")).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "config file {}: rollout.blue_green_retire_secs must be between 0 (only on \"promote\") and \
                     2592000 (30 days)",
                    path.display()
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_llm_section_is_off_by_default_and_checked_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, "data_dir = \"state\"\n").unwrap();
        assert!(Config::load(Some(&path)).unwrap().llm.is_none());
        std::fs::write(
            &path,
            "[llm]\nbase_url = \"http://127.0.0.1:9/v1/\"\nmodel = \"m\"\napi_key_env = \"PARLEY_TEST_NO_SUCH_KEY\"\nmode = \"tools\"\n",
        )
        .unwrap();
        let llm = Config::load(Some(&path)).unwrap().llm.unwrap();
        assert_eq!(llm.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(llm.mode, LlmMode::Tools);
        assert_eq!(llm.timeout, Duration::from_secs(10));
        assert!(llm.api_key.is_none());
        std::fs::write(&path, "[llm]\nbase_url = \"localhost\"\nmodel = \"m\"\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("llm.base_url"), "{e}");
    }

    #[test]
    fn the_metrics_section_takes_a_url_and_optional_credentials_from_the_environment() {
        use crate::analysis::Auth;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        let load = |text: &str| {
            std::fs::write(&path, format!("data_dir = \"state\"\n[metrics]\n{text}")).unwrap();
            Config::load(Some(&path)).map(|c| c.metrics).map_err(|e| e.to_string())
        };
        let m = load("prometheus = \"http://127.0.0.1:9090/\"\n").unwrap().unwrap();
        assert_eq!(
            (m.url.as_str(), &m.auth, m.timeout),
            ("http://127.0.0.1:9090", &Auth::None, Duration::from_secs(5))
        );
        // Names no other test uses, so that setting them races nobody.
        std::env::set_var("PARLEY_TEST_PROM_TOKEN_19", "t0ken");
        std::env::set_var("PARLEY_TEST_PROM_PASSWORD_19", "pa55");
        let m =
            load("prometheus = \"https://prom:9090\"\ntoken_env = \"PARLEY_TEST_PROM_TOKEN_19\"\ntimeout_ms = 750\n")
                .unwrap()
                .unwrap();
        assert_eq!((m.auth.clone(), m.timeout), (Auth::Bearer("t0ken".into()), Duration::from_millis(750)));
        assert!(!format!("{m:?}").contains("t0ken"), "{m:?}");
        let m = load(
            "prometheus = \"http://p:9090\"\nusername = \"parley\"\npassword_env = \"PARLEY_TEST_PROM_PASSWORD_19\"\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.auth, Auth::Basic { username: "parley".into(), password: "pa55".into() });
        assert!(!format!("{m:?}").contains("pa55"), "{m:?}");
        for (text, says) in [
            ("prometheus = \"localhost:9090\"\n", "metrics.prometheus must be an http:// or https:// URL"),
            ("prometheus = \"http://u:pw@p:9090\"\n", "must not carry credentials"),
            ("prometheus = \"http://p\"\nusername = \"u\"\n", "metrics.username needs password_env"),
            (
                "prometheus = \"http://p\"\ntoken_env = \"PARLEY_TEST_PROM_UNSET_19\"\n",
                "metrics.token_env: the environment variable PARLEY_TEST_PROM_UNSET_19 is not set",
            ),
            ("prometheus = \"http://p\"\ntimeout_ms = 5\n", "metrics.timeout_ms must be between 100 and 60000"),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
        std::fs::write(&path, "data_dir = \"state\"\n").unwrap();
        assert!(Config::load(Some(&path)).unwrap().metrics.is_none());
    }
}
