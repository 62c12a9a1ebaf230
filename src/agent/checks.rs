//! The engine of the `run_health_check` operation: probes agents live over the agent
//! protocol (rather than trusting the last poll) and judges each requested check.
//!
//! One authenticated `GET /v1/status` per agent feeds connectivity, functionality,
//! performance and resources; the security check makes one more request without a
//! token and expects it refused with 401.

use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::protocol::{AgentStatus, ServingState};
use super::{AgentClient, AgentError};
use crate::ops::Check;
use crate::topology::{AgentView, HealthThresholds};

/// Agents probed at once: enough to check a region in one round trip, few enough
/// not to look like an attack to the fleet's network.
const CONCURRENCY: usize = 32;

/// The verdict of one check on one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub agent: String,
    pub check: Check,
    pub passed: bool,
    /// For people: the measurement, or why it failed.
    pub detail: String,
}

/// Runs `checks` on `agents` (every check when `checks` is empty; duplicates run once).
/// `client` carries the fleet's token; `anonymous` must carry none. Results come in
/// agent order, then in the order the checks were asked for.
pub async fn run_checks(
    client: &AgentClient,
    anonymous: &AgentClient,
    agents: &[AgentView],
    checks: &[Check],
    thresholds: &HealthThresholds,
) -> Vec<CheckResult> {
    let mut wanted: Vec<Check> = Vec::with_capacity(Check::ALL.len());
    for &c in if checks.is_empty() { &Check::ALL[..] } else { checks } {
        if !wanted.contains(&c) {
            wanted.push(c);
        }
    }
    let wanted = &wanted;
    let needs_status = wanted.iter().any(|c| *c != Check::Security);
    let needs_anonymous = wanted.contains(&Check::Security);

    let mut per_agent: Vec<(usize, Vec<CheckResult>)> = stream::iter(0..agents.len())
        .map(|i| async move {
            let agent = &agents[i];
            let status = async {
                if needs_status {
                    let started = Instant::now();
                    Some(client.status(&agent.endpoint).await.map(|s| (s, started.elapsed().as_millis())))
                } else {
                    None
                }
            };
            let anon = async {
                if needs_anonymous {
                    Some(anonymous.status(&agent.endpoint).await)
                } else {
                    None
                }
            };
            let (status, anon) = futures::join!(status, anon);
            let results = wanted
                .iter()
                .map(|&check| {
                    let (passed, detail) = judge(check, agent, status.as_ref(), anon.as_ref(), thresholds);
                    CheckResult { agent: agent.name.to_string(), check, passed, detail }
                })
                .collect();
            (i, results)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    per_agent.sort_unstable_by_key(|(i, _)| *i);
    per_agent.into_iter().flat_map(|(_, r)| r).collect()
}

type Probe = Result<(AgentStatus, u128), AgentError>;

fn judge(
    check: Check,
    agent: &AgentView,
    status: Option<&Probe>,
    anon: Option<&Result<AgentStatus, AgentError>>,
    t: &HealthThresholds,
) -> (bool, String) {
    if check == Check::Security {
        return match anon {
            Some(Err(AgentError::Unauthorized { .. })) => (true, "refuses requests without a token (401)".to_string()),
            Some(Ok(_)) => {
                (false, "accepts requests without a token: anyone who can reach it can change it".to_string())
            }
            Some(Err(AgentError::Refused { status, .. })) => {
                (false, format!("answered {status} to a request without a token; the protocol requires 401"))
            }
            Some(Err(e)) => (false, format!("could not tell: {e}")),
            None => (false, "not probed".to_string()),
        };
    }
    let (s, ms) = match status {
        Some(Ok((s, ms))) => (s, *ms),
        Some(Err(e)) if check == Check::Connectivity => return (false, e.to_string()),
        Some(Err(e)) => return (false, format!("no status to judge: {e}")),
        None => return (false, "not probed".to_string()),
    };
    let m = &s.metrics;
    match check {
        Check::Connectivity => (true, format!("answered in {ms} ms")),
        Check::Functionality => functionality(agent, s, t),
        Check::Performance => {
            let ok = m.p95_ms <= t.p95_ms;
            (ok, format!("p95 {} ms ({} {} ms)", m.p95_ms, if ok { "within" } else { "over" }, t.p95_ms))
        }
        Check::Resources => {
            let cpu_ok = m.cpu_pct <= t.cpu_pct;
            let mem_ok = m.mem_pct <= t.mem_pct;
            let over = |ok: bool| if ok { "within" } else { "over" };
            (
                cpu_ok && mem_ok,
                format!(
                    "cpu {}% ({} {}%), memory {}% ({} {}%)",
                    m.cpu_pct,
                    over(cpu_ok),
                    t.cpu_pct,
                    m.mem_pct,
                    over(mem_ok),
                    t.mem_pct
                ),
            )
        }
        Check::Security => (false, "not probed".to_string()),
    }
}

/// Serving, running what the model says it runs, and not failing requests.
fn functionality(agent: &AgentView, s: &AgentStatus, t: &HealthThresholds) -> (bool, String) {
    let mut problems = Vec::new();
    if s.name != agent.name {
        problems.push(format!("the endpoint answers as `{}`", s.name));
    }
    match s.state {
        // Cordoned still serves what it has; it only takes nothing new.
        ServingState::Active | ServingState::Cordoned => {}
        other => problems.push(format!("not serving ({})", other.as_str())),
    }
    for (name, version) in &agent.extensions {
        match s.extensions.iter().find(|e| &e.name == name) {
            None => problems.push(format!("{name} {version} is missing")),
            Some(e) if &e.version != version => problems.push(format!("runs {name} {}, expected {version}", e.version)),
            Some(_) => {}
        }
    }
    if s.metrics.error_rate_pct > t.error_rate_pct {
        problems.push(format!("error rate {}% over {}%", s.metrics.error_rate_pct, t.error_rate_pct));
    }
    if problems.is_empty() {
        let note = if s.state == ServingState::Cordoned { ", cordoned" } else { "" };
        (
            true,
            format!(
                "serving{note}, {} extension(s) as expected, error rate {}%",
                agent.extensions.len(),
                s.metrics.error_rate_pct
            ),
        )
    } else {
        (false, problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::demo::{demo_members, DemoFleet, DemoOptions};
    use crate::agent::faults::FaultSpec;
    use crate::agent::protocol::AgentAction;
    use crate::topology::poller::{Poller, PollerConfig};
    use crate::topology::Catalog;

    async fn views(fleet: &DemoFleet, client: &AgentClient) -> Vec<AgentView> {
        let catalog = std::sync::Arc::new(Catalog::embedded().unwrap());
        let poller = Poller::new(fleet.inventory(), client.clone(), catalog, PollerConfig::default());
        poller.refresh().await;
        poller.handle().snapshot().agents().to_vec()
    }

    #[tokio::test]
    async fn checks_a_tokened_fleet_in_agent_then_check_order() {
        let options = DemoOptions {
            token: Some("s3cret".into()),
            faults: FaultSpec::parse("error-spike:auth-filter@2.1.0=30/agent:edge-2").unwrap(),
            install_delay: Some(Duration::from_millis(1)),
            transition_delay: Some(Duration::from_secs(60)),
            ..DemoOptions::default()
        };
        let fleet = DemoFleet::start_members(demo_members().unwrap()[..4].to_vec(), options).await.unwrap();
        let client = AgentClient::new(Duration::from_secs(2), Some("s3cret".into())).unwrap();
        let anonymous = AgentClient::new(Duration::from_secs(2), None).unwrap();
        let mut agents = views(&fleet, &client).await;
        assert_eq!(agents.len(), 4);

        // edge-2 spikes, edge-3 drains, edge-4's model is stale, edge-1 is fine.
        client.install(&agents[1].endpoint, "auth-filter", "2.1.0").await.unwrap();
        agents[1].extensions.insert("auth-filter".into(), "2.1.0".into());
        client.action(&agents[2].endpoint, AgentAction::Drain).await.unwrap();
        agents[3].extensions.insert("geo-router".into(), "3.3.0".into());

        let checks = [Check::Security, Check::Connectivity, Check::Functionality, Check::Performance, Check::Resources];
        let results = run_checks(&client, &anonymous, &agents, &checks, &HealthThresholds::default()).await;
        assert_eq!(results.len(), 20);
        let order: Vec<(&str, Check)> = results.iter().map(|r| (r.agent.as_str(), r.check)).collect();
        let mut expected = Vec::new();
        for a in ["edge-1", "edge-2", "edge-3", "edge-4"] {
            for c in checks {
                expected.push((a, c));
            }
        }
        assert_eq!(order, expected);

        let r = |agent: &str, check: Check| results.iter().find(|r| r.agent == agent && r.check == check).unwrap();
        for a in ["edge-1", "edge-2", "edge-3", "edge-4"] {
            let sec = r(a, Check::Security);
            assert!(sec.passed, "{sec:?}");
            assert_eq!(sec.detail, "refuses requests without a token (401)");
            let conn = r(a, Check::Connectivity);
            assert!(conn.passed && conn.detail.starts_with("answered in ") && conn.detail.ends_with(" ms"), "{conn:?}");
            assert!(r(a, Check::Resources).passed, "{:?}", r(a, Check::Resources));
        }
        let f1 = r("edge-1", Check::Functionality);
        assert!(f1.passed, "{f1:?}");
        assert!(f1.detail.starts_with("serving, 3 extension(s) as expected, error rate "), "{f1:?}");
        assert!(r("edge-1", Check::Performance).passed);

        let f2 = r("edge-2", Check::Functionality);
        assert!(!f2.passed);
        assert!(f2.detail.starts_with("error rate ") && f2.detail.ends_with("% over 1%"), "{f2:?}");
        let p2 = r("edge-2", Check::Performance);
        assert!(!p2.passed && p2.detail.ends_with("(over 500 ms)"), "{p2:?}");

        let f3 = r("edge-3", Check::Functionality);
        assert_eq!((f3.passed, f3.detail.as_str()), (false, "not serving (draining)"));
        let f4 = r("edge-4", Check::Functionality);
        assert_eq!((f4.passed, f4.detail.as_str()), (false, "geo-router 3.3.0 is missing"));
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn an_open_agent_fails_security_and_a_dead_one_fails_connectivity() {
        let fleet =
            DemoFleet::start_members(demo_members().unwrap()[..1].to_vec(), DemoOptions::default()).await.unwrap();
        let client = AgentClient::new(Duration::from_millis(500), None).unwrap();
        let mut agents = views(&fleet, &client).await;
        let mut dead = agents[0].clone();
        dead.name = "edge-99".into();
        dead.endpoint = "http://127.0.0.1:1".into();
        agents.push(dead);

        // Empty: every check, in Check::ALL order; duplicates collapse.
        let all = run_checks(&client, &client, &agents, &[], &HealthThresholds::default()).await;
        assert_eq!(all.len(), 10);
        assert_eq!(all[..5].iter().map(|r| r.check).collect::<Vec<_>>(), Check::ALL);
        let twice = run_checks(
            &client,
            &client,
            &agents[..1],
            &[Check::Security, Check::Security],
            &HealthThresholds::default(),
        )
        .await;
        assert_eq!(twice.len(), 1);
        assert_eq!(
            (twice[0].passed, twice[0].detail.as_str()),
            (false, "accepts requests without a token: anyone who can reach it can change it")
        );

        let d: Vec<&CheckResult> = all.iter().filter(|r| r.agent == "edge-99").collect();
        assert!(d.iter().all(|r| !r.passed));
        assert!(d[0].detail.starts_with("http://127.0.0.1:1 is unreachable: "), "{:?}", d[0]);
        assert!(d[1].detail.starts_with("no status to judge: http://127.0.0.1:1 is unreachable"), "{:?}", d[1]);
        assert!(d[3].detail.starts_with("could not tell: "), "{:?}", d[3]);

        // A tight threshold fails performance and resources with the numbers.
        let tight = HealthThresholds { error_rate_pct: 1.0, p95_ms: 1.0, cpu_pct: 1.0, mem_pct: 100.0 };
        let r = run_checks(&client, &client, &agents[..1], &[Check::Performance, Check::Resources], &tight).await;
        assert!(!r[0].passed && r[0].detail.ends_with("(over 1 ms)"), "{:?}", r[0]);
        assert!(!r[1].passed && r[1].detail.contains("% (over 1%), memory ") && r[1].detail.ends_with("(within 100%)"));
        fleet.shutdown().await;
    }
}
