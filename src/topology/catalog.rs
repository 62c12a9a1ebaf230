//! The extension catalog: which extensions exist, their versions, the capabilities
//! they need and the extensions they depend on. Loaded from TOML (`assets/catalog.toml`
//! is built in; a fleet can bring its own).

use serde::Deserialize;

use super::TopologyError;
use crate::agent::names::{self, Kind};
use crate::artifact::ArtifactRef;
use crate::ops::{Version, VersionReq};

#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    extensions: Vec<CatalogExtension>,
    /// Analysis templates (`[[analysis]]`), by name; extensions list the ones that
    /// gate their rollouts when a Prometheus is configured.
    analysis: Vec<crate::analysis::Template>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogExtension {
    pub name: String,
    pub description: String,
    /// Oldest first.
    pub versions: Vec<Version>,
    /// Capabilities an agent must have to run it.
    pub requires: Vec<String>,
    pub depends: Vec<Dependency>,
    /// Names of the analysis templates its rollouts are gated by (with `[metrics]`).
    pub analysis: Vec<String>,
    /// Version (as the catalog spells it after normalising) -> its artifact, for the
    /// versions a real agent can install.
    pub artifacts: std::collections::BTreeMap<String, ArtifactRef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub name: String,
    pub req: VersionReq,
}

/// How a spoken or typed version matched the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionMatch {
    /// Exactly one catalog version fits.
    Exact(String),
    /// Several fit ("2" when 2.0.3 and 2.1.0 exist).
    Ambiguous(Vec<String>),
    /// None fits; the catalog's versions are given for the reply.
    Unknown { known: Vec<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    extension: Vec<ExtensionFile>,
    #[serde(default)]
    analysis: Vec<crate::analysis::TemplateFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionFile {
    name: String,
    #[serde(default)]
    description: String,
    versions: Vec<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    depends: Vec<DependencyFile>,
    #[serde(default)]
    analysis: Vec<String>,
    /// `[extension.artifacts."1.0.0"]`: `url` (path, file://, http(s)://), `sha256`,
    /// optional `size` and `signature`.
    #[serde(default)]
    artifacts: std::collections::BTreeMap<String, ArtifactRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DependencyFile {
    name: String,
    version: String,
}

const EMBEDDED: &str = include_str!("../../assets/catalog.toml");

impl Catalog {
    /// The catalog of the embedded demo fleet.
    pub fn embedded() -> Result<Catalog, TopologyError> {
        Catalog::from_toml(EMBEDDED, "assets/catalog.toml")
    }

    /// Parses a catalog file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Catalog, TopologyError> {
        let bad = |reason: String| TopologyError::Catalog { origin: origin.to_string(), reason };
        let file: CatalogFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut analysis: Vec<crate::analysis::Template> = Vec::with_capacity(file.analysis.len());
        for t in file.analysis {
            if analysis.iter().any(|a| a.name == t.name) {
                return Err(bad(format!("analysis template `{}` is defined twice", t.name)));
            }
            analysis.push(crate::analysis::Template::from_file(t).map_err(|e| bad(e.to_string()))?);
        }
        let mut extensions = Vec::with_capacity(file.extension.len());
        for ext in file.extension {
            if let Some(missing) = ext.analysis.iter().find(|n| !analysis.iter().any(|a| a.name == **n)) {
                return Err(bad(format!("extension `{}` names unknown analysis template `{missing}`", ext.name)));
            }
            // Names reach agents' URLs and package paths: the one rule of `agent::names`.
            names::check_name(Kind::Extension, &ext.name).map_err(|e| bad(e.to_string()))?;
            if let Some(d) = ext.depends.iter().find(|d| !names::is_name(&d.name)) {
                return Err(bad(format!(
                    "extension `{}` depends on {}",
                    ext.name,
                    names::check_name(Kind::Extension, &d.name).err().map(|e| e.to_string()).unwrap_or_default()
                )));
            }
            if ext.versions.is_empty() {
                return Err(bad(format!("extension `{}` lists no versions", ext.name)));
            }
            let mut versions = Vec::with_capacity(ext.versions.len());
            for v in &ext.versions {
                names::check_version(v).map_err(|e| bad(format!("extension `{}`: {e}", ext.name)))?;
                versions.push(v.parse::<Version>().map_err(|e| bad(format!("extension `{}`: {e}", ext.name)))?);
            }
            versions.sort();
            let mut depends = Vec::new();
            for d in ext.depends {
                let req = d
                    .version
                    .parse::<VersionReq>()
                    .map_err(|e| bad(format!("extension `{}` depends on `{}`: {e}", ext.name, d.name)))?;
                depends.push(Dependency { name: d.name, req });
            }
            let mut artifacts = std::collections::BTreeMap::new();
            for (v, artifact) in ext.artifacts {
                let parsed = v.parse::<Version>().ok().filter(|p| versions.contains(p)).ok_or_else(|| {
                    bad(format!("extension `{}` has an artifact for `{v}`, which it does not list", ext.name))
                })?;
                artifact.check().map_err(|e| bad(format!("extension `{}` {v}: {e}", ext.name)))?;
                artifacts.insert(parsed.to_string(), artifact);
            }
            extensions.push(CatalogExtension {
                name: ext.name,
                description: ext.description,
                versions,
                requires: ext.requires,
                depends,
                analysis: ext.analysis,
                artifacts,
            });
        }
        for ext in &extensions {
            for dep in &ext.depends {
                if !extensions.iter().any(|e| e.name == dep.name) {
                    return Err(bad(format!("extension `{}` depends on unknown `{}`", ext.name, dep.name)));
                }
            }
        }
        Ok(Catalog { extensions, analysis })
    }

    /// Artifact paths that are relative made relative to `base` (the catalog file's
    /// directory), so the catalog means the same files whatever the working directory.
    pub fn relative_to(mut self, base: Option<&std::path::Path>) -> Catalog {
        let Some(base) = base.filter(|b| !b.as_os_str().is_empty()) else { return self };
        for ext in &mut self.extensions {
            for a in ext.artifacts.values_mut() {
                if !a.url.contains("://") && std::path::Path::new(&a.url).is_relative() {
                    a.url = base.join(&a.url).display().to_string();
                }
            }
        }
        self
    }

    /// Every artifact by (extension, version).
    pub fn artifacts(&self) -> std::collections::BTreeMap<(String, String), ArtifactRef> {
        self.extensions
            .iter()
            .flat_map(|e| e.artifacts.iter().map(|(v, a)| ((e.name.clone(), v.clone()), a.clone())))
            .collect()
    }

    pub fn extensions(&self) -> &[CatalogExtension] {
        &self.extensions
    }

    /// Every analysis template of the catalog.
    pub fn analysis_templates(&self) -> &[crate::analysis::Template] {
        &self.analysis
    }

    pub fn get(&self, name: &str) -> Option<&CatalogExtension> {
        self.extensions.iter().find(|e| e.name == name)
    }

    /// Resolves what an operator said (`2.1`, `v2.1.0`, `latest`) to a catalog version.
    pub fn resolve_version(&self, extension: &str, said: &str) -> VersionMatch {
        let Some(ext) = self.get(extension) else {
            return VersionMatch::Unknown { known: Vec::new() };
        };
        ext.resolve_version(said)
    }
}

impl CatalogExtension {
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    pub fn has_version(&self, v: &str) -> bool {
        self.versions.iter().any(|x| x.to_string() == v)
    }

    pub fn version_strings(&self) -> Vec<String> {
        self.versions.iter().map(Version::to_string).collect()
    }

    pub fn resolve_version(&self, said: &str) -> VersionMatch {
        let said = said.trim();
        if matches!(said, "latest" | "newest" | "last") {
            return match self.latest() {
                Some(v) => VersionMatch::Exact(v.to_string()),
                None => VersionMatch::Unknown { known: Vec::new() },
            };
        }
        let Ok(want) = said.parse::<Version>() else {
            return VersionMatch::Unknown { known: self.version_strings() };
        };
        if let Some(v) = self.versions.iter().find(|v| **v == want && v.parts().len() == want.parts().len()) {
            return VersionMatch::Exact(v.to_string());
        }
        let fits: Vec<String> = self.versions.iter().filter(|v| want.is_prefix_of(v)).map(Version::to_string).collect();
        match fits.len() {
            0 => VersionMatch::Unknown { known: self.version_strings() },
            1 => VersionMatch::Exact(fits.into_iter().next().unwrap_or_default()),
            _ => VersionMatch::Ambiguous(fits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_matches_the_product_page() {
        let c = Catalog::embedded().unwrap();
        let names: Vec<&str> = c.extensions().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["auth-filter", "rate-limiter", "geo-router", "log-shipper", "model-server", "waf-rules"]);
        assert_eq!(c.get("model-server").unwrap().requires, ["gpu"]);
        assert_eq!(c.get("waf-rules").unwrap().depends[0].req.to_string(), ">= 2.0");
    }

    #[test]
    fn versions_resolve_like_an_operator_means_them() {
        let c = Catalog::embedded().unwrap();
        assert_eq!(c.resolve_version("auth-filter", "2.1"), VersionMatch::Exact("2.1.0".into()));
        assert_eq!(c.resolve_version("auth-filter", "v2.1.0"), VersionMatch::Exact("2.1.0".into()));
        assert_eq!(c.resolve_version("auth-filter", "latest"), VersionMatch::Exact("2.1.0".into()));
        assert_eq!(
            c.resolve_version("auth-filter", "2"),
            VersionMatch::Ambiguous(vec!["2.0.3".into(), "2.1.0".into()])
        );
        assert_eq!(
            c.resolve_version("auth-filter", "3.0"),
            VersionMatch::Unknown { known: vec!["1.0.0".into(), "2.0.3".into(), "2.1.0".into()] }
        );
        assert_eq!(c.resolve_version("waf-rules", "2024.2"), VersionMatch::Exact("2024.2".into()));
    }

    #[test]
    fn malformed_catalogs_name_the_problem() {
        let err = Catalog::from_toml("[[extension]]\nname = \"x\"\nversions = [\"one\"]\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("c.toml") && err.to_string().contains("`x`"), "{err}");
        let err = Catalog::from_toml(
            "[[extension]]\nname = \"x\"\nversions = [\"1.0\"]\ndepends = [{ name = \"y\", version = \">= 1\" }]\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown `y`"), "{err}");
        // Traversal and path separators never get into the catalog.
        let err = Catalog::from_toml("[[extension]]\nname = \"../x\"\nversions = [\"1.0\"]\n", "c.toml").unwrap_err();
        assert_eq!(
            err,
            TopologyError::Catalog {
                origin: "c.toml".into(),
                reason: "extension name `../x` is not valid: use 1-63 of a-z 0-9 -, starting with a letter or digit"
                    .into()
            }
        );
        let err = Catalog::from_toml(
            "[[extension]]\nname = \"x\"\nversions = [\"1.0\"]\ndepends = [{ name = \"a/b\", version = \">= 1\" }]\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("depends on extension name `a/b` is not valid"), "{err}");
    }

    #[test]
    fn analysis_templates_are_checked_where_the_catalog_is_loaded() {
        let c = Catalog::embedded().unwrap();
        assert_eq!(c.get("auth-filter").unwrap().analysis, ["error-ratio", "p99-latency"]);
        assert!(c.get("rate-limiter").unwrap().analysis.is_empty(), "the built-in gate stays the default");
        let names: Vec<&str> = c.analysis_templates().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["error-ratio", "p99-latency"]);
        let ext = "[[extension]]\nname = \"x\"\nversions = [\"1.0\"]\nanalysis = [\"e\"]\n";
        let err = Catalog::from_toml(ext, "c.toml").unwrap_err().to_string();
        assert!(err.contains("extension `x` names unknown analysis template `e`"), "{err}");
        let template =
            |query: &str| format!("{ext}[[analysis]]\nname = \"e\"\nquery = '{query}'\nfailure = \"value > 1\"\n");
        assert!(Catalog::from_toml(&template(r#"up{version="{version}"}"#), "c.toml").is_ok());
        let err = Catalog::from_toml(&template("up > {version}"), "c.toml").unwrap_err().to_string();
        assert!(err.contains("analysis template `e`: {version} may stand only inside a double-quoted string"), "{err}");
        let twice = format!("{}[[analysis]]\nname = \"e\"\nquery = 'up'\nfailure = \"value > 1\"\n", template("up"));
        let err = Catalog::from_toml(&twice, "c.toml").unwrap_err().to_string();
        assert!(err.contains("analysis template `e` is defined twice"), "{err}");
        let err = Catalog::from_toml(&template("up").replace("value > 1", "value > threshold"), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a condition uses `threshold`, but the template sets none"), "{err}");
    }
}
