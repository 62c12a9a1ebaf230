//! The verdict of a feasibility check, and the lookups every family's check shares.
//!
//! Each family of operations checks its own (`dialog::<family>::check`, dispatched
//! by [`crate::dialog::check`]); they all answer with a [`Feasible`] or an
//! [`Infeasible`] verdict from here and look names up through the same functions,
//! so an unknown agent, region or extension reads the same whichever operation
//! named it. An infeasible answer always carries the reasons and, where there are
//! any, feasible alternatives phrased as utterances the operator can send as they are.

use std::collections::HashMap;

use serde::Serialize;

use crate::intent::suggest;
use crate::ops::{Scope, Selector};
use crate::topology::{AgentName, AgentView, Topology};

/// What the check established, for the executor and the confirmation question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feasible {
    /// Agents the operation will change (deploy: those not already on the version).
    /// Shared names, not copies: a fleet-wide verdict on 10,000 agents would otherwise
    /// spend most of its time copying strings. They serialise as plain strings.
    pub targets: Vec<AgentName>,
    /// Agents in scope that already run the requested version (deploy only).
    pub already: Vec<AgentName>,
    /// Why the operation needs a yes/no first; `None` when it does not.
    pub risk: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Infeasible {
    pub reasons: Vec<String>,
    /// Utterances that would work instead.
    pub alternatives: Vec<String>,
    /// A rollout refused only because its agents belong to an unfinished deployment:
    /// "queue it" (offered among the alternatives) runs it behind that one.
    #[serde(skip)]
    pub queueable: bool,
}

impl Infeasible {
    pub fn new(reason: impl Into<String>) -> Infeasible {
        Infeasible { reasons: vec![reason.into()], alternatives: Vec::new(), queueable: false }
    }

    pub fn or(mut self, alternative: impl Into<String>) -> Infeasible {
        self.alternatives.push(alternative.into());
        self
    }
}

/// An agent with its index in `Topology::agents`, for the snapshot's per-agent columns.
pub type Indexed<'a> = (usize, &'a AgentView);

/// Agent name -> id of the active deployment that holds it.
pub type Busy = HashMap<String, String>;

/// A verdict with nothing more to say: these targets, no risk.
pub fn plain(targets: Vec<AgentName>) -> Feasible {
    Feasible { targets, already: Vec::new(), risk: None }
}

fn did_you_mean(said: &str, candidates: Vec<&str>) -> String {
    let near = suggest(said, candidates);
    if near.is_empty() {
        String::new()
    } else {
        format!(" Did you mean {}?", near.join(" or "))
    }
}

pub fn known_agent<'a>(name: &str, topo: &'a Topology) -> Result<&'a AgentView, Infeasible> {
    topo.agent(name).ok_or_else(|| {
        let candidates: Vec<&str> = topo.agents().iter().map(|a| a.name.as_str()).collect();
        let near = suggest(name, candidates.iter().copied());
        let mut inf =
            Infeasible::new(format!("There is no agent `{name}` in the fleet.{}", did_you_mean(name, candidates)));
        for n in near {
            inf = inf.or(format!("show agent {n}"));
        }
        inf
    })
}

pub fn known_region(name: &str, topo: &Topology) -> Result<(), Infeasible> {
    if topo.regions().iter().any(|r| r == name) {
        return Ok(());
    }
    let candidates: Vec<&str> = topo.regions().iter().map(String::as_str).collect();
    Err(Infeasible::new(format!(
        "There is no region `{name}`; the fleet has {}.{}",
        candidates.join(", "),
        did_you_mean(name, candidates.clone())
    )))
}

pub fn known_extension(name: &str, topo: &Topology) -> Result<(), Infeasible> {
    if topo.catalog().get(name).is_some() {
        return Ok(());
    }
    let candidates: Vec<&str> = topo.catalog().extensions().iter().map(|e| e.name.as_str()).collect();
    Err(Infeasible::new(format!(
        "The catalog has no extension `{name}`; it has {}.{}",
        candidates.join(", "),
        did_you_mean(name, candidates.clone())
    )))
}

/// Every name in `scope` is one the fleet has.
pub fn check_scope_names(scope: &Scope, topo: &Topology) -> Result<(), Infeasible> {
    for sel in scope.selectors() {
        match sel {
            Selector::Region(r) => known_region(r, topo)?,
            Selector::Agent(a) => {
                known_agent(a, topo)?;
            }
            Selector::Zone(z) => {
                if !topo.zones().iter().any(|x| x == z) {
                    let candidates: Vec<&str> = topo.zones().iter().map(String::as_str).collect();
                    return Err(Infeasible::new(format!("There is no zone `{z}`.{}", did_you_mean(z, candidates))));
                }
            }
            Selector::Env(e) => {
                let values = topo.label_values("env");
                if !values.iter().any(|v| v == e) {
                    return Err(Infeasible::new(format!(
                        "No agent has env `{e}`; the fleet has {}.",
                        values.join(", ")
                    )));
                }
            }
            Selector::Tier(t) => {
                let values = topo.label_values("tier");
                if !values.iter().any(|v| v == t) {
                    return Err(Infeasible::new(format!(
                        "No agent is in tier `{t}`; the fleet has {}.",
                        values.join(", ")
                    )));
                }
            }
            Selector::Capability(c) => {
                let values = topo.capabilities();
                if !values.iter().any(|v| v == c) {
                    return Err(Infeasible::new(format!(
                        "No agent has the capability `{c}`; the fleet has {}.",
                        if values.is_empty() { "none".to_string() } else { values.join(", ") }
                    )));
                }
            }
            Selector::Fleet => {}
        }
    }
    Ok(())
}

/// Up to six agents by name, then "and N more".
pub fn names(agents: &[&AgentView]) -> String {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    crate::words::and_more(&names, 6)
}

/// A scope as words that the grammar reads back ("eu-west", "gpu agents in us-west").
pub fn scope_words(scope: &Scope) -> String {
    if scope.is_fleet() {
        return "the whole fleet".to_string();
    }
    let mut parts = Vec::new();
    for sel in scope.selectors() {
        parts.push(match sel {
            Selector::Region(v) | Selector::Zone(v) | Selector::Agent(v) => v.clone(),
            Selector::Env(v) => v.clone(),
            Selector::Capability(v) => format!("{v} agents"),
            Selector::Tier(v) => format!("{v} agents"),
            Selector::Fleet => continue,
        });
    }
    parts.join(" ")
}
