//! The `[slack]` section: who holds which role, which channels are limited, how the
//! bridge connects, and where its secrets come from.
//!
//! ```toml
//! [slack]
//! mode = "socket"                        # socket (default, no public URL) | events
//! listen = "0.0.0.0:3000"                # Events API only: where Slack posts requests
//! base_url = "https://slack.com/api/"    # the Web API (a fake Slack in tests)
//! secrets_file = "/etc/parley/slack.env" # KEY=value lines; must be mode 0600
//! ca_file = "/etc/parley/slack-ca.pem"   # extra CA certificates (PEM) trusted beside the
//!                                        # built-in roots, for a TLS-inspecting proxy or a test
//! ping_interval_secs = 15                # Socket Mode watchdog: silence before a ping, and
//!                                        # after it before the socket is replaced
//! session_idle_secs = 43200              # a thread's conversation is forgotten after this idle
//! max_sessions = 1000                    # at most this many thread conversations; the least
//!                                        # recently used goes first
//! [slack.users]                          # Slack user id -> role; everyone else is a viewer
//! U012ALICE = "admin"
//! U034BOB = "operator"
//! [slack.channels]                       # channel id -> the highest role used there
//! C0GENERAL = "viewer"
//! ```
//!
//! Secrets (`SLACK_BOT_TOKEN`, `SLACK_APP_TOKEN`, `SLACK_SIGNING_SECRET`) are read
//! from the environment first, then from the secrets file. They are never part of
//! [`SlackSettings`], so they cannot reach a log line through the config's `Debug`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ops::Role;

/// How Slack reaches the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    /// Socket Mode: the bridge opens a WebSocket to Slack; no public URL needed.
    #[default]
    Socket,
    /// Events API: Slack posts signed HTTP requests to `listen`.
    Events,
}

/// The `[slack]` table as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFile {
    mode: Option<SlackMode>,
    listen: Option<String>,
    base_url: Option<String>,
    secrets_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    ping_interval_secs: Option<f64>,
    session_idle_secs: Option<f64>,
    max_sessions: Option<usize>,
    #[serde(default)]
    users: HashMap<String, Role>,
    #[serde(default)]
    channels: HashMap<String, Role>,
}

/// The `[slack]` section, resolved. No secrets in here.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackSettings {
    pub mode: SlackMode,
    pub listen: SocketAddr,
    /// Web API base, ending in `/` (`https://slack.com/api/`).
    pub base_url: String,
    pub secrets_file: Option<PathBuf>,
    /// Extra trusted CA certificates (PEM) for the Web API and Socket Mode, added to
    /// the built-in roots (never replacing them).
    pub ca_file: Option<PathBuf>,
    /// Socket Mode watchdog: after this much silence a ping is sent, and after as
    /// much again without anything from Slack the socket is replaced.
    pub ping_interval: Duration,
    /// A thread's conversation (its dialog session) is dropped after this long
    /// without a message; the next message there starts a fresh one.
    pub session_idle: Duration,
    /// At most this many thread conversations are kept; beyond it the least
    /// recently used is dropped.
    pub max_sessions: usize,
    pub users: HashMap<String, Role>,
    pub channels: HashMap<String, Role>,
}

impl Default for SlackSettings {
    fn default() -> SlackSettings {
        SlackSettings {
            mode: SlackMode::Socket,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            base_url: "https://slack.com/api/".to_string(),
            secrets_file: None,
            ca_file: None,
            ping_interval: Duration::from_secs(15),
            session_idle: Duration::from_secs(12 * 3600),
            max_sessions: 1000,
            users: HashMap::new(),
            channels: HashMap::new(),
        }
    }
}

impl SlackFile {
    /// Resolves the section; `rel` makes paths relative to the config file.
    pub fn resolve(self, rel: impl Fn(PathBuf) -> PathBuf) -> Result<SlackSettings, String> {
        let mut base_url = self.base_url.unwrap_or_else(|| "https://slack.com/api/".to_string()).trim().to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err("slack.base_url must be an http:// or https:// URL".to_string());
        }
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        let listen = match self.listen {
            Some(a) => a.parse().map_err(|_| format!("slack.listen `{a}` is not an address like 0.0.0.0:3000"))?,
            None => SlackSettings::default().listen,
        };
        let defaults = SlackSettings::default();
        let secs = |key: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
            Some(v) => Err(format!("slack.{key} must be a positive number of seconds, not {v}")),
        };
        let max_sessions = match self.max_sessions {
            None => defaults.max_sessions,
            Some(0) => return Err("slack.max_sessions must be at least 1".to_string()),
            Some(n) => n,
        };
        Ok(SlackSettings {
            mode: self.mode.unwrap_or_default(),
            listen,
            base_url,
            secrets_file: self.secrets_file.map(&rel),
            ca_file: self.ca_file.map(&rel),
            ping_interval: secs("ping_interval_secs", self.ping_interval_secs, defaults.ping_interval)?,
            session_idle: secs("session_idle_secs", self.session_idle_secs, defaults.session_idle)?,
            max_sessions,
            users: self.users,
            channels: self.channels,
        })
    }
}

impl SlackSettings {
    /// The role `user` acts with in `channel`: their configured role (viewer when
    /// unknown), capped by the channel's limit.
    pub fn role_for(&self, user: &str, channel: &str) -> Role {
        let role = self.users.get(user).copied().unwrap_or(Role::Viewer);
        match self.channels.get(channel) {
            Some(limit) => role.min(*limit),
            None => role,
        }
    }
}

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (a header, an HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The bridge's secrets.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub bot_token: Secret,
    /// Socket Mode only (`xapp-...`).
    pub app_token: Option<Secret>,
    /// Events API only.
    pub signing_secret: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0} is not set (in the environment or the slack secrets file)")]
    Missing(&'static str),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissive { path: String, mode: u32 },
}

impl Secrets {
    /// Reads the secrets `mode` needs from `env` (the process environment in
    /// production), falling back to the secrets file.
    pub fn load(settings: &SlackSettings, env: impl Fn(&str) -> Option<String>) -> Result<Secrets, SecretsError> {
        let file = match &settings.secrets_file {
            Some(path) => read_secrets_file(path)?,
            None => HashMap::new(),
        };
        let get = |key: &'static str| env(key).filter(|v| !v.is_empty()).or_else(|| file.get(key).cloned()).map(Secret);
        let bot_token = get("SLACK_BOT_TOKEN").ok_or(SecretsError::Missing("SLACK_BOT_TOKEN"))?;
        let (app_token, signing_secret) = match settings.mode {
            SlackMode::Socket => (Some(get("SLACK_APP_TOKEN").ok_or(SecretsError::Missing("SLACK_APP_TOKEN"))?), None),
            SlackMode::Events => {
                (None, Some(get("SLACK_SIGNING_SECRET").ok_or(SecretsError::Missing("SLACK_SIGNING_SECRET"))?))
            }
        };
        Ok(Secrets { bot_token, app_token, signing_secret })
    }
}

/// `KEY=value` lines (blank lines and `#` comments ignored) from a file that only
/// its owner may read.
fn read_secrets_file(path: &Path) -> Result<HashMap<String, String>, SecretsError> {
    let err = |reason: String| SecretsError::File { path: path.display().to_string(), reason };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::Permissive { path: path.display().to_string(), mode });
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The line number only: the line itself may hold a secret.
        let (k, v) = line.split_once('=').ok_or_else(|| err(format!("line {} is not KEY=value", n + 1)))?;
        out.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_viewers_and_channels_cap_roles() {
        let mut s = SlackSettings::default();
        s.users.insert("UADMIN".into(), Role::Admin);
        s.channels.insert("CREAD".into(), Role::Viewer);
        assert_eq!(s.role_for("UNOBODY", "C1"), Role::Viewer);
        assert_eq!(s.role_for("UADMIN", "C1"), Role::Admin);
        assert_eq!(s.role_for("UADMIN", "CREAD"), Role::Viewer);
    }

    fn resolve(toml_text: &str) -> Result<SlackSettings, String> {
        let file: SlackFile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        file.resolve(|p| PathBuf::from("/etc/parley").join(p))
    }

    #[test]
    fn watchdog_session_limits_and_ca_file_are_read_and_checked() {
        let s = resolve("").unwrap();
        assert_eq!(
            (s.ping_interval, s.session_idle, s.max_sessions, s.ca_file),
            (Duration::from_secs(15), Duration::from_secs(43_200), 1000, None)
        );
        let s =
            resolve("ping_interval_secs = 0.25\nsession_idle_secs = 600\nmax_sessions = 5\nca_file = \"proxy-ca.pem\"")
                .unwrap();
        assert_eq!(
            (s.ping_interval, s.session_idle, s.max_sessions, s.ca_file),
            (Duration::from_millis(250), Duration::from_secs(600), 5, Some(PathBuf::from("/etc/parley/proxy-ca.pem")))
        );
        assert_eq!(
            resolve("ping_interval_secs = 0").unwrap_err(),
            "slack.ping_interval_secs must be a positive number of seconds, not 0"
        );
        assert_eq!(
            resolve("session_idle_secs = -1").unwrap_err(),
            "slack.session_idle_secs must be a positive number of seconds, not -1"
        );
        assert_eq!(resolve("max_sessions = 0").unwrap_err(), "slack.max_sessions must be at least 1");
    }

    #[cfg(unix)]
    #[test]
    fn a_secrets_file_must_be_private_and_secrets_never_print() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slack.env");
        std::fs::write(&path, "# tokens\nSLACK_BOT_TOKEN=xoxb-very-secret\nSLACK_APP_TOKEN=\"xapp-1\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let settings = SlackSettings { secrets_file: Some(path.clone()), ..SlackSettings::default() };
        let e = Secrets::load(&settings, |_| None).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains("very-secret"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secrets::load(&settings, |_| None).unwrap();
        assert_eq!(s.bot_token.expose(), "xoxb-very-secret");
        assert_eq!(s.app_token.as_ref().unwrap().expose(), "xapp-1");
        assert!(!format!("{s:?}").contains("very-secret"));
        // The environment wins over the file.
        let s = Secrets::load(&settings, |k| (k == "SLACK_BOT_TOKEN").then(|| "xoxb-env".to_string())).unwrap();
        assert_eq!(s.bot_token.expose(), "xoxb-env");
        let events = SlackSettings { mode: SlackMode::Events, ..settings };
        assert_eq!(
            Secrets::load(&events, |_| None).unwrap_err().to_string(),
            "SLACK_SIGNING_SECRET is not set (in the environment or the slack secrets file)"
        );
    }
}
