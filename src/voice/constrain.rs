//! Grammar-constrained decoding, on Parley's side of whisper.cpp: given the tokens
//! decoded so far, which tokens may come next so that the transcript stays on its
//! way to a sentence of the spoken grammar, and whether it may end here.
//!
//! whisper.cpp has its own grammar sampler, but whisper-rs 0.16's `set_grammar`
//! hands it the rules in the wrong shape (one flat array where whisper.cpp wants a
//! pointer per rule) and it crashes; its logits-filter callback is sound, so the
//! constraint lives here and the callback in `transcribe` only applies it.
//!
//! The model's vocabulary is kept as a byte trie, so one decoding step walks the
//! grammar's automaton once per distinct token prefix rather than once per token,
//! and most of the 51,864 tokens are ruled out by their first byte.

use super::grammar::{Dfa, Matcher};

/// Whisper's text tokens, lowercased, in a trie.
pub struct TokenTrie {
    nodes: Vec<Node>,
    /// Token id -> its lowercased text, for the ids below `end_of_text`.
    texts: Vec<Option<Box<[u8]>>>,
    end_of_text: i32,
}

#[derive(Default)]
struct Node {
    children: Vec<(u8, u32)>,
    tokens: Vec<i32>,
}

impl TokenTrie {
    /// `tokens` yields (id, bytes) for the text tokens; ids at or above
    /// `end_of_text` are special and never offered. Tokens that are not printable
    /// ASCII cannot be part of a command and are left out.
    pub fn new<'b>(end_of_text: i32, tokens: impl IntoIterator<Item = (i32, &'b [u8])>) -> TokenTrie {
        let mut trie = TokenTrie {
            nodes: vec![Node::default()],
            texts: vec![None; usize::try_from(end_of_text.max(0)).unwrap_or(0)],
            end_of_text,
        };
        for (id, bytes) in tokens {
            if id < 0 || id >= end_of_text || bytes.is_empty() || !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
                continue;
            }
            let lower: Box<[u8]> = bytes.iter().map(u8::to_ascii_lowercase).collect();
            let mut at = 0usize;
            for &b in lower.iter() {
                let found = trie.nodes[at].children.iter().find(|(c, _)| *c == b).map(|(_, n)| *n as usize);
                at = match found {
                    Some(n) => n,
                    None => {
                        trie.nodes.push(Node::default());
                        let n = trie.nodes.len() - 1;
                        trie.nodes[at].children.push((b, n as u32));
                        n
                    }
                };
            }
            trie.nodes[at].tokens.push(id);
            if let Some(slot) = trie.texts.get_mut(id as usize) {
                *slot = Some(lower);
            }
        }
        trie
    }

    pub fn end_of_text(&self) -> i32 {
        self.end_of_text
    }

    fn text(&self, id: i32) -> Option<&[u8]> {
        self.texts.get(usize::try_from(id).ok()?)?.as_deref()
    }
}

/// What may follow the tokens decoded so far.
#[derive(Debug, PartialEq)]
pub struct Allowed {
    /// Text tokens that keep the transcript inside the grammar, sorted.
    pub tokens: Vec<i32>,
    /// The transcript is a whole sentence: end-of-text may come now.
    pub end: bool,
}

/// The constraint for one transcription (it caches automaton states as it goes).
pub struct Constraint<'a> {
    dfa: Dfa<'a>,
    trie: &'a TokenTrie,
}

impl<'a> Constraint<'a> {
    pub fn new(matcher: &'a Matcher, trie: &'a TokenTrie) -> Constraint<'a> {
        Constraint { dfa: Dfa::new(matcher), trie }
    }

    /// None when the decoded tokens have already left the grammar (a token the
    /// constraint never offered): the caller then lets Whisper decode freely.
    pub fn allowed(&mut self, decoded: &[i32]) -> Option<Allowed> {
        if self.dfa.is_full() {
            self.dfa = Dfa::new(self.dfa_matcher());
        }
        let mut state = self.dfa.start();
        let mut at_start = true;
        for &id in decoded {
            if id >= self.trie.end_of_text {
                continue;
            }
            for &b in self.trie.text(id)? {
                if at_start && b == b' ' {
                    continue;
                }
                at_start = false;
                state = self.dfa.step(state, b)?;
            }
        }
        let mut tokens = Vec::new();
        // Depth-first through the trie, carrying the automaton state and whether
        // leading spaces are still being skipped (only before the first word).
        let mut stack: Vec<(usize, u32, bool, bool)> = vec![(0, state, at_start, false)];
        while let Some((node, st, skipping, consumed)) = stack.pop() {
            if consumed {
                tokens.extend_from_slice(&self.trie.nodes[node].tokens);
            }
            for &(b, child) in &self.trie.nodes[node].children {
                if skipping && b == b' ' {
                    stack.push((child as usize, st, true, consumed));
                } else if let Some(next) = self.dfa.step(st, b) {
                    stack.push((child as usize, next, false, true));
                }
            }
        }
        tokens.sort_unstable();
        Some(Allowed { tokens, end: !at_start && self.dfa.is_accepting(state) })
    }

    fn dfa_matcher(&self) -> &'a Matcher {
        self.dfa.matcher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::grammar::{Slots, SpokenGrammar};

    fn matcher() -> Matcher {
        let g =
            SpokenGrammar::parse("command = (\"drain\" | \"deploy\") <agent> | \"yes\" [\"please\"]", "test").unwrap();
        let mut slots = Slots::new();
        slots.add_name("agent", "edge-7");
        slots.add_name("agent", "edge-12");
        Matcher::compile(&g, &slots).unwrap()
    }

    const VOCAB: &[&str] = &[
        " drain", " Drain", "drain", " brain", " edge", "-", "7", " 7", " 1", "2", " seven", " yes", ".", " please",
        " de", "ploy", " d",
    ];

    fn trie() -> TokenTrie {
        TokenTrie::new(100, VOCAB.iter().enumerate().map(|(i, t)| (i as i32, t.as_bytes())))
    }

    fn ids(words: &[&str]) -> Vec<i32> {
        let mut v: Vec<i32> = words.iter().map(|w| VOCAB.iter().position(|t| t == w).unwrap() as i32).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn only_tokens_that_stay_in_the_grammar_are_offered() {
        let (m, t) = (matcher(), trie());
        let mut c = Constraint::new(&m, &t);
        let first = c.allowed(&[]).unwrap();
        assert_eq!(first.tokens, ids(&[" drain", " Drain", "drain", " yes", " de", " d"]));
        assert!(!first.end);

        let after_drain = c.allowed(&ids(&[" drain"])).unwrap();
        // Between words Whisper may also write a hyphen or a full stop ("Drain. Edge 7.").
        assert_eq!(after_drain.tokens, ids(&[" edge", "-", "."]));

        let edge = ids(&[" drain"]).into_iter().chain(ids(&[" edge"])).collect::<Vec<_>>();
        let after_edge = c.allowed(&edge).unwrap();
        assert_eq!(after_edge.tokens, ids(&["-", " 7", " 1", " seven", "."]));

        let mut one = edge.clone();
        one.extend(ids(&[" 1"]));
        let after_one = c.allowed(&one).unwrap();
        assert_eq!(after_one.tokens, ids(&["2"]), "edge 1 only goes on to edge 12");
        assert!(!after_one.end, "there is no edge-1");

        let mut seven = edge;
        seven.extend(ids(&[" 7"]));
        let done = c.allowed(&seven).unwrap();
        assert!(done.end);
        assert_eq!(done.tokens, ids(&["."]));
    }

    #[test]
    fn a_transcript_that_left_the_grammar_is_reported() {
        let (m, t) = (matcher(), trie());
        let mut c = Constraint::new(&m, &t);
        assert_eq!(c.allowed(&ids(&[" brain"])), None);
    }
}
