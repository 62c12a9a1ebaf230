//! Dotted numeric versions (`2.1.0`, `2024.2`) and the `>= 2.0` style requirements of
//! the catalog. Deliberately smaller than semver: the catalog's versions are all
//! dotted numbers, and `2024.1` is not valid semver.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    parts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a version (expected dotted numbers such as 2.1.0)")]
pub struct VersionError(pub String);

impl Version {
    pub fn parts(&self) -> &[u64] {
        &self.parts
    }

    /// True when `self` is written as a prefix of `other` (`2.1` of `2.1.0`, `2` of `2.0.3`).
    pub fn is_prefix_of(&self, other: &Version) -> bool {
        self.parts.len() <= other.parts.len() && other.parts[..self.parts.len()] == self.parts[..]
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.strip_prefix('v').unwrap_or(s);
        let parts: Result<Vec<u64>, _> = t.split('.').map(|p| p.parse::<u64>()).collect();
        match parts {
            Ok(parts) if !parts.is_empty() && parts.len() <= 4 && !t.contains('+') => Ok(Version { parts }),
            _ => Err(VersionError(s.to_string())),
        }
    }
}

impl Ord for Version {
    /// Missing trailing parts count as zero: `2.0` == `2.0.0` in ordering.
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in &self.parts {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A requirement such as `>= 2.0`, `< 3`, `= 1.4.2`, or several joined by commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReq {
    clauses: Vec<(Cmp, Version)>,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

impl VersionReq {
    pub fn matches(&self, v: &Version) -> bool {
        self.clauses.iter().all(|(cmp, want)| match cmp {
            Cmp::Ge => v >= want,
            Cmp::Gt => v > want,
            Cmp::Le => v <= want,
            Cmp::Lt => v < want,
            Cmp::Eq => v == want,
        })
    }
}

impl FromStr for VersionReq {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let c = clause.trim();
            let (cmp, rest) = if let Some(r) = c.strip_prefix(">=") {
                (Cmp::Ge, r)
            } else if let Some(r) = c.strip_prefix("<=") {
                (Cmp::Le, r)
            } else if let Some(r) = c.strip_prefix('>') {
                (Cmp::Gt, r)
            } else if let Some(r) = c.strip_prefix('<') {
                (Cmp::Lt, r)
            } else if let Some(r) = c.strip_prefix('=') {
                (Cmp::Eq, r)
            } else {
                (Cmp::Eq, c)
            };
            let v: Version = rest.trim().parse().map_err(|_| VersionError(s.to_string()))?;
            clauses.push((cmp, v));
        }
        Ok(VersionReq { clauses, text: s.trim().to_string() })
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn orders_numerically() {
        assert!(v("2.10.0") > v("2.9.1"));
        assert!(v("2024.2") > v("2024.1"));
        assert_eq!(v("2.0").cmp(&v("2.0.0")), Ordering::Equal);
        assert_eq!(v("v2.1.0").to_string(), "2.1.0");
    }

    #[test]
    fn prefixes() {
        assert!(v("2.1").is_prefix_of(&v("2.1.0")));
        assert!(!v("2.1").is_prefix_of(&v("2.10.0")));
    }

    #[test]
    fn requirements() {
        let r: VersionReq = ">= 2.0".parse().unwrap();
        assert!(r.matches(&v("2.0.3")));
        assert!(!r.matches(&v("1.0.0")));
        let r: VersionReq = ">=1.0, <2".parse().unwrap();
        assert!(r.matches(&v("1.5.0")) && !r.matches(&v("2.0.0")));
        assert!("banana".parse::<VersionReq>().is_err());
        assert!("1..2".parse::<Version>().is_err());
    }
}
