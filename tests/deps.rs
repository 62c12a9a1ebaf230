//! The README's test command installs what the tests need by itself: scripts/deps,
//! shared by scripts/test and .ci/run, finds what is missing and installs only that.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn deps_lists_what_a_bare_machine_lacks() {
    // A PATH with nothing but the shell and the tools the script itself uses: a fresh machine.
    let bare = tempfile::tempdir().unwrap();
    for tool in ["bash", "grep", "id", "printf"] {
        if let Ok(path) = which(tool) {
            std::os::unix::fs::symlink(path, bare.path().join(tool)).unwrap();
        }
    }
    let out = Command::new(which("bash").unwrap())
        .arg(root().join("scripts/deps"))
        .env("PATH", bare.path())
        .env("PARLEY_DEPS_DRY_RUN", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    // Festival's voice is found by its directory, which no PATH hides.
    let voice_missing = !Path::new("/usr/share/festival/voices/english/kal_diphone").is_dir();
    assert_eq!(listed.iter().any(|p| p == "festvox-kallpc16k"), voice_missing);
    // So is PostgreSQL's server (Debian keeps initdb off PATH).
    let pg_missing = !std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("bin/initdb").is_file());
    assert_eq!(listed.iter().any(|p| p == "postgresql"), pg_missing);
    let listed: Vec<String> = listed.into_iter().filter(|p| p != "festvox-kallpc16k" && p != "postgresql").collect();
    assert_eq!(
        listed,
        [
            "build-essential",
            "tmux",
            "cmake",
            "clang",
            "libclang-dev",
            "espeak-ng",
            "sox",
            "flite",
            "festival",
            "python3-pip",
            "pkg-config",
            "libasound2-dev",
            "python3",
            "coreutils",
            "prometheus",
            "man-db"
        ]
    );
}

#[test]
fn deps_does_nothing_on_a_machine_that_has_everything() {
    // This machine ran scripts/deps (through scripts/test or .ci/run) before the tests.
    let out = Command::new("bash").arg(root().join("scripts/deps")).env("PARLEY_DEPS_DRY_RUN", "1").output().unwrap();
    assert!(out.status.success());
    let missing = String::from_utf8_lossy(&out.stdout);
    if !missing.is_empty() {
        eprintln!("this machine lacks {missing:?}: run scripts/deps; the second half of this check was skipped");
        return;
    }
    let out = Command::new("bash").arg(root().join("scripts/deps")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn the_test_command_and_ci_both_install_through_deps() {
    for script in ["scripts/test", ".ci/run"] {
        let text = std::fs::read_to_string(root().join(script)).unwrap();
        let calls = text.lines().filter(|l| l.trim() == "scripts/deps").count();
        assert_eq!(calls, 1, "{script} calls scripts/deps once");
        assert!(!text.contains("apt-get"), "{script} installs only through scripts/deps");
    }
}

fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file()).ok_or(())
}
