//! The model's response -> a typed [`Operation`]. Each structured-output style puts
//! the JSON in a different place; plain text gets the first balanced `{...}`. What
//! comes out is validated by the contract's own deserialiser, never trusted as is.

use serde_json::{Map, Value};

use super::LlmError;
use crate::intent::suggest;
use crate::ops::Operation;

/// The operation in a Chat Completions response body (`None`: the model says the
/// utterance asks for no operation).
pub fn operation(body: &Value) -> Result<Option<Operation>, LlmError> {
    let choice = body.pointer("/choices/0").ok_or_else(|| LlmError::BadResponse("no choices in the answer".into()))?;
    if choice.get("finish_reason").and_then(Value::as_str) == Some("length") {
        return Err(LlmError::Truncated);
    }
    let message = choice.get("message").ok_or_else(|| LlmError::BadResponse("no message in the answer".into()))?;
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        return Err(LlmError::Refused(refusal.chars().take(200).collect()));
    }
    let text = match message.pointer("/tool_calls/0/function/arguments") {
        Some(Value::String(args)) => args.clone(),
        // Some servers send the arguments as an object rather than a string.
        Some(args @ Value::Object(_)) => args.to_string(),
        _ => message.get("content").and_then(Value::as_str).unwrap_or("").to_string(),
    };
    let value = json_in(&text).ok_or(LlmError::NotJson)?;
    answer(value)
}

/// The whole text as JSON, or else its first balanced `{...}` that is JSON.
pub fn json_in(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(trimmed) {
        return Some(v);
    }
    let bytes = trimmed.as_bytes();
    let mut start = 0;
    while let Some(offset) = trimmed[start..].find('{') {
        let open = start + offset;
        if let Some(close) = balanced_end(&bytes[open..]) {
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&trimmed[open..open + close]) {
                return Some(v);
            }
        }
        start = open + 1;
    }
    None
}

/// Length of the object starting at `bytes[0] == b'{'`, minding strings and escapes.
fn balanced_end(bytes: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `{"operation": {...} | null, "missing": [...]}`, or a bare `{"op": ...}`.
pub fn answer(value: Value) -> Result<Option<Operation>, LlmError> {
    let op = match value {
        Value::Object(mut map) if !map.contains_key("op") => match map.remove("operation") {
            Some(Value::Null) => return Ok(None),
            Some(op) => op,
            None => return Err(LlmError::Invalid("the answer has no `operation`".into())),
        },
        other => other,
    };
    let Value::Object(map) = op else {
        return Err(LlmError::Invalid("`operation` is not an object".into()));
    };
    let name = match map.get("op") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(LlmError::Invalid("the operation has no `op` name".into())),
    };
    if !Operation::NAMES.contains(&name.as_str()) {
        let near = suggest(&name, Operation::NAMES.iter().copied());
        return Err(LlmError::UnknownOp { name: name.chars().take(60).collect(), suggestions: near });
    }
    // Models often spell an absent optional field as null; the contract omits it.
    let cleaned: Map<String, Value> = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    Operation::from_json(Value::Object(cleaned)).map(Some).map_err(|e| LlmError::Invalid(format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completion(message: Value, finish: &str) -> Value {
        json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
    }

    #[test]
    fn each_style_yields_the_typed_operation() {
        let content = completion(
            json!({"role": "assistant", "content": "{\"operation\": {\"op\": \"drain\", \"agent\": \"edge-7\"}, \"missing\": []}"}),
            "stop",
        );
        assert_eq!(operation(&content).unwrap(), Some(Operation::Drain { agent: Some("edge-7".into()) }));
        let tool = completion(
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "parley_operation", "arguments": "{\"operation\": {\"op\": \"restart\", \"agent\": \"core-2\", \"to\": null}}"}}]}),
            "tool_calls",
        );
        assert_eq!(operation(&tool).unwrap(), Some(Operation::Restart { agent: Some("core-2".into()) }));
        let plain = completion(
            json!({"role": "assistant", "content": "Sure! Here you go: {\"op\": \"show_health\", \"scope\": [\"region:eu-west\"]} hope {that} helps"}),
            "stop",
        );
        assert_eq!(operation(&plain).unwrap().unwrap().name(), "show_health");
        let none =
            completion(json!({"role": "assistant", "content": "{\"operation\": null, \"missing\": []}"}), "stop");
        assert_eq!(operation(&none).unwrap(), None);
    }

    #[test]
    fn bad_answers_are_typed_errors() {
        let msg = |c: &str| completion(json!({"role": "assistant", "content": c}), "stop");
        assert!(matches!(operation(&msg("{\"operation\": {\"op\": \"drian\"}}")), Err(LlmError::UnknownOp { .. })));
        assert!(matches!(operation(&msg("{\"op\": \"drain\", \"colour\": \"red\"}")), Err(LlmError::Invalid(_))));
        assert!(matches!(operation(&msg("no idea")), Err(LlmError::NotJson)));
        assert!(matches!(operation(&msg("{\"op\": \"dra")), Err(LlmError::NotJson)));
        let cut = completion(json!({"role": "assistant", "content": "{\"op\": \"drain\"}"}), "length");
        assert!(matches!(operation(&cut), Err(LlmError::Truncated)));
        assert!(matches!(operation(&json!({"error": "x"})), Err(LlmError::BadResponse(_))));
    }
}
