//! [`SessionStore`] on SQL: sessions, their answer logs, profiles and erasure.

use super::*;

#[async_trait]
impl SessionStore for SqlStore {
    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&s.id)
            .bind(&s.user_id)
            .bind(&s.model)
            .bind(&s.token_hash)
            .bind(s.status.as_str())
            .bind(s.stop_reason.map(|r| r.as_str()))
            .bind(json_text(&s.settings))
            .bind(encode_vector(&s.mean))
            .bind(encode_symmetric(&s.cov))
            .bind(s.version)
            .bind(s.answers)
            .bind(s.question.as_ref().map(json_text))
            .bind(s.created_ms)
            .bind(s.updated_ms)
            .bind(s.prior_version);
        self.run_to_end(query)
            .await
            .map_err(|e| classify(e, "session"))?;
        Ok(())
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "session"))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn session_answers(&self, id: &str) -> Result<Vec<AnswerRow>, StoreError> {
        let sql =
            format!("SELECT {ANSWER_COLUMNS} FROM answers WHERE session_id = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "answers"))?;
        rows.iter().map(answer_from_row).collect()
    }

    async fn read_for_change(&self, id: &str) -> Result<Box<dyn SessionUpdate>, StoreError> {
        let started = std::time::Instant::now();
        let mut reader = self.session_reader().await?;
        let columns: Vec<String> = SESSION_COLUMNS
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect();
        let sql = format!(
            "SELECT {}, m.bank_version, m.created_ms AS model_created_ms FROM sessions s JOIN models m ON m.name = s.model WHERE s.id = $1",
            columns.join(", ")
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
        let row = reader
            .fetch_first(query)
            .await
            .map_err(|e| classify(e, "session"))?
            .ok_or_else(|| StoreError::NotFound(format!("session '{id}'")))?;
        Ok(Box::new(SqlSessionUpdate {
            session: session_from_row(&row)?,
            bank: BankStamp {
                model_created_ms: row.try_get("model_created_ms")?,
                version: row.try_get("bank_version")?,
            },
            reader,
            started,
        }))
    }

    async fn change_as_last_committed(
        &self,
        session: SessionRecord,
        bank: BankStamp,
    ) -> Result<Box<dyn SessionUpdate>, StoreError> {
        Ok(Box::new(SqlSessionUpdate {
            started: std::time::Instant::now(),
            reader: self.session_reader().await?,
            session,
            bank,
        }))
    }

    async fn get_profile(
        &self,
        user_id: &str,
        model: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let sql =
            format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE user_id = $1 AND model = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(model)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "profile"))?;
        row.as_ref().map(profile_from_row).transpose()
    }

    async fn delete_user(&self, user_id: &str, audit: &AuditEntry) -> Result<u64, StoreError> {
        let mut tx = self.begin_write("user").await?;
        let removed = delete_rows(
            &mut tx,
            &[
                "DELETE FROM answers WHERE session_id IN (SELECT id FROM sessions WHERE user_id = $1)",
                "DELETE FROM sessions WHERE user_id = $1",
                "DELETE FROM profiles WHERE user_id = $1",
            ],
            user_id,
        )
        .await?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "user"))?;
        Ok(removed)
    }

    async fn session_by_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT id FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "session"))
    }

    async fn open_sessions(&self, model: &str, since_ms: i64) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE model = $1 AND status = 'active' AND created_ms >= $2",
        )
        .bind(model)
        .bind(since_ms)
        .fetch_one(&self.pool())
        .await
        .map_err(|e| classify(e, "sessions"))
    }

    async fn sessions_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM sessions GROUP BY status")
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "sessions"))?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
            .collect()
    }
}
