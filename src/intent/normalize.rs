//! Turns raw text into a bounded list of lowercase tokens that entity recognition
//! can match without caring how the operator typed or a transcriber spelled things:
//! punctuation and dots dropped ("E.U." -> "eu"), hyphens split ("edge-7" -> "edge 7"),
//! number words made digits ("twenty four" -> "24", "two point one" -> "2.1") and
//! "percent" made "%".

/// Longer input is cut here: no command is this long, and it bounds the work the
/// recogniser and the regexes do on hostile input.
pub const MAX_INPUT_BYTES: usize = 2048;

/// Most tokens looked at; also bounds work after splitting.
const MAX_TOKENS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    /// Which whitespace-separated chunk of the input the token came from, so that a
    /// hyphenated name nobody knows ("mars-north") can be put back together.
    pub chunk: u32,
}

/// Whether the input was cut to [`MAX_INPUT_BYTES`].
pub fn truncate(input: &str) -> (&str, bool) {
    if input.len() <= MAX_INPUT_BYTES {
        return (input, false);
    }
    let mut end = MAX_INPUT_BYTES;
    while end > 0 && !input.is_char_boundary(end) {
        end -= 1;
    }
    (&input[..end], true)
}

pub fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 4
        && (1..=2).contains(&parts[1].len())
        && (1..=2).contains(&parts[2].len())
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Dotted numbers, optionally with a leading `v`: "2.1", "v2.1.0", "2024.2".
pub fn is_dotted_version(s: &str) -> bool {
    let t = s.strip_prefix('v').unwrap_or(s);
    t.contains('.') && t.split('.').all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

pub fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Digits only, of any length: a number as said, before asking whether it is in range.
pub fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A number in a form nothing in the grammar takes, which must be refused rather
/// than read as some other number: negative ("-50"), longer than [`is_number`]
/// allows ("18446744073709551616"), in exponent notation ("1e309", "2.1e309"), or
/// written with digits other than ASCII ones ("１０", "٣").
pub fn is_bad_number(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix('-') {
        return rest.starts_with(|c: char| c.is_ascii_digit());
    }
    if is_digits(s) {
        return !is_number(s);
    }
    is_exponent(s) || s.chars().any(|c| c.is_numeric() && !c.is_ascii_digit())
}

/// Whether a token is a go at a number, readable or not: starts with a digit
/// ("2.5", "5x"), is a [bad](is_bad_number) one, or names a float nobody can count
/// to ("nan", "inf").
pub fn looks_numeric(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit()) || is_bad_number(s) || matches!(s, "nan" | "inf" | "infinity")
}

/// "1,000,000" -> "1000000": a comma between digit groups of three separates
/// thousands, and must not split the number into "1" and "000".
fn join_thousands(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let drop: Vec<usize> = (1..b.len())
        .filter(|&i| b[i] == b',' && digit(i - 1) && digit(i + 1) && digit(i + 2) && digit(i + 3) && !digit(i + 4))
        .collect();
    if drop.is_empty() {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for (i, ch) in s.char_indices() {
        // `drop` is ascending: a binary search keeps a long line of digit groups
        // linear-logarithmic rather than quadratic.
        if drop.binary_search(&i).is_err() {
            out.push(ch);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// "1e309", "2.1e-5", "3E+2": a mantissa of digits and dots, `e`, an optional sign
/// and digits.
fn is_exponent(s: &str) -> bool {
    let Some((mantissa, exp)) = s.split_once(['e', 'E']) else { return false };
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    mantissa.starts_with(|c: char| c.is_ascii_digit())
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && is_digits(exp)
}

/// Longest utterance that can be a plain answer such as a confirmation: "yes, go
/// ahead, do it now" fits; 40 KB of "yes yes ..." does not.
pub const MAX_PLAIN_BYTES: usize = 40;

/// Whether `input` is plain words and nothing else: ASCII letters, with apostrophes
/// inside words ("don't", "i'm") and `,` `.` `!` `…` after them (a transcriber's
/// "Yes."), at most
/// [`MAX_PLAIN_BYTES`]. An answer that authorises a change must be exactly what was
/// typed or heard: the tokenizer strips noise around words ("\u{fffd}k\u{fffd}" reads
/// as "k"), so that check is made on the raw text, here.
pub fn is_plain(input: &str) -> bool {
    let text = input.trim();
    if text.is_empty() || text.len() > MAX_PLAIN_BYTES {
        return false;
    }
    text.split_whitespace().all(|word| {
        let core = word.trim_end_matches([',', '.', '!', '\u{2026}']);
        !core.is_empty()
            && core.starts_with(|c: char| c.is_ascii_alphabetic())
            && core.ends_with(|c: char| c.is_ascii_alphabetic())
            && core.chars().all(|c| c.is_ascii_alphabetic() || c == '\'' || c == '\u{2019}')
    })
}

/// Splits and normalises an utterance (already truncated). Typed text and Whisper's
/// transcripts go through here alike, so that "Restart-edge-five.", "AuthFilter",
/// "EU-West" and "restart edge 5" are the same words to everything after.
pub fn tokenize(input: &str) -> Vec<Token> {
    let lower = split_camel(input).to_lowercase();
    let lower = join_thousands(&lower);
    let mut raw: Vec<Token> = Vec::new();
    let separators = |c: char| c.is_whitespace() || matches!(c, ',' | ';' | '?' | '!' | '"' | '(' | ')' | '[' | ']');
    for (chunk_no, chunk) in lower.split(separators).filter(|c| !c.is_empty()).enumerate() {
        if raw.len() >= MAX_TOKENS {
            break;
        }
        // Room for the words an apostrophe parts a chunk into (below).
        let chunk_id = u32::try_from(chunk_no).unwrap_or(u32::MAX / 64).saturating_mul(64);
        let noise = |ch: char| !ch.is_alphanumeric() && ch != '%';
        let mut c = chunk.trim_matches(noise);
        // A minus sign before a number is kept ("-50%" is not "50%"), so that the
        // scanner can refuse it instead of reading the number without its sign.
        let lead = &chunk[..chunk.len() - chunk.trim_start_matches(noise).len()];
        let negative = lead.ends_with(['-', '\u{2212}']) && c.starts_with(|ch: char| ch.is_ascii_digit());
        let first_token = raw.len();
        for suffix in ["'s", "\u{2019}s"] {
            if let Some(stripped) = c.strip_suffix(suffix) {
                c = stripped;
            }
        }
        if c.is_empty() {
            continue;
        }
        if is_date(c) || is_dotted_version(c) {
            raw.push(Token { text: c.to_string(), chunk: chunk_id });
            mark_negative(&mut raw, first_token, negative);
            continue;
        }
        // "1e-5%" is one number (and a percent sign), not "1e" and "5%".
        let core = c.trim_end_matches('%');
        if is_exponent(core) {
            raw.push(Token { text: core.to_string(), chunk: chunk_id });
            if core.len() < c.len() {
                raw.push(Token { text: "%".to_string(), chunk: chunk_id });
            }
            mark_negative(&mut raw, first_token, negative);
            continue;
        }
        // An apostrophe inside a word parts it into words of their own ("don't" is
        // "don t"), never one hyphenated name.
        let pieces = c.split(['\'', '\u{2019}']).enumerate().flat_map(|(k, part)| {
            part.split(|ch: char| !(ch.is_alphanumeric() || ch == '.' || ch == '%')).map(move |p| (k, p))
        });
        for (k, piece) in pieces {
            let chunk_id = chunk_id.saturating_add(k.min(63) as u32);
            if piece.is_empty() {
                continue;
            }
            // Dots go from words ("E.U."), not from numbers: "2.5%" is not "25%".
            let piece: String = if is_dotted_version(piece) || piece.starts_with(|ch: char| ch.is_ascii_digit()) {
                piece.to_string()
            } else {
                piece.chars().filter(|&ch| ch != '.').collect()
            };
            // "10%" -> "10", "%"
            let mut rest = piece.as_str();
            while let Some(pos) = rest.find('%') {
                if pos > 0 {
                    raw.push(Token { text: rest[..pos].to_string(), chunk: chunk_id });
                }
                raw.push(Token { text: "%".to_string(), chunk: chunk_id });
                rest = &rest[pos + 1..];
            }
            if !rest.is_empty() {
                raw.push(Token { text: rest.to_string(), chunk: chunk_id });
            }
        }
        mark_negative(&mut raw, first_token, negative);
    }
    raw.truncate(MAX_TOKENS);
    let raw = percent_words(raw);
    number_words(raw)
}

/// "AuthFilter" -> "Auth-Filter", "rateLimiter" -> "rate-Limiter": a capital inside
/// a word starts a new one (transcribers and chat clients glue names so). The hyphen
/// keeps the parts in one chunk, as a typed "auth-filter" would be. All-capital words
/// ("DRAIN", "EU") and a capital after a digit ("2B") are left alone.
fn split_camel(input: &str) -> std::borrow::Cow<'_, str> {
    let b = input.as_bytes();
    let at = |i: usize| (1..b.len()).contains(&i) && b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase();
    if !(1..b.len()).any(at) {
        return std::borrow::Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len() + 8);
    for (i, ch) in input.char_indices() {
        if at(i) {
            out.push('-');
        }
        out.push(ch);
    }
    std::borrow::Cow::Owned(out)
}

/// The utterance as the parser's words, space-separated: what a transcript is
/// turned into before anything else looks at it (the voice front-end's `heard`).
/// Tokenising it again gives the same tokens.
pub fn canonical(input: &str) -> String {
    let (text, _) = truncate(input);
    tokenize(text).into_iter().map(|t| t.text).collect::<Vec<_>>().join(" ")
}

/// Puts the minus sign back on the first token of a chunk that had one.
fn mark_negative(raw: &mut [Token], first: usize, negative: bool) {
    if let Some(t) = raw.get_mut(first).filter(|_| negative) {
        t.text.insert(0, '-');
    }
}

fn percent_words(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if matches!(t.text.as_str(), "percent" | "pct" | "percents") {
            out.push(Token { text: "%".into(), chunk: t.chunk });
        } else if t.text == "per" && tokens.get(i + 1).is_some_and(|n| n.text == "cent") {
            out.push(Token { text: "%".into(), chunk: t.chunk });
            i += 1;
        } else {
            out.push(t.clone());
        }
        i += 1;
    }
    out
}

/// Number words below twenty, by value.
pub(crate) const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

/// Twenty to ninety, by value / 10 - 2.
pub(crate) const TENS: [&str; 8] = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];

/// 12 -> ["twelve"], 21 -> ["twenty", "one"]; None from 100 on: the inverse of what
/// the parser reads.
pub(crate) fn words_for(n: u64) -> Option<Vec<&'static str>> {
    let n = usize::try_from(n).ok()?;
    match n {
        0..=19 => Some(vec![ONES[n]]),
        20..=99 if n.is_multiple_of(10) => Some(vec![TENS[n / 10 - 2]]),
        20..=99 => Some(vec![TENS[n / 10 - 2], ONES[n % 10]]),
        _ => None,
    }
}

fn unit_word(w: &str) -> Option<u64> {
    ONES.iter().position(|&o| o == w).map(|p| p as u64)
}

fn tens_word(w: &str) -> Option<u64> {
    TENS.iter().position(|&t| t == w).map(|p| (p as u64 + 2) * 10)
}

/// Reads a spelled number starting at `i`; returns its value and how many tokens it took.
fn read_number(tokens: &[Token], i: usize) -> Option<(u64, usize)> {
    let word = |k: usize| tokens.get(k).map(|t| t.text.as_str());
    let mut k = i;
    let mut total: u64 = 0;
    let mut current: u64 = 0;
    let mut any = false;
    // "a hundred", "a thousand"
    if word(k) == Some("a") && matches!(word(k + 1), Some("hundred" | "thousand")) {
        current = 1;
        k += 1;
        any = true;
    }
    loop {
        match word(k) {
            Some(w) if unit_word(w).is_some() && !any_small(current) => {
                current += unit_word(w).unwrap_or(0);
                any = true;
                k += 1;
            }
            Some(w) if tens_word(w).is_some() && current.is_multiple_of(100) => {
                current += tens_word(w).unwrap_or(0);
                any = true;
                k += 1;
                // "twenty four"
                if let Some(u) = word(k).and_then(unit_word) {
                    if (1..10).contains(&u) {
                        current += u;
                        k += 1;
                    }
                }
            }
            Some("hundred") if any && current < 100 => {
                current = current.max(1) * 100;
                k += 1;
                if word(k) == Some("and")
                    && word(k + 1).is_some_and(|w| unit_word(w).is_some() || tens_word(w).is_some())
                {
                    k += 1;
                }
            }
            Some("thousand") if any && current < 1000 => {
                total += current.max(1) * 1000;
                current = 0;
                k += 1;
            }
            _ => break,
        }
    }
    if !any {
        return None;
    }
    Some((total + current, k - i))
}

/// Whether a units word may follow: only when nothing below a hundred is pending
/// ("one hundred five" yes, "five six" no).
fn any_small(current: u64) -> bool {
    !current.is_multiple_of(100)
}

fn number_words(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let chunk = tokens[i].chunk;
        let (value, used) = match read_number(&tokens, i) {
            Some((v, used)) => (v.to_string(), used),
            None => {
                out.push(tokens[i].clone());
                i += 1;
                continue;
            }
        };
        i += used;
        // "two point one (point zero)" -> "2.1(.0)"
        let mut text = value;
        while tokens.get(i).is_some_and(|t| t.text == "point" || t.text == "dot") {
            let next = match tokens.get(i + 1) {
                Some(t) if is_number(&t.text) => Some((t.text.clone(), 1)),
                Some(t) => unit_word(&t.text).map(|u| (u.to_string(), 1)),
                None => None,
            };
            match next {
                Some((digits, n)) => {
                    text.push('.');
                    text.push_str(&digits);
                    i += 1 + n;
                }
                None => break,
            }
        }
        out.push(Token { text, chunk });
    }
    // "2 point 1" with digits
    let mut merged: Vec<Token> = Vec::with_capacity(out.len());
    let mut j = 0;
    while j < out.len() {
        if is_number(&out[j].text)
            && out.get(j + 1).is_some_and(|t| t.text == "point")
            && out.get(j + 2).is_some_and(|t| is_number(&t.text))
        {
            let mut text = out[j].text.clone();
            let chunk = out[j].chunk;
            j += 1;
            while out.get(j).is_some_and(|t| t.text == "point") && out.get(j + 1).is_some_and(|t| is_number(&t.text)) {
                text.push('.');
                text.push_str(&out[j + 1].text);
                j += 2;
            }
            merged.push(Token { text, chunk });
        } else {
            merged.push(out[j].clone());
            j += 1;
        }
    }
    merged
}

/// The tokens of a fixed phrase (a dictionary key, a verb), normalised exactly as
/// utterances are so that both sides compare equal.
pub fn phrase(text: &str) -> String {
    tokenize(text).into_iter().map(|t| t.text).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        tokenize(s).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn spells_numbers_as_digits() {
        assert_eq!(words("edge seven"), ["edge", "7"]);
        assert_eq!(words("twenty four"), ["24"]);
        assert_eq!(words("a hundred per cent"), ["100", "%"]);
        assert_eq!(words("fifty percent"), ["50", "%"]);
        assert_eq!(words("one hundred and five"), ["105"]);
        assert_eq!(words("two point one"), ["2.1"]);
        assert_eq!(words("2 point 1 point 0"), ["2.1.0"]);
    }

    #[test]
    fn numbers_keep_their_sign_dots_exponent_and_thousands() {
        assert_eq!(words("send -50% of it"), ["send", "-50", "%", "of", "it"]);
        assert_eq!(words("\u{2212}3 failures"), ["-3", "failures"]);
        assert_eq!(words("2.5% 1e-5% 2.1e309"), ["2.5", "%", "1e-5", "%", "2.1e309"]);
        assert_eq!(
            words("batches of 1,000,000, then 10%, 50%"),
            ["batches", "of", "1000000", "then", "10", "%", "50", "%"]
        );
        assert_eq!(words("edge-7"), ["edge", "7"], "a hyphen inside a name is no minus sign");
    }

    #[test]
    fn plain_words_are_letters_and_the_punctuation_of_a_sentence() {
        for plain in ["yes", "Yes.", "yes, go ahead!", "don't", "Yes\u{2026}", "  ok  "] {
            assert!(is_plain(plain), "{plain:?}");
        }
        let long = "yes ".repeat(11);
        for noisy in ["", "k\u{fffd}", "\u{fffd}yes", "yes?", "y.e.s", "yes 2", "'yes'", "yes\u{0}", long.as_str()] {
            assert!(!is_plain(noisy), "{noisy:?}");
        }
    }

    #[test]
    fn transcripts_spell_alike_whatever_whisper_wrote() {
        // Hyphen-joined words, capitals inside words, number words, stray punctuation.
        assert_eq!(canonical("Restart-edge-five."), "restart edge 5");
        assert_eq!(canonical("Drain, Edge 7."), "drain edge 7");
        assert_eq!(canonical("Deploy AuthFilter two point one to EU-West."), "deploy auth filter 2.1 to eu west");
        assert_eq!(
            canonical("Shift ten percent of traffic from US East, to US West."),
            "shift 10 % of traffic from us east to us west"
        );
        assert_eq!(
            canonical("Roll out rate-limiter 1.1 as a canary: twenty-five, then fifty."),
            "roll out rate limiter 1.1 as a canary 25 then 50"
        );
        assert_eq!(canonical("DRAIN EDGE-9"), "drain edge 9");
        assert_eq!(canonical("Yes."), "yes");
        // Canonical text is a fixed point.
        for s in ["Restart-edge-five.", "send -50% of it", "v2.1.0 since 2026-11-01."] {
            assert_eq!(canonical(&canonical(s)), canonical(s), "{s:?}");
        }
    }

    #[test]
    fn drops_punctuation_and_keeps_versions_and_dates() {
        assert_eq!(words("E.U. West"), ["eu", "west"]);
        assert_eq!(words("EU-WEST's traffic, 10%!"), ["eu", "west", "traffic", "10", "%"]);
        assert_eq!(words("v2.1.0 since 2026-11-01."), ["v2.1.0", "since", "2026-11-01"]);
    }
}
