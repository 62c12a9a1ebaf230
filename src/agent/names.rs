//! The one rule for what an agent, extension, region or zone may be called and what
//! a version may look like. The agent server, Parley's agent client, the registration
//! endpoint and the catalog loader all check with these functions, so a name that one
//! of them accepts is one every other accepts too, and none of them ever lets a path
//! separator, `..` or a control byte through (names and versions end up in URLs, in
//! file names and in a real agent's package paths).
//!
//! - A name is 1-63 of `a-z 0-9 -`, starting with a letter or digit (a DNS label
//!   without the length games): `edge-7`, `auth-filter`, `us-east-a`.
//! - A version is 1-64 of `A-Z a-z 0-9 . + -`, starting with a letter or digit, with
//!   no `..`: `2.1.0`, `2024.2`, `1.0.0-rc.1+build.5`.

use std::fmt;

/// Longest name accepted.
pub const NAME_MAX: usize = 63;
/// Longest version accepted.
pub const VERSION_MAX: usize = 64;

/// What a checked string names, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Extension,
    Region,
    Zone,
    Version,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Agent => "agent name",
            Kind::Extension => "extension name",
            Kind::Region => "region",
            Kind::Zone => "zone",
            Kind::Version => "version",
        })
    }
}

/// A name or version that breaks the rule, shown escaped and shortened so that a
/// hostile string cannot flood or corrupt a log line or an error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{shown}` is not valid: {rule}")]
pub struct InvalidName {
    pub kind: Kind,
    shown: String,
    rule: &'static str,
}

const NAME_RULE: &str = "use 1-63 of a-z 0-9 -, starting with a letter or digit";
const VERSION_RULE: &str = "use 1-64 of A-Z a-z 0-9 . + -, starting with a letter or digit, without `..`";

/// Whether `s` is a valid agent, extension, region or zone name.
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= NAME_MAX
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Whether `s` is a valid version.
pub fn is_version(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= VERSION_MAX
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-'))
        && !s.contains("..")
}

/// `Ok` when `s` is a valid name of kind `kind` (any kind but [`Kind::Version`]).
pub fn check_name(kind: Kind, s: &str) -> Result<(), InvalidName> {
    if is_name(s) {
        Ok(())
    } else {
        Err(InvalidName { kind, shown: shown(s), rule: NAME_RULE })
    }
}

/// `Ok` when `s` is a valid version.
pub fn check_version(s: &str) -> Result<(), InvalidName> {
    if is_version(s) {
        Ok(())
    } else {
        Err(InvalidName { kind: Kind::Version, shown: shown(s), rule: VERSION_RULE })
    }
}

/// At most 40 characters of `s`, with control and non-ASCII characters escaped.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_default).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_fleet_and_catalog_pass_and_traversal_does_not() {
        for ok in ["edge-7", "gpu-8", "core-12", "auth-filter", "waf-rules", "us-east-a", "0", &"a".repeat(63)] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-edge",
            "Edge-7",
            "edge_7",
            "edge.7",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "edge 7",
            "é",
            "a\0",
            &"a".repeat(64),
        ] {
            assert!(!is_name(bad), "{bad:?}");
        }
        for ok in ["2.1.0", "2024.2", "0.3.0", "1.0.0-rc.1+build.5", "v2", &"1".repeat(64)] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in
            ["", "..", ".", "../../etc", "1..2", "2.1/0", ".1", "-1", "+1", "1 0", "1;rm", "1\n", &"1".repeat(65)]
        {
            assert!(!is_version(bad), "{bad:?}");
        }
        let err = check_version("..").unwrap_err();
        assert_eq!(
            err.to_string(),
            "version `..` is not valid: use 1-64 of A-Z a-z 0-9 . + -, starting with a letter or digit, without `..`"
        );
        let err = check_name(Kind::Agent, &format!("{}\u{1b}[2J", "x".repeat(50))).unwrap_err();
        assert_eq!(err.to_string(), format!("agent name `{}…` is not valid: {NAME_RULE}", "x".repeat(40)));
    }
}
