//! The TUI on a big fleet, through tmux: 2,000 simulated agents, a rollout followed
//! in the fleet table, the table filtered by version and sorted, at 250x70, 220x60
//! and 80x24.

mod common;

use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;

#[test]
fn a_rollout_on_two_thousand_agents_followed_filtered_by_version_and_sorted_in_tmux() {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()),
        "tmux is not installed: this end-to-end test drives the TUI through tmux (scripts/deps installs it)."
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_parley");
    let sim = common::Simulator::start(dir.path(), 2000, None);
    let inventory = &sim.inventory;

    let script = format!(
        "{bin} --data-dir {data} --fleet {inv} --bake-secs 1.5; sleep 60",
        data = dir.path().join("parley").display(),
        inv = inventory.display(),
    );
    let tmux = Tmux::new("parley-fleet");
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "250",
        "-y",
        "70",
        "env",
        "-u",
        "PARLEY_AGENT_TOKEN",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for("the TUI on 2000 agents", Duration::from_secs(90), |s| {
        s.contains("2000 agents, 4 regions") && s.contains("2000 shown")
    });

    // A rollout to one zone of us-east: 250 agents in 4 steps, each baking 1.5 s.
    tmux.send(&["roll out rate-limiter 1.1.0 to us-east-a", "Enter"]);
    tmux.wait_for("the confirmation", Duration::from_secs(20), |s| s.contains("┌ Confirm "));
    tmux.send(&["y"]);
    tmux.wait_for("the rollout to start", Duration::from_secs(20), |s| s.contains("1 rolling out"));

    // Followed in the fleet pane: only its agents, marked by their state in it.
    tmux.send(&["F3"]);
    tmux.send(&["f"]);
    let screen = tmux.wait_for("the followed rollout", Duration::from_secs(10), |s| {
        s.contains("250 shown") && s.contains("following d-1")
    });
    let marked = screen.lines().filter(|l| l.contains("✓ ") || l.contains("▶ ") || l.contains("· edge-")).count();
    assert!(marked > 0, "rollout rows are marked:\n{screen}");
    assert!(!screen.contains("us-west-a "), "only the rollout's agents:\n{screen}");
    tmux.wait_for("the rollout to succeed", Duration::from_secs(90), |s| {
        s.contains("d-1 rate-limiter 1.1.0 → us-east-a succeeded")
    });
    // Once it has ended there is nothing to follow: the whole fleet again.
    tmux.wait_for("the whole fleet", Duration::from_secs(10), |s| s.contains("2000 shown"));

    // Filtered by version: exactly the 250 agents now on rate-limiter 1.1.
    tmux.send(&["/"]);
    tmux.send(&["-l", "rate-limiter 1.1"]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the version filter", Duration::from_secs(10), |s| {
        s.contains("filter: rate-limiter 1.1 · 250 shown")
    });
    assert!(screen.lines().any(|l| l.contains("healthy") && l.contains("1.1.0")), "the version column:\n{screen}");
    assert!(!screen.contains("healthy   1.0.0"), "no agent on 1.0.0 is shown:\n{screen}");
    // 1.0 is everyone else.
    tmux.send(&["c", "/"]);
    tmux.send(&["-l", "rate-limiter 1.0"]);
    tmux.send(&["Enter"]);
    tmux.wait_for("the others", Duration::from_secs(10), |s| s.contains("filter: rate-limiter 1.0 · 1750 shown"));

    // Sorted: the table with its header, by health then by name.
    tmux.send(&["c", "s"]);
    let screen = tmux.wait_for("the sorted table", Duration::from_secs(10), |s| s.contains("s sort: health"));
    assert!(
        screen
            .lines()
            .any(|l| l.contains("NAME") && l.contains("REGION") && l.contains("HEALTH") && l.contains("P95 ms")),
        "{screen}"
    );
    tmux.send(&["s"]);
    let screen = tmux.wait_for("sorted by name", Duration::from_secs(10), |s| s.contains("s sort: name"));
    let names: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains("healthy"))
        .filter_map(|l| {
            let cell = l.split('│').nth(3)?;
            let word = cell.split_whitespace().next()?;
            (word.starts_with("core-") || word.starts_with("edge-") || word.starts_with("gpu-")).then_some(word)
        })
        .collect();
    assert!(names.len() >= 20, "the table uses the height at 250x70:\n{screen}");
    // In natural order: edge-5 before edge-49.
    let key = |n: &&str| {
        let (head, num) = n.rsplit_once('-').unwrap();
        (head.to_string(), num.parse::<u64>().unwrap())
    };
    let mut sorted = names.clone();
    sorted.sort_by_key(key);
    assert_eq!(names, sorted, "{screen}");

    // 220x60: the fleet table, not an empty deployments pane, takes the height.
    tmux.cmd(&["resize-window", "-t", "tui", "-x", "220", "-y", "60"]);
    let screen = tmux.wait_for("220x60", Duration::from_secs(10), |s| {
        // Redrawn at the new size: the fleet pane starts after the chat's 121 columns.
        s.lines().count() == 60
            && s.contains("s sort: name")
            && s.lines().nth(1).is_some_and(|l| l.chars().skip(121).collect::<String>().starts_with("┌ Fleet"))
            // ... down to the deployments pane: a capture mid-redraw has the top only.
            && s.contains("┌ Deployments")
    });
    let deploys = screen.lines().position(|l| l.contains("┌ Deployments")).unwrap_or(0);
    assert!(deploys >= 40, "the deployments pane starts low, after a tall fleet table (row {deploys}):\n{screen}");
    // Exactly: the right pane (after the chat's 121 columns) is the fleet pane, its
    // table (header, then an agent on every row down to the selected agent's details,
    // which take the rows they need), then the deployments pane, as tall as what it
    // shows. No row of either is left empty.
    let right: Vec<String> = screen.lines().map(|l| l.chars().skip(121).collect()).collect();
    let top = right.iter().position(|l| l.starts_with("┌ Fleet")).unwrap();
    let bottom = right.iter().position(|l| l.starts_with("└")).unwrap();
    assert_eq!(bottom + 1, deploys, "{screen}");
    assert!(right[top + 1].contains("NAME") && right[top + 1].contains("HEALTH"), "{screen}");
    let detail = (top + 2..bottom).find(|&i| right[i].starts_with("│ ") && right[i].contains(" ──")).unwrap();
    let agent_rows = (top + 2..detail)
        .filter(|&i| {
            let cell = right[i].trim_start_matches('│').trim_start_matches([' ', '✓', '▶', '·']);
            ["edge-", "core-", "gpu-"].iter().any(|p| cell.starts_with(p))
        })
        .count();
    assert_eq!(agent_rows, detail - top - 2, "an agent on every row of the table:\n{screen}");
    assert!(agent_rows >= 35, "{agent_rows} rows at 220x60:\n{screen}");
    assert_eq!(bottom - detail - 1, 4, "the details take their four lines and no more:\n{screen}");
    let end = (deploys + 1..right.len()).find(|&i| right[i].starts_with("└")).unwrap();
    let empty = (deploys + 1..end).filter(|&i| right[i].trim_matches(['│', ' ']).is_empty()).count();
    assert_eq!(empty, 0, "the deployments pane is as tall as what it shows:\n{screen}");
    assert_eq!(end, 56, "the input box follows it:\n{screen}");

    // 80x24: one pane at a time, header, table and input all there.
    tmux.cmd(&["resize-window", "-t", "tui", "-x", "80", "-y", "24"]);
    let screen =
        tmux.wait_for("80x24", Duration::from_secs(10), |s| s.contains("2000 agents") && s.contains("s sort: name"));
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    assert!(screen.contains("NAME"), "{screen}");
    tmux.send(&["F2"]);
    tmux.send(&["-l", "roll out auth"]);
    tmux.send(&["Tab"]);
    // Several candidates (the name and its spelling without the hyphen): a popup lists them.
    let screen = tmux.wait_for("the completion popup", Duration::from_secs(10), |s| s.contains("2 matches · Tab"));
    assert!(screen.contains("auth-filter  authfilter"), "{screen}");
    tmux.send(&["C-u"]);
    // Any other key closes the popup.
    tmux.wait_for("the popup to close", Duration::from_secs(10), |s| !s.contains("matches · Tab"));
    tmux.send(&["-l", "roll out auth-filter 2."]);
    tmux.send(&["Tab"]);
    let screen = tmux.wait_for("the popup", Duration::from_secs(10), |s| s.contains("matches · Tab"));
    assert!(screen.contains("2.0.3") && screen.contains("2.1.0"), "{screen}");
    tmux.send(&["C-c"]);
}
