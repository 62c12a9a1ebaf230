//! No two files of the library import each other. A pair that does is one rule
//! split across two owners, and the start of a circle (the dialog once imported
//! `app::Services` back from the `app` that runs it). A module and its own
//! submodules are one unit and may name each other; any other pair may not.
//!
//! Edges are the `crate::` paths a file names outside comments, in `use` lines and
//! inline, resolved to the deepest module that is a file of `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/dialog/mod.rs` -> `dialog`, `src/dialog/render.rs` -> `dialog::render`,
/// `src/lib.rs` -> `` (the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// Every path a `crate::` names in `code`, groups (`crate::{a, b::{c, d}}`) expanded.
fn crate_paths(code: &str) -> Vec<String> {
    fn group(s: &[u8], mut i: usize, prefix: &str, out: &mut Vec<String>) -> usize {
        // `s[i]` is just past a `{`.
        let mut current = String::new();
        while i < s.len() {
            let c = s[i] as char;
            match c {
                '{' => {
                    let p = format!("{prefix}{current}");
                    i = group(s, i + 1, &p, out);
                    current.clear();
                    continue;
                }
                '}' => {
                    if !current.trim().is_empty() {
                        out.push(format!("{prefix}{}", current.trim()));
                    }
                    return i + 1;
                }
                ',' => {
                    if !current.trim().is_empty() {
                        out.push(format!("{prefix}{}", current.trim()));
                    }
                    current.clear();
                }
                c if c.is_alphanumeric() || c == '_' || c == ':' => current.push(c),
                _ => {}
            }
            i += 1;
        }
        i
    }
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        // `parley_crate::` or `$crate::` are not this crate's paths.
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            from = start + 7;
            continue;
        }
        let mut i = start + 7;
        let mut path = String::new();
        while i < bytes.len() && ((bytes[i] as char).is_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
            path.push(bytes[i] as char);
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i = group(bytes, i + 1, &path, &mut out);
        } else {
            out.push(path);
        }
        from = i.max(start + 7);
    }
    out
}

/// The deepest of `modules` that `path` names: `dialog::render::help` -> `dialog::render`.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| modules.contains(m))
}

/// Whether `a` is `b`, or one contains the other.
fn nested(a: &str, b: &str) -> bool {
    let within =
        |inner: &str, outer: &str| outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"));
    within(a, b) || within(b, a)
}

#[test]
fn no_two_library_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The binary is its own crate: it names the library as `parley::`.
    files.retain(|f| f != &src.join("main.rs"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        let code: String =
            text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        for path in crate_paths(&code) {
            if let Some(to) = resolve(&path, &modules) {
                if !nested(&from, &to) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    let mut mutual = Vec::new();
    for (a, tos) in &edges {
        for b in tos {
            if a < b && edges.get(b).is_some_and(|back| back.contains(a)) {
                mutual.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(edges.get("dialog").is_some_and(|d| d.contains("services")), "the check sees no edges: {edges:?}");
    assert_eq!(mutual, Vec::<String>::new(), "files that import each other");
}

#[test]
fn groups_and_inline_paths_are_read() {
    let code = "use crate::{a::b, c::{d, e::f}};\nlet x = crate::g::h(1); let y = parley_crate::no;";
    assert_eq!(crate_paths(code), ["a::b", "c::d", "c::e::f", "g::h"]);
}
