//! Words in one place: plural endings, "a, b and 3 more" lists, snake_case names in
//! words, and durations. Every reply, announcement and reason says these the same way
//! because they all say them through here.

use std::time::Duration;

/// The plural ending for `n` things: `format!("{n} agent{}", s(n))`.
pub fn s<N: PartialEq + From<u8>>(n: N) -> &'static str {
    if n == N::from(1) {
        ""
    } else {
        "s"
    }
}

/// `one` for one thing, its plural (an added "s") for any other number.
pub fn noun(n: usize, one: &str) -> String {
    format!("{one}{}", s(n))
}

/// "1 agent", "3 agents".
pub fn count(n: usize, one: &str) -> String {
    format!("{n} {}", noun(n, one))
}

/// `one` for one thing, `many` for any other number, for plurals that are not an
/// added "s": `format!("{n} entr{}", either(n, "y", "ies"))`.
pub fn either<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// A present-tense verb's ending for `n` subjects: "1 agent answers", "3 agents answer".
pub fn verb_s(n: usize) -> &'static str {
    if n == 1 {
        "s"
    } else {
        ""
    }
}

/// "is" for one, "are" for any other number.
pub fn is_are(n: usize) -> &'static str {
    if n == 1 {
        "is"
    } else {
        "are"
    }
}

/// At most `shown` of `items`, comma-separated, then "and N more" for the rest:
/// "edge-1, edge-2 and 3 more"; all of them, comma-separated, when they fit.
pub fn and_more<S: AsRef<str>>(items: &[S], shown: usize) -> String {
    let mut out = items.iter().take(shown).map(AsRef::as_ref).collect::<Vec<&str>>().join(", ");
    if items.len() > shown {
        out.push_str(&format!(" and {} more", items.len() - shown));
    }
    out
}

/// A snake_case name (an operation, a state) as words: "rolled_back" -> "rolled back".
pub fn spaced(name: &str) -> String {
    name.replace('_', " ")
}

/// A setting's duration: whole seconds as "2 s", anything finer as "250 ms".
pub fn duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_lists_names_and_durations() {
        assert_eq!(
            (count(1, "agent"), count(0, "agent"), count(12, "agent")),
            ("1 agent".into(), "0 agents".into(), "12 agents".into())
        );
        assert_eq!((is_are(1), is_are(2)), ("is", "are"));
        assert_eq!((either(1, "entry", "entries"), either(2, "entry", "entries")), ("entry", "entries"));
        assert_eq!((verb_s(1), verb_s(3)), ("s", ""));
        assert_eq!(and_more(&["a", "b"], 5), "a, b");
        assert_eq!(and_more(&["a", "b", "c", "d"], 2), "a, b and 2 more");
        assert_eq!(and_more::<&str>(&[], 2), "");
        assert_eq!(spaced("show_deployment"), "show deployment");
        assert_eq!(
            (duration(Duration::from_secs(2)), duration(Duration::from_millis(250))),
            ("2 s".into(), "250 ms".into())
        );
    }
}
