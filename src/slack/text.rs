//! Text crossing the Slack boundary, both ways, as Slack's "Formatting text for app
//! surfaces" describes it.
//!
//! Out: `&`, `<` and `>` are Slack's control characters, so every piece of text that
//! goes back into Slack is escaped (`&amp;` `&lt;` `&gt;`); an echoed `<!channel>`
//! then shows as text and pings nobody. In: what Slack sends is the reverse, so a
//! message is decoded before it is parsed: entities become characters, `<#C123|eu-west>`
//! becomes `eu-west`, `<@U123>` mentions `@U123` (the bot's own are dropped),
//! `<http://x|label>` its label, and broadcasts (`<!here>`, `<!subteam^S1|@oncall>`)
//! plain words.

/// Slack's mrkdwn escaping: only `&`, `<` and `>` are special.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `s` escaped, in at most `max` characters: cut with `…` at a character, never
/// inside an entity.
pub fn escape_within(s: &str, max: usize) -> String {
    let escaped = escape(s);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let piece = escape(c.encode_utf8(&mut [0; 4]));
        let n = piece.chars().count();
        if used + n > max.saturating_sub(1) {
            break;
        }
        out.push_str(&piece);
        used += n;
    }
    out.push('…');
    out
}

/// A Slack user id as a mention of that user (ids are upper-case letters and
/// digits); anything else is shown as escaped text.
pub fn user_mention(id: &str) -> String {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        format!("<@{id}>")
    } else {
        escape(id)
    }
}

/// A message as Slack sent it, as plain words for the parser. Mentions of `own`
/// (the bot's user ids) are dropped; whitespace is collapsed.
pub fn decode(text: &str, own: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&entities(&rest[..start]));
        let Some(len) = rest[start..].find('>') else {
            // Not a control sequence Slack would send; keep it as text.
            rest = &rest[start..];
            break;
        };
        out.push_str(&control(&rest[start + 1..start + len], own));
        rest = &rest[start + len + 1..];
    }
    out.push_str(&entities(rest));
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One `<...>` sequence (without its brackets) as words.
fn control(inner: &str, own: &[String]) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(entities(l))),
        None => (inner, None),
    };
    let label = label.filter(|l| !l.trim().is_empty());
    let at = |name: &str| format!("@{}", name.trim_start_matches('@'));
    if let Some(user) = target.strip_prefix('@') {
        if own.iter().any(|o| o == user) {
            return " ".to_string();
        }
        return format!(" {} ", label.as_deref().map(at).unwrap_or_else(|| at(user)));
    }
    if let Some(channel) = target.strip_prefix('#') {
        return label.unwrap_or_else(|| format!("#{channel}"));
    }
    if let Some(special) = target.strip_prefix('!') {
        return match special {
            "channel" | "here" | "everyone" => at(special),
            s if s.starts_with("subteam^") => {
                label.as_deref().map(at).unwrap_or_else(|| at(s.trim_start_matches("subteam^")))
            }
            // `<!date^...|fallback>` and anything newer: its fallback text, if any.
            _ => label.unwrap_or_default(),
        };
    }
    // A link: what it says, else where it goes.
    label.unwrap_or_else(|| entities(target.strip_prefix("mailto:").unwrap_or(target)))
}

/// `&amp;` `&lt;` `&gt;` as the characters they stand for (`&amp;` last, so
/// `&amp;lt;` stays `&lt;`).
fn entities(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_text_is_escaped_and_cut_outside_entities() {
        assert_eq!(escape("a<b>&"), "a&lt;b&gt;&amp;");
        assert_eq!(escape("<!channel> deploy"), "&lt;!channel&gt; deploy");
        assert_eq!(escape_within("<<<<", 10), "&lt;&lt;…");
        assert_eq!(escape_within("abc", 3), "abc");
        assert_eq!(user_mention("U123ABC"), "<@U123ABC>");
        assert_eq!(user_mention("<!here>"), "&lt;!here&gt;");
    }

    #[test]
    fn incoming_text_is_decoded_before_parsing() {
        let own = vec!["UBOT".to_string()];
        assert_eq!(decode("<@UBOT>  how healthy is <#C123|eu-west>?", &own), "how healthy is eu-west?");
        assert_eq!(decode("drain edge-7 &amp; tell <@U9|ann>", &own), "drain edge-7 & tell @ann");
        assert_eq!(
            decode("<!channel> <!here> <!subteam^S123|@oncall> <!subteam^S9>", &own),
            "@channel @here @oncall @S9"
        );
        assert_eq!(
            decode("see <http://x.example/a?b=1&amp;c=2|the runbook> or <https://y.example>", &own),
            "see the runbook or https://y.example"
        );
        assert_eq!(decode("a &lt;b&gt; &amp;lt; <#C9>", &own), "a <b> &lt; #C9");
        assert_eq!(decode("<@U1>status", &own), "@U1 status");
        assert_eq!(decode("unclosed < here", &own), "unclosed < here");
        assert_eq!(decode("on <!date^1392734382^{date}|Feb 18, 2014>", &own), "on Feb 18, 2014");
    }
}
