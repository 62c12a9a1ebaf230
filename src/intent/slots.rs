//! Assigns recognised entities to an intent's slots and turns them into the
//! contract's JSON values. Slots with marker words go first so that "to us-east"
//! is taken by `to` before `from` takes the first region left over.

use serde_json::{json, Map, Value};

use super::grammar::{Intent, Slot, SlotKind};
use super::vocab::{Entity, Kind, Vocabulary};
use crate::ops::Check;

/// Filled slots and the slots the utterance referred to by pronoun.
pub struct Filled {
    pub values: Map<String, Value>,
    pub references: Vec<String>,
}

pub fn fill(intent: &Intent, entities: &[Entity], vocab: &Vocabulary) -> Filled {
    let mut claimed = vec![false; entities.len()];
    let mut values = Map::new();
    let mut references = Vec::new();
    let mut order: Vec<&Slot> = intent.slots.iter().collect();
    // Stable: marker slots first, then declaration order.
    order.sort_by_key(|s| s.markers.is_empty());
    for slot in order {
        match read_slot(slot, entities, &mut claimed, vocab) {
            Read::Value(v) => {
                values.insert(slot.name.clone(), v);
            }
            Read::Reference => references.push(slot.name.clone()),
            Read::Nothing => {}
        }
    }
    // "in phases staging then production" names the agents itself: they come from the
    // whole fleet unless a scope narrows them.
    let phased = values.get("strategy").is_some_and(|s| s.get("phases").is_some());
    if phased
        && intent.slot("scope").is_some()
        && !values.contains_key("scope")
        && !references.iter().any(|r| r == "scope")
    {
        values.insert("scope".into(), json!(["fleet"]));
    }
    // Versions are resolved once the extension is known, wherever it was said.
    let extension = values.get("extension").and_then(|e| e.as_str().map(str::to_string));
    if let Some(Value::String(v)) = values.get_mut("version") {
        *v = vocab.resolve_version(extension.as_deref(), v);
    }
    if let Some(p) = &intent.pronoun {
        let filled = values.contains_key(p) || references.contains(p);
        if !filled && entities.iter().any(|e| e.kind == Kind::Ref) {
            references.push(p.clone());
        }
    }
    for slot in &intent.slots {
        if let Some(d) = &slot.default {
            if !values.contains_key(&slot.name) && !references.contains(&slot.name) {
                values.insert(slot.name.clone(), d.clone());
            }
        }
    }
    Filled { values, references }
}

/// The slots an utterance fills with values it says, in the intent's order: no
/// defaults, no references (what a follow-up changes).
pub fn fill_said(intent: &Intent, entities: &[Entity], vocab: &Vocabulary) -> Vec<(String, Value)> {
    let mut claimed = vec![false; entities.len()];
    let mut order: Vec<&Slot> = intent.slots.iter().collect();
    order.sort_by_key(|s| s.markers.is_empty());
    let mut out = Vec::new();
    for slot in order {
        if let Read::Value(v) = read_slot(slot, entities, &mut claimed, vocab) {
            out.push((slot.name.clone(), v));
        }
    }
    out
}

pub enum Read {
    Value(Value),
    Reference,
    Nothing,
}

/// The entity kinds a scalar slot takes, best first.
fn accepts(kind: SlotKind) -> &'static [Kind] {
    match kind {
        SlotKind::Region => &[Kind::Region, Kind::Name],
        SlotKind::Agent => &[Kind::Agent, Kind::Name],
        SlotKind::Extension => &[Kind::Extension, Kind::Name],
        SlotKind::Version => &[Kind::Version],
        SlotKind::Deployment => &[Kind::Deployment],
        SlotKind::Status => &[Kind::Status],
        SlotKind::Time => &[Kind::Time],
        SlotKind::Interval => &[Kind::Interval],
        SlotKind::Percent => &[Kind::Percent],
        SlotKind::Count => &[Kind::Failures],
        SlotKind::Flag => &[Kind::Queue],
        SlotKind::Approval => &[Kind::Approval],
        _ => &[],
    }
}

fn take(
    entities: &[Entity],
    claimed: &mut [bool],
    kinds: &[Kind],
    markers: &[String],
    refs_ok: bool,
) -> Option<Option<String>> {
    let fits = |e: &Entity| markers.is_empty() || e.marker.as_ref().is_some_and(|m| markers.contains(m));
    // A value beats a reference: "the deployment d-3" means d-3.
    for want_value in [true, false] {
        if !want_value && !refs_ok {
            break;
        }
        for kind in kinds {
            let found = entities
                .iter()
                .enumerate()
                .find(|(i, e)| !claimed[*i] && e.kind == *kind && e.value.is_some() == want_value && fits(e));
            if let Some((i, e)) = found {
                claimed[i] = true;
                return Some(e.value.clone());
            }
        }
    }
    None
}

pub fn read_slot(slot: &Slot, entities: &[Entity], claimed: &mut [bool], vocab: &Vocabulary) -> Read {
    match slot.kind {
        SlotKind::Scope => scope(entities, claimed, vocab),
        SlotKind::Checks => {
            let mut checks: Vec<Check> = Vec::new();
            for (i, e) in entities.iter().enumerate() {
                if !claimed[i] && e.kind == Kind::Check {
                    if let Some(c) = Check::ALL.iter().find(|c| Some(c.as_str()) == e.value.as_deref()) {
                        claimed[i] = true;
                        checks.push(*c);
                    }
                }
            }
            checks.sort();
            checks.dedup();
            if checks.is_empty() {
                Read::Nothing
            } else {
                Read::Value(json!(checks))
            }
        }
        SlotKind::Strategy => strategy(entities, claimed),
        SlotKind::Gate => {
            let mut gates = Vec::new();
            for (i, e) in entities.iter().enumerate() {
                if claimed[i] || e.kind != Kind::Gate {
                    continue;
                }
                let Some(v) = &e.value else { continue };
                let mut parts = v.splitn(3, ':');
                let (Some(metric), Some(n), unit) = (parts.next(), parts.next(), parts.next()) else { continue };
                let Ok(threshold) = n.parse::<u32>() else { continue };
                claimed[i] = true;
                let mut g = json!({ "metric": metric, "threshold": threshold });
                if let Some(u) = unit.filter(|u| !u.is_empty()) {
                    g["unit"] = json!(u);
                }
                gates.push(g);
            }
            if gates.is_empty() {
                Read::Nothing
            } else {
                Read::Value(Value::Array(gates))
            }
        }
        SlotKind::ExtensionRef => {
            let Some(Some(name)) = take(entities, claimed, &[Kind::Extension, Kind::Name], &slot.markers, false) else {
                return Read::Nothing;
            };
            let mut obj = Map::new();
            if let Some(Some(v)) = take(entities, claimed, &[Kind::Version], &[], false) {
                obj.insert("version".into(), json!(vocab.resolve_version(Some(&name), &v)));
            }
            obj.insert("name".into(), json!(name));
            Read::Value(Value::Object(obj))
        }
        kind => match take(entities, claimed, accepts(kind), &slot.markers, kind == SlotKind::Deployment) {
            None => Read::Nothing,
            Some(None) => Read::Reference,
            Some(Some(v)) => match kind {
                SlotKind::Flag => Read::Value(json!(true)),
                SlotKind::Approval => Read::Value(json!(v == "true")),
                SlotKind::Interval | SlotKind::Percent | SlotKind::Count => match v.parse::<u64>() {
                    Ok(n) => Read::Value(json!(n)),
                    Err(_) => Read::Nothing,
                },
                _ => Read::Value(json!(v)),
            },
        },
    }
}

fn scope(entities: &[Entity], claimed: &mut [bool], vocab: &Vocabulary) -> Read {
    let mut sels: Vec<(u8, String)> = Vec::new();
    for (i, e) in entities.iter().enumerate() {
        if claimed[i] {
            continue;
        }
        let Some(value) = &e.value else { continue };
        let kind = if e.kind == Kind::Name { vocab.guess_kind(value) } else { e.kind };
        let Some(rank) = kind.selector_rank() else { continue };
        claimed[i] = true;
        let sel = if kind == Kind::Fleet { "fleet".to_string() } else { format!("{}:{value}", kind.as_str()) };
        sels.push((rank, sel));
    }
    if sels.len() > 1 {
        sels.retain(|(_, s)| s != "fleet");
    }
    sels.sort();
    sels.dedup();
    if sels.is_empty() {
        return Read::Nothing;
    }
    Read::Value(json!(sels.into_iter().map(|(_, s)| s).collect::<Vec<_>>()))
}

fn strategy(entities: &[Entity], claimed: &mut [bool]) -> Read {
    let kind = take(entities, claimed, &[Kind::Strategy], &[], false).flatten();
    let batch = take(entities, claimed, &[Kind::Batch], &[], false).flatten();
    let unavailable = take(entities, claimed, &[Kind::Unavailable], &[], false).flatten();
    let group_by = take(entities, claimed, &[Kind::GroupBy], &[], false).flatten();
    let phases: Option<Vec<String>> = take(entities, claimed, &[Kind::Phases], &[], false)
        .flatten()
        .map(|p| p.split(',').map(str::to_string).collect());
    let kind = match kind {
        Some(k) => k,
        // Phases by group are a progressive rollout in all but name, batches and a
        // limit on unavailable agents a rolling one.
        None if group_by.is_some() || phases.is_some() => "progressive".to_string(),
        None if batch.is_some() || unavailable.is_some() => "rolling".to_string(),
        None => {
            // "10% then 50%" alone is a canary in all but name.
            if entities.iter().enumerate().any(|(i, e)| !claimed[i] && e.kind == Kind::Percent) {
                "canary".to_string()
            } else {
                return Read::Nothing;
            }
        }
    };
    let mut obj = Map::new();
    obj.insert("kind".into(), json!(kind));
    if kind == "canary" || kind == "progressive" {
        let mut steps: Vec<u64> = Vec::new();
        for (i, e) in entities.iter().enumerate() {
            if !claimed[i] && e.kind == Kind::Percent {
                if let Some(n) = e.value.as_deref().and_then(|v| v.parse::<u64>().ok()) {
                    claimed[i] = true;
                    steps.push(n);
                }
            }
        }
        if !steps.is_empty() {
            obj.insert("steps".into(), json!(steps));
        }
    }
    if kind == "rolling" {
        match batch.as_deref().map(|b| (b.strip_suffix('%'), b)) {
            Some((Some(p), _)) => {
                if let Ok(p) = p.parse::<u8>() {
                    obj.insert("batch_percent".into(), json!(p));
                }
            }
            Some((None, b)) => {
                if let Ok(b) = b.parse::<u32>() {
                    obj.insert("batch_size".into(), json!(b));
                }
            }
            None => {}
        }
    }
    // Said with another strategy, a limit or phases still go in, and the plan says
    // why they do not fit rather than dropping them silently.
    if let Some(u) = unavailable {
        // The contract's form: a count is a number, a share a "20%" string.
        let value = u.parse::<u64>().map(|n| json!(n)).unwrap_or_else(|_| json!(u));
        obj.insert("max_unavailable".into(), value);
    }
    if let Some(g) = group_by {
        obj.insert("group_by".into(), json!(g));
    }
    if let Some(p) = phases {
        obj.insert("phases".into(), json!(p));
    }
    Read::Value(Value::Object(obj))
}
