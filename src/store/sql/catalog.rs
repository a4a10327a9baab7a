//! [`CatalogStore`] on SQL: models, their banks and their priors.

use super::*;

#[async_trait]
impl CatalogStore for SqlStore {
    async fn create_model(
        &self,
        model: &ModelRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write("model").await?;
        sqlx::query(
            "INSERT INTO models (name, spec, prior_mean, prior_cov, bank_version, created_ms, prior_version) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&model.name)
        .bind(json_text(&model.spec))
        .bind(encode_vector(&model.prior_mean))
        .bind(encode_symmetric(&model.prior_cov))
        .bind(model.bank_version)
        .bind(model.created_ms)
        .bind(model.prior_version)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, &format!("model '{}'", model.name)))?;
        let prior = PriorRecord {
            version: model.prior_version,
            mean: model.prior_mean.clone(),
            cov: model.prior_cov.clone(),
            users: 0,
            created_ms: model.created_ms,
        };
        insert_prior(&mut tx, &model.name, &prior).await?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "model"))?;
        Ok(())
    }

    async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM models WHERE name = $1");
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(name);
        let rows = self
            .run_to_end(query)
            .await
            .map_err(|e| classify(e, "model"))?;
        rows.first().map(model_from_row).transpose()
    }

    async fn list_models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "models"))?;
        rows.iter().map(model_from_row).collect()
    }

    async fn delete_model(&self, name: &str, audit: &AuditEntry) -> Result<u64, StoreError> {
        let mut tx = self.begin_write("model").await?;
        let removed = delete_rows(
            &mut tx,
            &[
                "DELETE FROM answers WHERE session_id IN (SELECT id FROM sessions WHERE model = $1)",
                "DELETE FROM sessions WHERE model = $1",
                "DELETE FROM profiles WHERE model = $1",
                "DELETE FROM items WHERE model = $1",
                "DELETE FROM model_priors WHERE model = $1",
            ],
            name,
        )
        .await?;
        let models = delete_rows(&mut tx, &["DELETE FROM models WHERE name = $1"], name).await?;
        if models == 0 {
            return Err(StoreError::NotFound(format!("model '{name}'")));
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "model"))?;
        Ok(removed + models)
    }

    async fn upsert_items(
        &self,
        model: &str,
        items: &[ItemRecord],
        audit: &AuditEntry,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write("items").await?;
        // The version bump first: it also finds out whether the model exists.
        let version: i64 = sqlx::query_scalar("UPDATE models SET bank_version = bank_version + 1 WHERE name = $1 RETURNING bank_version")
            .bind(model)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify(e, "model"))?
            .ok_or_else(|| StoreError::NotFound(format!("model '{model}'")))?;
        for chunk in items.chunks(self.dialect.insert_batch()) {
            // Numbered placeholders: both dialects read `$n` (sqlx's QueryBuilder would emit the
            // Any driver's `?`, which PostgreSQL rejects).
            let rows: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let p = 5 * r;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO items (model, id, features, item_group, payload) VALUES {} \
                 ON CONFLICT (model, id) DO UPDATE SET features = excluded.features, item_group = excluded.item_group, payload = excluded.payload",
                rows.join(", ")
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for item in chunk {
                insert = insert
                    .bind(model)
                    .bind(&item.id)
                    .bind(encode_vector(&item.features))
                    .bind(item.group.clone())
                    .bind(item.payload.as_ref().map(json_text));
            }
            insert
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, "items"))?;
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "items"))?;
        Ok(version)
    }

    async fn delete_item(
        &self,
        model: &str,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("item").await?;
        let deleted = sqlx::query("DELETE FROM items WHERE model = $1 AND id = $2")
            .bind(model)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "item"))?
            .rows_affected();
        if deleted > 0 {
            sqlx::query("UPDATE models SET bank_version = bank_version + 1 WHERE name = $1")
                .bind(model)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, "model"))?;
            append_audit(&mut tx, audit).await?;
        }
        tx.commit().await.map_err(|e| classify(e, "item"))?;
        Ok(deleted > 0)
    }

    async fn list_items(
        &self,
        model: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ItemRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, features, item_group, payload FROM items WHERE model = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(model)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "items"))?;
        rows.iter().map(item_from_row).collect()
    }

    async fn model_priors(&self, model: &str) -> Result<Vec<PriorRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, mean, cov, users, created_ms FROM model_priors WHERE model = $1 ORDER BY version",
        )
        .bind(model)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "priors"))?;
        rows.iter().map(prior_from_row).collect()
    }

    async fn set_prior(
        &self,
        model: &str,
        expected_version: i64,
        prior: &PriorRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write("prior").await?;
        let updated = sqlx::query(
            "UPDATE models SET prior_mean = $3, prior_cov = $4, prior_version = $5, bank_version = bank_version + 1 \
             WHERE name = $1 AND prior_version = $2",
        )
        .bind(model)
        .bind(expected_version)
        .bind(encode_vector(&prior.mean))
        .bind(encode_symmetric(&prior.cov))
        .bind(prior.version)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "model"))?
        .rows_affected();
        if updated == 0 {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT prior_version FROM models WHERE name = $1")
                    .bind(model)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| classify(e, "model"))?;
            return Err(match exists {
                Some(_) => StoreError::Changed,
                None => StoreError::NotFound(format!("model '{model}'")),
            });
        }
        insert_prior(&mut tx, model, prior).await?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "prior"))?;
        Ok(())
    }

    async fn finished_logs(&self, model: &str) -> Result<Vec<FinishedLog>, StoreError> {
        // The latest finished session of each user; its answers in order.
        let sessions = sqlx::query(
            "SELECT id, user_id, updated_ms FROM sessions WHERE model = $1 AND status = 'finished' ORDER BY user_id, updated_ms, id",
        )
        .bind(model)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "sessions"))?;
        let mut latest: Vec<FinishedLog> = Vec::new();
        for row in &sessions {
            let user_id: String = row.try_get("user_id")?;
            let log = FinishedLog {
                session_id: row.try_get("id")?,
                user_id,
                answers: Vec::new(),
            };
            match latest.last_mut() {
                Some(last) if last.user_id == log.user_id => *last = log,
                _ => latest.push(log),
            }
        }
        let sql = format!(
            "SELECT a.session_id, {} FROM answers a JOIN sessions s ON s.id = a.session_id \
             WHERE s.model = $1 AND s.status = 'finished' ORDER BY a.session_id, a.seq",
            ANSWER_COLUMNS
                .split(", ")
                .map(|c| format!("a.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(model)
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "answers"))?;
        let index: std::collections::HashMap<String, usize> = latest
            .iter()
            .enumerate()
            .map(|(i, l)| (l.session_id.clone(), i))
            .collect();
        for row in &rows {
            let session: String = row.try_get("session_id")?;
            if let Some(&i) = index.get(&session) {
                latest[i].answers.push(answer_from_row(row)?);
            }
        }
        Ok(latest)
    }

    async fn load_bank(&self, model: &str) -> Result<(i64, Vec<ItemRecord>), StoreError> {
        // One transaction, so the version and the items are consistent with each other.
        let mut tx = self.pool().begin().await.map_err(|e| classify(e, "bank"))?;
        let version: i64 = sqlx::query_scalar("SELECT bank_version FROM models WHERE name = $1")
            .bind(model)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify(e, "model"))?
            .ok_or_else(|| StoreError::NotFound(format!("model '{model}'")))?;
        let rows = sqlx::query(
            "SELECT id, features, item_group, payload FROM items WHERE model = $1 ORDER BY id",
        )
        .bind(model)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(e, "items"))?;
        tx.commit().await.map_err(|e| classify(e, "bank"))?;
        Ok((
            version,
            rows.iter().map(item_from_row).collect::<Result<_, _>>()?,
        ))
    }
}
