//! The audit log: every request an operator made, through which front-end, and how it ended.

use chrono::{DateTime, Local, NaiveDate, TimeZone as _, Utc};

use super::records::{parse_role, AuditEntry, AuditResult};
use super::store::{on_db, Fetch};
use super::{from_millis, to_millis, Registry, RegistryError};

/// Which audit entries to read: `parley audit`, and the chat operation that shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditQuery {
    /// At or after this instant; `None`: from the beginning.
    pub since: Option<DateTime<Utc>>,
    /// At most this many, the latest.
    pub limit: u32,
}

/// When `--since` means, relative to `now` (local time, since "today" is the
/// operator's day, not UTC's): `7d`, `24h`, `90m`, `today`, `yesterday`, a date
/// (`2026-12-01`, local midnight) or an RFC 3339 instant.
pub fn parse_since(text: &str, now: DateTime<Local>) -> Result<DateTime<Utc>, String> {
    let t = text.trim().to_ascii_lowercase();
    let midnight = |date: NaiveDate| {
        date.and_hms_opt(0, 0, 0)
            .and_then(|naive| Local.from_local_datetime(&naive).earliest())
            .map(|d| d.with_timezone(&Utc))
            .ok_or_else(|| format!("`{text}`: that local midnight does not exist"))
    };
    match t.as_str() {
        "today" => return midnight(now.date_naive()),
        "yesterday" => return midnight(now.date_naive() - chrono::Duration::days(1)),
        _ => {}
    }
    if let Some(unit) = t.chars().last().filter(|c| matches!(c, 'd' | 'h' | 'm' | 'w')) {
        if let Ok(n) = t[..t.len() - 1].parse::<u32>() {
            let n = i64::from(n);
            let span = match unit {
                'w' => chrono::Duration::try_weeks(n),
                'd' => chrono::Duration::try_days(n),
                'h' => chrono::Duration::try_hours(n),
                _ => chrono::Duration::try_minutes(n),
            };
            return span
                .and_then(|s| now.with_timezone(&Utc).checked_sub_signed(s))
                .ok_or_else(|| format!("`{text}` is further back than a date can go"));
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(&t, "%Y-%m-%d") {
        return midnight(date);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    Err(format!("`{text}` is not a time to start from; say 7d, 24h, 90m, today, yesterday or a date like 2026-12-01"))
}

impl Registry {
    /// The audit entries `query` selects, oldest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, RegistryError> {
        self.list_audit(query.since, query.limit).await
    }

    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        on_db!(&self.db, |pool, dl| {
            sqlx::query(&dl.sql(
                "INSERT INTO audit (at, actor_name, actor_frontend, role, utterance, operation, result, message) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(to_millis(entry.at))
            .bind(&entry.actor)
            .bind(&entry.frontend)
            .bind(entry.role.as_str())
            .bind(&entry.utterance)
            .bind(entry.operation.as_ref().map(|op| op.to_string()))
            .bind(entry.result.as_str())
            .bind(&entry.message)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Audit entries at or after `since` (all when `None`), the latest `limit`, oldest first.
    pub async fn list_audit(&self, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<AuditEntry>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(&dl.sql(
                "SELECT * FROM (SELECT id, at, actor_name, actor_frontend, role, utterance, operation, result, message \
                 FROM audit WHERE at >= ? ORDER BY id DESC LIMIT ?) AS latest ORDER BY id",
            ))
            .bind(since.map(to_millis).unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(audit_entry).collect()
        })
    }
}

/// One row of the audit table: the one mapping every audit query shares.
pub(super) fn audit_entry(row: &impl Fetch) -> Result<AuditEntry, RegistryError> {
    let role: String = row.text("role")?;
    let result: String = row.text("result")?;
    let operation: Option<String> = row.opt_text("operation")?;
    Ok(AuditEntry {
        at: from_millis(row.int("at")?)?,
        actor: row.text("actor_name")?,
        frontend: row.text("actor_frontend")?,
        role: parse_role(&role).ok_or_else(|| RegistryError::Data(format!("audit role `{role}`")))?,
        utterance: row.text("utterance")?,
        operation: operation.map(|o| serde_json::from_str(&o).unwrap_or(serde_json::Value::String(o))),
        result: AuditResult::parse(&result).ok_or_else(|| RegistryError::Data(format!("audit result `{result}`")))?,
        message: row.text("message")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(y, m, d, h, min, 0).single().unwrap()
    }

    #[test]
    fn since_reads_spans_days_and_dates() {
        let now = local(2026, 12, 2, 15, 30);
        let utc = |d: DateTime<Local>| d.with_timezone(&Utc);
        assert_eq!(parse_since("7d", now).unwrap(), utc(local(2026, 11, 25, 15, 30)));
        assert_eq!(parse_since("24h", now).unwrap(), utc(local(2026, 12, 1, 15, 30)));
        assert_eq!(parse_since("90m", now).unwrap(), utc(local(2026, 12, 2, 14, 0)));
        assert_eq!(parse_since("2w", now).unwrap(), utc(local(2026, 11, 18, 15, 30)));
        assert_eq!(parse_since("today", now).unwrap(), utc(local(2026, 12, 2, 0, 0)));
        assert_eq!(parse_since("Yesterday", now).unwrap(), utc(local(2026, 12, 1, 0, 0)));
        assert_eq!(parse_since("2026-11-30", now).unwrap(), utc(local(2026, 11, 30, 0, 0)));
        assert_eq!(
            parse_since("2026-12-01T10:00:00Z", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
        );
        for bad in ["", "7", "d", "seven days", "-3d", "2026-13-01"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains("is not a time to start from"), "{bad}: {e}");
        }
        assert!(parse_since("4000000000d", now).unwrap_err().contains("further back"));
    }
}
