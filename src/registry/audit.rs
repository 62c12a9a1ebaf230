//! The audit log: every request an operator made, through which front-end, and how it ended.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::records::{parse_role, AuditEntry, AuditResult};
use super::{from_millis, to_millis, Registry, RegistryError};

impl Registry {
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        sqlx::query(
            "INSERT INTO audit (at, actor_name, actor_frontend, role, utterance, operation, result, message) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(to_millis(entry.at))
        .bind(&entry.actor)
        .bind(&entry.frontend)
        .bind(entry.role.as_str())
        .bind(&entry.utterance)
        .bind(entry.operation.as_ref().map(|op| op.to_string()))
        .bind(entry.result.as_str())
        .bind(&entry.message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit entries at or after `since` (all when `None`), the latest `limit`, oldest first.
    pub async fn list_audit(&self, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<AuditEntry>, RegistryError> {
        let _hold = self.hold();
        let rows = sqlx::query(
            "SELECT * FROM (SELECT id, at, actor_name, actor_frontend, role, utterance, operation, result, message \
             FROM audit WHERE at >= ? ORDER BY id DESC LIMIT ?) ORDER BY id",
        )
        .bind(since.map(to_millis).unwrap_or(i64::MIN))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let role: String = row.try_get("role")?;
                let result: String = row.try_get("result")?;
                let operation: Option<String> = row.try_get("operation")?;
                Ok(AuditEntry {
                    at: from_millis(row.try_get("at")?)?,
                    actor: row.try_get("actor_name")?,
                    frontend: row.try_get("actor_frontend")?,
                    role: parse_role(&role).ok_or_else(|| RegistryError::Data(format!("audit role `{role}`")))?,
                    utterance: row.try_get("utterance")?,
                    operation: operation.map(|o| serde_json::from_str(&o).unwrap_or(serde_json::Value::String(o))),
                    result: AuditResult::parse(&result)
                        .ok_or_else(|| RegistryError::Data(format!("audit result `{result}`")))?,
                    message: row.try_get("message")?,
                })
            })
            .collect()
    }
}
