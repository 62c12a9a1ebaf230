//! Tolerant reading of a transcript: words Whisper misheard are mapped onto the
//! words Parley's grammar and the live fleet use ("brain no edge-7" -> "drain node
//! edge-7"), by edit distance and a simple phonetic key, and the initial prompt
//! that biases Whisper towards those words is built here too.
//!
//! Only words that are not already known are touched, and only towards a known
//! word that is close both in spelling and in sound, so ordinary English passes
//! through for the intent parser to judge.

use crate::intent::Vocabulary;

/// Command words of the built-in grammar that speech recognisers get wrong.
const COMMAND_WORDS: &[&str] = &[
    "drain",
    "node",
    "cordon",
    "uncordon",
    "roll",
    "rollout",
    "out",
    "back",
    "promote",
    "pause",
    "resume",
    "abort",
    "fail",
    "over",
    "failover",
    "healthy",
    "health",
    "status",
    "show",
    "list",
    "agents",
    "agent",
    "which",
    "have",
    "gpu",
    "canary",
    "percent",
    "then",
    "deploy",
    "deployment",
    "deployments",
    "install",
    "upgrade",
    "restart",
    "watch",
    "stop",
    "yes",
    "no",
    "cancel",
    "confirm",
    "region",
    "zone",
    "staging",
    "production",
    "edge",
    "core",
    "version",
    "extension",
    "extensions",
    "traffic",
    "shift",
    "how",
    "is",
    "the",
    "to",
    "in",
    "from",
    "of",
    "it",
    "that",
    "with",
    "all",
    "what",
    "running",
];

/// What Whisper reads before listening (`prompts/voice.txt`): the operation
/// verbs, then `{names}` from the live fleet.
const PROMPT: &str = include_str!("../../prompts/voice.txt");

/// The operator's world in a sentence Whisper reads before listening: names it
/// would otherwise spell as ordinary words ("you ask east").
pub fn initial_prompt(vocab: &Vocabulary) -> String {
    let mut names: Vec<&str> = vocab.regions().iter().map(String::as_str).collect();
    names.extend(vocab.extensions().iter().map(String::as_str));
    // Agent names follow patterns; a few examples teach the pattern without
    // spending the prompt's 224 tokens on all of them.
    let mut prefixes: Vec<&str> = Vec::new();
    for a in vocab.agents() {
        if let Some((p, _)) = a.rsplit_once('-') {
            if !prefixes.contains(&p) {
                prefixes.push(p);
                names.push(a);
            }
        }
    }
    PROMPT.trim().replace("{names}", &names.join(", "))
}

/// A crude phonetic key: voiced/unvoiced pairs and similar-sounding letters merged,
/// vowels after the first letter dropped ("brain" and "drain" share "BRN"/"TRN" ... the
/// first letter is folded too, so both become "TRN").
pub fn phonetic_key(word: &str) -> String {
    let mut key = String::new();
    let mut last = ' ';
    for (i, c) in word.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase()).enumerate() {
        let k = match c {
            'b' | 'p' | 'd' | 't' => 'T',
            'g' | 'k' | 'c' | 'q' => 'K',
            'f' | 'v' => 'F',
            's' | 'z' | 'x' => 'S',
            'm' | 'n' => 'N',
            'l' | 'r' => 'R',
            'j' => 'J',
            'a' | 'e' | 'i' | 'o' | 'u' | 'y' | 'h' | 'w' => {
                if i == 0 {
                    'A'
                } else {
                    last = ' ';
                    continue;
                }
            }
            _ => continue,
        };
        if k != last {
            key.push(k);
        }
        last = k;
    }
    key
}

/// Resolves a transcript against the grammar's and the fleet's words.
pub struct Resolver {
    known: Vec<String>,
}

impl Resolver {
    pub fn new(vocab: &Vocabulary) -> Resolver {
        let mut known: Vec<String> = COMMAND_WORDS.iter().map(|w| w.to_string()).collect();
        for w in vocab.words() {
            // Names are matched per hyphen/space part, as the tokenizer splits them.
            known.extend(
                w.split(['-', ' ', '.'])
                    .filter(|p| p.len() > 1 && !p.bytes().all(|b| b.is_ascii_digit()))
                    .map(str::to_string),
            );
        }
        known.sort();
        known.dedup();
        Resolver { known }
    }

    /// The transcript with misheard words replaced; punctuation Whisper adds is
    /// dropped, "U.S." becomes "us".
    pub fn resolve(&self, transcript: &str) -> String {
        words(transcript).iter().map(|w| self.resolve_word(w)).collect::<Vec<_>>().join(" ")
    }
}

/// A grammar-constrained transcript as the parser's words: lowercase, punctuation
/// dropped, names split at hyphens, number words as digits, versions and
/// percentages kept ("2.1.0", "10 %"), through the one normaliser of typed and
/// spoken input ([`crate::intent::canonical`]), so that Whisper's
/// "Restart-edge-five." and a typed "restart edge 5" are the same words.
///
/// Under the grammar the words are the grammar's and are separated by a space or a
/// hyphen, so capitals mark no word: the constraint is case-blind and Whisper may
/// spell a word with any token, "US-EaSt" as readily as "US-East". Lowercased first,
/// it is not split like a typed "AuthFilter" would be.
pub fn normalise(transcript: &str) -> String {
    crate::intent::canonical(&transcript.to_ascii_lowercase())
}

/// Free text (the second pass, or `--free`) as words: capitals inside a word do
/// start a new one there ("AuthFilter").
fn words(transcript: &str) -> Vec<String> {
    crate::intent::canonical(transcript).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect()
}

impl Resolver {
    fn resolve_word(&self, word: &str) -> String {
        if word.len() < 3 || !word.chars().all(|c| c.is_ascii_alphabetic()) || self.known.iter().any(|k| k == word) {
            return word.to_string();
        }
        let key = phonetic_key(word);
        let best = self
            .known
            .iter()
            .filter(|k| k.len() >= 3)
            .map(|k| (strsim::levenshtein(word, k), k))
            .filter(|(d, k)| *d <= 1 || (*d <= 2 && phonetic_key(k) == key && k.len() >= 5))
            .min_by_key(|(d, _)| *d);
        match best {
            Some((_, k)) if phonetic_key(k) == key || strsim::levenshtein(word, k) == 1 && word.len() >= 4 => k.clone(),
            _ => word.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        Resolver {
            known: COMMAND_WORDS
                .iter()
                .map(|w| w.to_string())
                .chain(["east", "west", "us", "eu"].map(String::from))
                .collect(),
        }
    }

    #[test]
    fn misheard_command_words_are_mapped_back() {
        let r = resolver();
        assert_eq!(r.resolve("Brain no edge-7."), "drain no edge 7");
        assert_eq!(r.resolve("U.S. East"), "us east");
        assert_eq!(r.resolve("cordon core-3"), "cordon core 3");
        assert_eq!(r.resolve("roll out auth-filter 2.1.0"), "roll out auth filter 2.1.0");
        assert_eq!(r.resolve("deploy AuthFilter"), "deploy auth filter");
        // Ordinary words far from any command word are left for the parser to judge.
        assert_eq!(r.resolve("banana"), "banana");
    }

    #[test]
    fn constrained_transcripts_take_no_word_boundary_from_capitals() {
        // As Whisper wrote it under the grammar: "east" spelled with the tokens
        // "Ea" and "St".
        assert_eq!(normalise("How is US-EaSt doing?"), "how is us east doing");
        assert_eq!(normalise("Restart-edge-five."), "restart edge 5");
        assert_eq!(normalise("Deploy auth-filter two point one to EU-West."), "deploy auth filter 2.1 to eu west");
    }

    #[test]
    fn phonetic_keys_merge_similar_sounds() {
        assert_eq!(phonetic_key("brain"), phonetic_key("drain"));
        assert_ne!(phonetic_key("drain"), phonetic_key("cordon"));
    }
}
