//! Input that is no request at all: a pasted SQL statement, a shell command, a log
//! line. Operators paste such things into a chat to show what they see; read with
//! the grammar's permissive patterns they would become the nearest read operation
//! ("kubectl drain edge-7" a drain, "ERROR ... health check failed" a health
//! question), so they are recognised first, on the raw text, and parse to nothing.
//!
//! Only shapes no operator sentence has count: SQL's clause structure, a shell
//! prompt, pipe or flag, a path, a program only a shell runs, a timestamp with
//! seconds, a log level in capitals, `key=value` fields, a JSON object, a source
//! location. A sentence that merely mentions such words ("update auth-filter to 2.1",
//! "watch prod", "tail the logs of d-3") is still a request.

/// Programs that are only ever typed into a shell. Words that are also Parley verbs
/// ("watch", "tail", "restart", "make", "ping") are left out: a flag or a path still gives
/// those lines away.
const SHELL_ONLY: &[&str] = &[
    "kubectl",
    "k9s",
    "docker",
    "podman",
    "sudo",
    "systemctl",
    "journalctl",
    "ssh",
    "scp",
    "rsync",
    "curl",
    "wget",
    "cat",
    "grep",
    "egrep",
    "rg",
    "ls",
    "cd",
    "git",
    "helm",
    "terraform",
    "ansible",
    "ansible-playbook",
    "ps",
    "htop",
    "echo",
    "export",
    "chmod",
    "chown",
    "mkdir",
    "rm",
    "mv",
    "cp",
    "vim",
    "vi",
    "nano",
    "less",
    "head",
    "awk",
    "sed",
    "jq",
    "cargo",
    "npm",
    "pip",
    "python",
    "python3",
    "bash",
    "sh",
    "zsh",
    "apt",
    "apt-get",
    "yum",
    "dnf",
    "brew",
    "nc",
    "dig",
    "nslookup",
    "traceroute",
    "netstat",
    "ss",
    "tcpdump",
    "psql",
    "sqlite3",
    "mysql",
    "redis-cli",
    "aws",
    "gcloud",
    "az",
    "tar",
    "unzip",
    "openssl",
    "crontab",
];

const LOG_LEVELS: &[&str] = &["ERROR", "WARN", "WARNING", "INFO", "DEBUG", "TRACE", "FATAL", "CRITICAL", "ERR"];

const MONTHS: &[&str] = &["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Whether `raw` (as typed, before any normalising) is something other than a request.
pub fn is_not_a_request(raw: &str) -> bool {
    let text = raw.trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(first) = words.first() else { return false };
    is_sql(&words) || is_shell(text, &words, first) || is_log(text, &words, first)
}

fn lower(w: &str) -> String {
    w.trim_matches(|c: char| !c.is_alphanumeric() && c != '*').to_ascii_lowercase()
}

/// SELECT ... FROM, INSERT INTO, DELETE FROM, UPDATE x SET, CREATE/DROP/ALTER TABLE.
fn is_sql(words: &[&str]) -> bool {
    let w: Vec<String> = words.iter().map(|w| lower(w)).collect();
    let has = |s: &str| w.iter().any(|x| x == s);
    let has_call = words.iter().any(|x| x.contains("(*)") || x.to_ascii_lowercase().starts_with("count("));
    match w.first().map(String::as_str) {
        Some("select") => has("from") || has_call || words.contains(&"*"),
        Some("insert") => w.get(1).is_some_and(|x| x == "into"),
        Some("delete") => w.get(1).is_some_and(|x| x == "from"),
        Some("update") => has("set") && words.iter().any(|x| x.contains('=')),
        Some("create" | "drop" | "alter" | "truncate") => {
            w.get(1).is_some_and(|x| matches!(x.as_str(), "table" | "index" | "view" | "database" | "schema"))
        }
        Some("with") => has("as") && has("select"),
        _ => false,
    }
}

fn is_shell(text: &str, words: &[&str], first: &str) -> bool {
    // A prompt: "$ parley ask ...", "# systemctl ...", "> ...".
    if matches!(first, "$" | "#" | "%") && words.len() > 1 {
        return true;
    }
    if SHELL_ONLY.contains(&first) || first.starts_with("./") || first.starts_with('/') {
        return true;
    }
    if [" | ", " && ", " || ", "$(", "`", " 2>", " >> ", " > /"].iter().any(|s| text.contains(s)) {
        return true;
    }
    words.iter().any(|w| is_flag(w) || is_path(w))
}

/// "-n", "-a", "--oneline", "--set": not "-50%", "-3" or a dash between words.
fn is_flag(w: &str) -> bool {
    let rest = w.strip_prefix("--").or_else(|| w.strip_prefix('-'));
    rest.is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// "/var/log/x", "./chart", "~/x", "deployment/edge" (kubectl's kind/name).
fn is_path(w: &str) -> bool {
    let w = w.trim_matches(|c: char| matches!(c, '\'' | '"' | ',' | ';'));
    if w.len() > 1 && (w.starts_with('/') || w.starts_with("./") || w.starts_with("../") || w.starts_with("~/")) {
        return true;
    }
    // "kind/name": letters on both sides of the slash ("w/" alone is chat shorthand).
    match w.split_once('/') {
        Some((a, b)) => {
            a.len() > 3
                && b.len() > 2
                && a.chars().all(|c| c.is_ascii_lowercase())
                && b.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
        None => false,
    }
}

fn is_log(text: &str, words: &[&str], first: &str) -> bool {
    let bare = first.trim_matches(|c: char| matches!(c, '[' | ']' | ':'));
    // A line that starts with a timestamp, a date or a capitalised log level.
    if starts_with_timestamp(bare) || LOG_LEVELS.contains(&bare) {
        return true;
    }
    if MONTHS.contains(&first) && words.get(1).is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())) {
        return true;
    }
    // A date followed by a time of day ("2026-12-01 09:15:02").
    if is_date_word(bare) && words.get(1).is_some_and(|t| is_clock(t)) {
        return true;
    }
    // Times with seconds, levels in capitals after a timestamp, "key=value" fields,
    // a JSON object, a source location ("src/main.rs:10:5"), a Rust path.
    if words.iter().any(|w| is_clock(w)) {
        return true;
    }
    if words.iter().filter(|w| is_field(w)).count() >= 2 {
        return true;
    }
    if text.starts_with('{') && text.contains("\":") {
        return true;
    }
    words.iter().any(|w| is_source_location(w) || (w.contains("::") && w.chars().any(|c| c.is_ascii_alphabetic())))
}

fn is_date_word(w: &str) -> bool {
    let b = w.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

/// "2026-11-30T14:02:11Z", "2026-12-01T09:15:02.113Z".
fn starts_with_timestamp(w: &str) -> bool {
    is_date_word(w) && w.as_bytes().get(10).is_some_and(|c| *c == b'T' || *c == b't')
}

/// "14:02:11", "09:15:02,113", "14:02:11]": a time of day with seconds.
fn is_clock(w: &str) -> bool {
    let w = w.trim_matches(|c: char| matches!(c, '[' | ']' | ',' | '.'));
    let parts: Vec<&str> = w.splitn(3, ':').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[2].len() >= 2
        && parts[2].as_bytes()[..2].iter().all(u8::is_ascii_digit)
}

/// "level=info", "agent=edge-7", "msg=\"...\"".
fn is_field(w: &str) -> bool {
    match w.split_once('=') {
        Some((k, v)) => !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !v.is_empty(),
        None => false,
    }
}

/// "src/main.rs:10:5", "agent.log:42".
fn is_source_location(w: &str) -> bool {
    let Some((file, line)) = w.split_once(':') else { return false };
    file.contains('.')
        && file
            .rsplit('.')
            .next()
            .is_some_and(|ext| (1..=4).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphabetic()))
        && line.split(':').next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_sql_shell_and_logs_are_not_requests() {
        for line in [
            "SELECT * FROM deployments;",
            "select count(*) from audit",
            "UPDATE agents SET cordoned = 1 WHERE name = 'edge-7';",
            "kubectl drain edge-7 --ignore-daemonsets",
            "tail -f /var/log/parley/agent.log",
            "$ parley ask 'drain edge-7'",
            "2026-11-30T14:02:11Z WARN edge-7 health check failed",
            "Nov 30 14:02:11 core-3 parley-agent[812]: paused",
            "ERROR [orchestrate] deployment d-12 failed",
            "level=info msg=\"draining agent\" agent=edge-7",
            "thread 'main' panicked at src/main.rs:10:5",
        ] {
            assert!(is_not_a_request(line), "{line:?}");
        }
    }

    #[test]
    fn requests_that_mention_such_words_are_requests() {
        for line in [
            "update auth-filter to 2.1 in eu-west",
            "watch prod every 30s",
            "restart edge-7",
            "whats up w/ gpu-7",
            "send -50% of it",
            "select the gpu agents",
            "show failed deployments since 2026-11-01",
            "make edge-7 schedulable",
            "DRAIN EDGE-9",
            "canary waf-rules 2024.2 on staging: 10, 50",
            "and/or",
        ] {
            assert!(!is_not_a_request(line), "{line:?}");
        }
    }
}
