//! The JSON schema of what the model must answer, derived with `schemars` from the
//! same Rust types the grammar produces ([`Operation`] and its field types), so the
//! contract the model sees cannot drift from the one Parley parses.

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::ops::Operation;

/// The model's answer: an operation of the contract, or null when the utterance asks
/// for none. `missing` is advisory; Parley decides what is missing itself.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[allow(dead_code)] // only the schema is used; the answer is read field by field in `parse`
pub struct Answer {
    /// The operation the utterance asks for, or null.
    pub operation: Option<Operation>,
    /// Required fields the utterance did not give.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// The name the schema (or tool) is given in the request.
pub const NAME: &str = "parley_operation";

/// The schema of [`Answer`], built once: generating it walks every operation type,
/// which would otherwise dominate the cost of building a request.
pub fn answer_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut value = serde_json::to_value(schemars::schema_for!(Answer)).unwrap_or(Value::Null);
        // Some servers reject the meta-schema URL; it tells the model nothing.
        if let Some(map) = value.as_object_mut() {
            map.remove("$schema");
        }
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_every_operation_of_the_contract() {
        let text = answer_schema().to_string();
        for name in Operation::NAMES {
            assert!(text.contains(&format!("\"{name}\"")), "{name} missing from the schema");
        }
        // Custom serde forms are described as strings, not as Rust enums.
        assert!(text.contains("region:NAME"), "{text}");
        assert!(text.contains("30d"), "{text}");
        assert!(text.contains("\"operation\""));
    }
}
