//! Where the agents of a fleet are: the list of endpoints the poller asks, and the
//! inventory file (TOML) an operator writes for a real fleet, or a running demo fleet
//! writes for another process:
//!
//! ```toml
//! # parley fleet inventory
//! token_env = "PARLEY_AGENT_TOKEN"   # optional: the variable holding the agents' token
//! [[agent]]
//! endpoint = "http://10.1.2.3:7070"
//! name = "edge-1"                   # optional hints, used until the agent answers
//! region = "us-east"
//! zone = "us-east-a"
//! ```

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TopologyError;

/// One agent to poll. Name, region and zone are optional hints used while the agent
/// has never answered (so a dead agent still shows up in its region as `down`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEntry {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// A parsed inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Name of the environment variable that holds the agents' bearer token, if given.
    pub token_env: Option<String>,
    pub agents: Vec<InventoryEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    agent: Vec<InventoryEntry>,
}

impl Inventory {
    /// The agents of the inventory file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Vec<InventoryEntry>, TopologyError> {
        Inventory::read(path).map(|inv| inv.agents)
    }

    /// The whole inventory file at `path`, token variable included.
    pub fn read(path: impl AsRef<Path>) -> Result<Inventory, TopologyError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| TopologyError::Inventory { origin: origin.clone(), reason: format!("cannot read it: {e}") })?;
        Inventory::from_toml(&text, &origin)
    }

    /// Parses inventory TOML; `origin` names it in errors. Endpoints are checked to be
    /// `http(s)://host:port` and unique (a trailing `/` is dropped).
    pub fn from_toml(text: &str, origin: &str) -> Result<Inventory, TopologyError> {
        let bad = |reason: String| TopologyError::Inventory { origin: origin.to_string(), reason };
        let file: InventoryFile = toml::from_str(text).map_err(|e| bad(toml_reason(text, &e)))?;
        if file.agent.is_empty() {
            return Err(bad("lists no agents (expected [[agent]] tables with an endpoint)".to_string()));
        }
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(file.agent.len());
        let mut agents = Vec::with_capacity(file.agent.len());
        for (i, mut entry) in file.agent.into_iter().enumerate() {
            let n = i + 1;
            entry.endpoint = normalise_endpoint(&entry.endpoint).map_err(|why| {
                bad(format!("agent {n}: endpoint `{}` is not http(s)://host:port ({why})", entry.endpoint))
            })?;
            if let Some(first) = seen.insert(entry.endpoint.to_ascii_lowercase(), n) {
                return Err(bad(format!("agent {n}: endpoint `{}` is already agent {first}'s", entry.endpoint)));
            }
            for (field, value) in [("name", &entry.name), ("region", &entry.region), ("zone", &entry.zone)] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(bad(format!("agent {n}: `{field}` is empty (leave it out instead)")));
                }
            }
            agents.push(entry);
        }
        Ok(Inventory { token_env: file.token_env, agents })
    }

    /// An inventory file for these agents, readable by [`Inventory::load`].
    pub fn to_toml(agents: &[InventoryEntry]) -> String {
        let mut out = String::from("# parley fleet inventory\n");
        for a in agents {
            out.push_str("\n[[agent]]\n");
            out.push_str(&format!("endpoint = {}\n", quote(&a.endpoint)));
            for (key, value) in [("name", &a.name), ("region", &a.region), ("zone", &a.zone)] {
                if let Some(v) = value {
                    out.push_str(&format!("{key} = {}\n", quote(v)));
                }
            }
        }
        out
    }
}

/// A TOML basic string. JSON's string escapes are all valid TOML escapes.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The parser's message with a line number, without its multi-line source excerpt.
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let line = text.get(..span.start).map_or(1, |before| before.matches('\n').count() + 1);
            format!("bad TOML at line {line}: {message}")
        }
        None => format!("bad TOML: {message}"),
    }
}

/// `scheme://host:port[/path]` with the scheme lower-cased and any trailing `/`
/// dropped; the error says what is wrong. A path is allowed because several agents may
/// share one address behind prefixes (the simulator serves `http://host:port/a/NAME`).
pub(crate) fn normalise_endpoint(raw: &str) -> Result<String, &'static str> {
    let trimmed = raw.trim().trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://").ok_or("no scheme")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https");
    }
    if rest.contains(['?', '#']) {
        return Err("no query or fragment");
    }
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    if path.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))) {
        return Err("the path may only hold letters, digits and - . _ ~ /");
    }
    let rest = authority;
    if rest.contains('@') {
        return Err("no user or password in the address");
    }
    let (host, port) = rest.rsplit_once(':').ok_or("no port")?;
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']').is_some_and(|inner| !inner.is_empty() && inner.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if !host_ok {
        return Err("bad host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err("the port must be a number from 1 to 65535"),
    }
    Ok(match path {
        Some(p) => format!("{scheme}://{rest}/{p}"),
        None => format!("{scheme}://{rest}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(endpoint: &str, name: Option<&str>) -> InventoryEntry {
        InventoryEntry {
            endpoint: endpoint.into(),
            name: name.map(Into::into),
            region: name.map(|_| "us-east".into()),
            zone: None,
        }
    }

    #[test]
    fn reads_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.toml");
        std::fs::write(
            &path,
            r#"# parley fleet inventory
token_env = "PARLEY_AGENT_TOKEN"   # optional
[[agent]]
endpoint = "http://10.1.2.3:7070"
name = "edge-1"
region = "us-east"
zone = "us-east-a"

[[agent]]
endpoint = "HTTPS://agent-2.example.com:443/"

[[agent]]
endpoint = "http://127.0.0.1:7100/a/edge-7/"
"#,
        )
        .unwrap();
        let inv = Inventory::read(&path).unwrap();
        assert_eq!(inv.token_env.as_deref(), Some("PARLEY_AGENT_TOKEN"));
        assert_eq!(
            inv.agents,
            [
                InventoryEntry {
                    endpoint: "http://10.1.2.3:7070".into(),
                    name: Some("edge-1".into()),
                    region: Some("us-east".into()),
                    zone: Some("us-east-a".into()),
                },
                entry("https://agent-2.example.com:443", None),
                entry("http://127.0.0.1:7100/a/edge-7", None),
            ]
        );
        assert_eq!(Inventory::load(&path).unwrap(), inv.agents);
    }

    #[test]
    fn to_toml_round_trips() {
        let agents = vec![
            entry("http://127.0.0.1:40001", Some("edge-1")),
            entry("http://[::1]:40002", None),
            InventoryEntry {
                endpoint: "http://127.0.0.1:40003".into(),
                name: Some("odd \"name\"\\".into()),
                region: None,
                zone: Some("z".into()),
            },
        ];
        let text = Inventory::to_toml(&agents);
        assert!(text.starts_with("# parley fleet inventory\n\n[[agent]]\nendpoint = \"http://127.0.0.1:40001\"\nname = \"edge-1\"\nregion = \"us-east\"\n"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.toml");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(Inventory::load(&path).unwrap(), agents);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.toml");
        let p = path.display().to_string();
        for (text, want) in [
            ("[[agent]\nendpoint = \"http://a:1\"\n", format!("fleet inventory {p}: bad TOML at line 1: unclosed array table, expected `]`")),
            (
                "[[agent]]\nendpoint = \"http://a:1\"\nendpont = \"x\"\n",
                format!("fleet inventory {p}: bad TOML at line 3: unknown field `endpont`, expected one of `endpoint`, `name`, `region`, `zone`"),
            ),
            ("[[agent]]\nname = \"edge-1\"\n", format!("fleet inventory {p}: bad TOML at line 1: missing field `endpoint`")),
            ("token_env = \"X\"\n", format!("fleet inventory {p}: lists no agents (expected [[agent]] tables with an endpoint)")),
            (
                "[[agent]]\nendpoint = \"10.1.2.3:7070\"\n",
                format!("fleet inventory {p}: agent 1: endpoint `10.1.2.3:7070` is not http(s)://host:port (no scheme)"),
            ),
            (
                "[[agent]]\nendpoint = \"http://a:1\"\n[[agent]]\nendpoint = \"ftp://a:1\"\n",
                format!("fleet inventory {p}: agent 2: endpoint `ftp://a:1` is not http(s)://host:port (the scheme must be http or https)"),
            ),
            (
                "[[agent]]\nendpoint = \"http://a\"\n",
                format!("fleet inventory {p}: agent 1: endpoint `http://a` is not http(s)://host:port (no port)"),
            ),
            (
                "[[agent]]\nendpoint = \"http://a:99999\"\n",
                format!("fleet inventory {p}: agent 1: endpoint `http://a:99999` is not http(s)://host:port (the port must be a number from 1 to 65535)"),
            ),
            (
                "[[agent]]\nendpoint = \"http://a:80/v1?x=1\"\n",
                format!("fleet inventory {p}: agent 1: endpoint `http://a:80/v1?x=1` is not http(s)://host:port (no query or fragment)"),
            ),
            (
                "[[agent]]\nendpoint = \"http://a b:80\"\n",
                format!("fleet inventory {p}: agent 1: endpoint `http://a b:80` is not http(s)://host:port (bad host)"),
            ),
            (
                "[[agent]]\nendpoint = \"http://10.0.0.1:7070\"\n[[agent]]\nendpoint = \"http://10.0.0.2:7070\"\n[[agent]]\nendpoint = \"http://10.0.0.1:7070/\"\n",
                format!("fleet inventory {p}: agent 3: endpoint `http://10.0.0.1:7070` is already agent 1's"),
            ),
            (
                "[[agent]]\nendpoint = \"http://a:1\"\nregion = \" \"\n",
                format!("fleet inventory {p}: agent 1: `region` is empty (leave it out instead)"),
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let got = Inventory::load(&path).unwrap_err().to_string();
            assert_eq!(got, want, "{text}");
        }
        let missing = dir.path().join("nope.toml");
        let got = Inventory::load(&missing).unwrap_err().to_string();
        assert!(got.starts_with(&format!("fleet inventory {}: cannot read it: ", missing.display())), "{got}");
    }
}
