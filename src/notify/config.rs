//! The `[[notify]]` sections of the config file: webhook targets and their secrets.
//!
//! ```toml
//! [[notify]]
//! url = "https://hooks.example.com/parley"
//! secret_env = "PARLEY_NOTIFY_SECRET"   # or: secret = "..." (then the file must be mode 0600)
//! events = ["rollout.started", "rollout.rolled_back", "failover"]   # omit: every event
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::EventKind;

/// One `[[notify]]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    url: Option<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    events: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
}

/// A webhook target, resolved: where, with which key, for which events.
#[derive(Clone, PartialEq)]
pub struct NotifyTarget {
    pub url: String,
    /// The HMAC-SHA256 key; every body is signed with it.
    pub secret: String,
    /// `None`: every event.
    pub events: Option<Vec<EventKind>>,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts per notification before it is given up (and logged).
    pub max_attempts: u32,
    /// The first retry waits this long; each later one twice as long, up to 30 s.
    pub first_backoff: Duration,
}

// By hand, so that neither the key nor the URL's path (webhook URLs often carry a
// token there) can reach a log line through `{:?}`.
impl std::fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("url", &self.redacted_url())
            .field("secret", &"<set>")
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl NotifyTarget {
    /// Scheme and host only, for logs and messages.
    pub fn redacted_url(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(u) => format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                match u.port() {
                    Some(p) => format!(":{p}"),
                    None => String::new(),
                }
            ),
            Err(_) => "<unparsable url>".to_string(),
        }
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }
}

/// Resolves the sections of the file at `origin` (`None`: defaults, no file). A secret
/// written into the file itself is accepted only when the file is readable by its
/// owner alone (mode 0600), as the Slack secrets file is; otherwise the whole config
/// is refused, naming the file and the fix.
pub fn resolve(
    sections: Vec<NotifyFile>,
    origin: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<NotifyTarget>, String> {
    let mut out = Vec::with_capacity(sections.len());
    for (i, s) in sections.into_iter().enumerate() {
        let n = i + 1;
        let url = s.url.unwrap_or_default().trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(&url).is_err() {
            return Err(format!("notify #{n}: url must be an http:// or https:// URL"));
        }
        let secret = match (s.secret, s.secret_env) {
            (Some(_), Some(_)) => return Err(format!("notify #{n}: give secret or secret_env, not both")),
            (Some(secret), None) => {
                if let Some(path) = origin {
                    check_private(path)?;
                }
                secret
            }
            (None, Some(var)) => env(&var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("notify #{n}: the environment variable {var} (secret_env) is not set"))?,
            (None, None) => {
                return Err(format!(
                    "notify #{n}: a secret is required to sign the notifications (secret_env = \"VAR\" or secret)"
                ))
            }
        };
        if secret.len() < 16 {
            return Err(format!("notify #{n}: the secret must be at least 16 characters"));
        }
        let events = match s.events {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        EventKind::parse(name).ok_or_else(|| {
                            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                            format!("notify #{n}: unknown event `{name}`; known events are {}", known.join(", "))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let timeout_ms = s.timeout_ms.unwrap_or(5000);
        if !(100..=60_000).contains(&timeout_ms) {
            return Err(format!("notify #{n}: timeout_ms must be between 100 and 60000"));
        }
        let max_attempts = s.max_attempts.unwrap_or(6);
        if !(1..=20).contains(&max_attempts) {
            return Err(format!("notify #{n}: max_attempts must be between 1 and 20"));
        }
        out.push(NotifyTarget {
            url,
            secret,
            events,
            timeout: Duration::from_millis(timeout_ms),
            max_attempts,
            first_backoff: Duration::from_millis(250),
        });
    }
    Ok(out)
}

/// A file holding a secret must not be readable by group or others.
fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "it holds a notify secret but is mode {mode:04o}; run chmod 600 on it, or move the secret to \
                 the environment (secret_env)"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Vec<NotifyFile> {
        #[derive(Deserialize)]
        struct Doc {
            notify: Vec<NotifyFile>,
        }
        toml::from_str::<Doc>(text).unwrap().notify
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_private_file() {
        let env = |k: &str| (k == "HOOK_KEY").then(|| "0123456789abcdef-key".to_string());
        let t = resolve(
            section("[[notify]]\nurl = \"https://hooks.example.com/T0/abc?x=1\"\nsecret_env = \"HOOK_KEY\"\nevents = [\"failover\"]\n"),
            None,
            env,
        )
        .unwrap();
        assert_eq!(t[0].secret, "0123456789abcdef-key");
        assert!(t[0].wants(EventKind::Failover));
        assert!(!t[0].wants(EventKind::RolloutStarted));
        let debug = format!("{:?}", t[0]);
        assert!(!debug.contains("0123456789abcdef") && !debug.contains("/T0/abc"), "{debug}");
        assert!(debug.contains("https://hooks.example.com"), "{debug}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, "").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let inline = "[[notify]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"an inline secret, long\"\n";
        let e = resolve(section(inline), Some(&path), env).unwrap_err();
        assert_eq!(
            e,
            "it holds a notify secret but is mode 0644; run chmod 600 on it, or move the secret to the environment \
             (secret_env)"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resolve(section(inline), Some(&path), env).unwrap()[0].secret, "an inline secret, long");

        for (text, want) in [
            (
                "[[notify]]\nurl = \"ftp://x\"\nsecret_env = \"HOOK_KEY\"\n",
                "notify #1: url must be an http:// or https:// URL",
            ),
            (
                "[[notify]]\nurl = \"http://x\"\n",
                "notify #1: a secret is required to sign the notifications (secret_env = \"VAR\" or secret)",
            ),
            (
                "[[notify]]\nurl = \"http://x\"\nsecret_env = \"NOPE\"\n",
                "notify #1: the environment variable NOPE (secret_env) is not set",
            ),
            (
                "[[notify]]\nurl = \"http://x\"\nsecret = \"short\"\n",
                "notify #1: the secret must be at least 16 characters",
            ),
            (
                "[[notify]]\nurl = \"http://x\"\nsecret_env = \"HOOK_KEY\"\nevents = [\"rollout.exploded\"]\n",
                "notify #1: unknown event `rollout.exploded`; known events are rollout.started, rollout.step_passed, \
                 rollout.step_failed, rollout.rolled_back, rollout.succeeded, rollout.failed, rollout.aborted, \
                 failover, failback, traffic_shifted",
            ),
        ] {
            assert_eq!(resolve(section(text), None, env).unwrap_err(), want, "{text}");
        }
    }
}
