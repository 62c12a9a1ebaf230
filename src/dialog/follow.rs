//! Which follow-ups a reply may offer: nothing this speaker would be refused, and
//! from a question that changes nothing, no change that needs a yes/no.

use crate::ops::Effect;
use crate::orchestrate::lifecycle::Control;
use crate::reply::Reply;

impl super::Session {
    /// Follow-ups never offer what this speaker would be refused, and the answer to a
    /// question that changes nothing never suggests a change that needs a yes/no
    /// (production, a large share of a region, traffic): a suggestion must not push
    /// risk. The lifecycle's controls of a deployment are its own, safest first.
    pub(super) async fn vet_follow_ups(&mut self, reply: &mut Reply) {
        if reply.follow_ups.is_empty() {
            return;
        }
        let read_only = reply.operation.as_ref().is_some_and(|op| op.effect() == Effect::Read);
        let vocab = self.vocabulary();
        let topo = self.services.topology.snapshot();
        let mut kept = Vec::with_capacity(reply.follow_ups.len());
        for f in std::mem::take(&mut reply.follow_ups) {
            let parse = self.services.grammar.parse(&f, &vocab);
            let keep = match parse.operation {
                Some(op) if op.mutates() => {
                    if self.refusal(&op).await.is_some() {
                        false
                    } else if read_only && Control::of(&op).is_none() {
                        match super::execute::check_live(&self.services, &op, &topo).await {
                            Ok(feasible) => super::execute::risk(&self.services, &op, &feasible, &topo).await.is_none(),
                            Err(_) => false,
                        }
                    } else {
                        true
                    }
                }
                _ => true,
            };
            if keep {
                kept.push(f);
            }
        }
        reply.follow_ups = kept;
    }
}
