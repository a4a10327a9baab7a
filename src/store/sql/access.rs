//! [`AccessStore`] on SQL: API keys, the audit trail and the service's own secrets.

use super::*;

#[async_trait]
impl AccessStore for SqlStore {
    async fn create_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.begin_write("key").await?;
        insert_key(key)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "key"))?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "key"))?;
        Ok(())
    }

    async fn rotate_key(
        &self,
        id: &str,
        successor: &ApiKeyRecord,
        expires_ms: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        // One transaction: the old key gets its end of life and the successor appears together.
        let mut tx = self.begin_write("key").await?;
        let shortened = sqlx::query(
            "UPDATE api_keys SET expires_ms = CASE WHEN expires_ms IS NULL OR expires_ms > $2 \
             THEN $2 ELSE expires_ms END WHERE id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "key"))?;
        if shortened.rows_affected() != 1 {
            return Ok(false);
        }
        insert_key(successor)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "key"))?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "key"))?;
        Ok(true)
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms DESC, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "keys"))?;
        rows.iter().map(key_from_row).collect()
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "key"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("key").await?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
                .bind(id)
                .bind(audit.at_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, "key"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "key"))?;
        Ok(true)
    }

    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_ms IS NULL"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key_hash)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "key"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn audit_trail(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        // Absent filters bind values that match everything, so there is one statement. A target
        // matches itself and what lies under it (`models/m` and `models/m/items/x`).
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, request_id FROM audit_log \
             WHERE id < $1 AND ($2 = '' OR action = $2) \
             AND ($3 = '' OR target = $3 OR substr(target, 1, length($3) + 1) = $3 || '/') \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(query.before.unwrap_or(i64::MAX))
        .bind(query.action.map_or("", AuditAction::as_str))
        .bind(query.target.clone().unwrap_or_default())
        .bind(query.limit as i64)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "audit trail"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn service_secret(&self, name: &str) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT value FROM service_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "service secret"))?
            .ok_or_else(|| StoreError::Corrupt(format!("no service secret '{name}'")))
    }
}
