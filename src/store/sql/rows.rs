//! Row codecs (the records of [`crate::store`] to and from their columns) and the writes several
//! tables share (the audit entry of a change, deletions by key).

use super::*;

pub(super) fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let action: String = row.try_get("action")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at_ms: row.try_get("at_ms")?,
            actor: row.try_get("actor")?,
            action: AuditAction::parse(&action)
                .ok_or_else(|| StoreError::Corrupt(format!("audit action '{action}'")))?,
            target: row.try_get("target")?,
            request_id: row.try_get("request_id")?,
        },
    })
}

pub(super) fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

pub(super) fn model_from_row(row: &AnyRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        name: row.try_get("name")?,
        spec: serde_json::from_str(&row.try_get::<String, _>("spec")?)?,
        prior_mean: decode_vector(&row.try_get::<Vec<u8>, _>("prior_mean")?)?,
        prior_cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("prior_cov")?)?,
        bank_version: row.try_get("bank_version")?,
        created_ms: row.try_get("created_ms")?,
        prior_version: row.try_get("prior_version")?,
    })
}

pub(super) fn prior_from_row(row: &AnyRow) -> Result<PriorRecord, StoreError> {
    Ok(PriorRecord {
        version: row.try_get("version")?,
        mean: decode_vector(&row.try_get::<Vec<u8>, _>("mean")?)?,
        cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("cov")?)?,
        users: row.try_get("users")?,
        created_ms: row.try_get("created_ms")?,
    })
}

/// Inserts one version of a model's prior.
pub(super) async fn insert_prior(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    model: &str,
    prior: &PriorRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO model_priors (model, version, mean, cov, users, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(model.to_string())
    .bind(prior.version)
    .bind(encode_vector(&prior.mean))
    .bind(encode_symmetric(&prior.cov))
    .bind(prior.users)
    .bind(prior.created_ms)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "prior version"))?;
    Ok(())
}

pub(super) fn item_from_row(row: &AnyRow) -> Result<ItemRecord, StoreError> {
    let payload: Option<String> = row.try_get("payload")?;
    Ok(ItemRecord {
        id: row.try_get("id")?,
        features: decode_vector(&row.try_get::<Vec<u8>, _>("features")?)?,
        group: row.try_get("item_group")?,
        payload: payload.map(|p| serde_json::from_str(&p)).transpose()?,
    })
}

pub(super) fn status_from(text: String) -> Result<SessionStatus, StoreError> {
    SessionStatus::parse(&text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown status '{text}'")))
}

pub(super) fn session_from_row(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    let stop_reason: Option<String> = row.try_get("stop_reason")?;
    let question: Option<String> = row.try_get("question")?;
    Ok(SessionRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        model: row.try_get("model")?,
        token_hash: row.try_get("token_hash")?,
        status: status_from(row.try_get("status")?)?,
        stop_reason: stop_reason
            .map(|s| serde_json::from_value(serde_json::Value::String(s)))
            .transpose()?,
        settings: serde_json::from_str(&row.try_get::<String, _>("settings")?)?,
        mean: decode_vector(&row.try_get::<Vec<u8>, _>("mean")?)?,
        cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("cov")?)?,
        version: row.try_get("version")?,
        answers: row.try_get("answers")?,
        question: question.map(|q| serde_json::from_str(&q)).transpose()?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        prior_version: row.try_get("prior_version")?,
    })
}

/// The `choice` column: a, b, tie or skip for a pair; pick, rank or skip for a question of k.
pub(super) fn choice_text(answer: &LoggedAnswer) -> String {
    match answer {
        LoggedAnswer::Pair { choice, .. } => text_of(choice),
        LoggedAnswer::Pick { ranking, .. } => match ranking.len() {
            0 => "skip",
            1 => "pick",
            _ => "rank",
        }
        .into(),
        LoggedAnswer::Statement { prefer, .. } => text_of(prefer),
    }
}

pub(super) fn strength_text(answer: &LoggedAnswer) -> Option<String> {
    match answer {
        LoggedAnswer::Pair {
            strength: Some(s), ..
        }
        | LoggedAnswer::Statement {
            strength: Some(s), ..
        } => Some(text_of(s)),
        _ => None,
    }
}

pub(super) fn shown_text(answer: &LoggedAnswer) -> Option<String> {
    match answer {
        LoggedAnswer::Pick { items, .. } => Some(json_text(items)),
        LoggedAnswer::Pair { .. } | LoggedAnswer::Statement { .. } => None,
    }
}

/// The `chosen` column: the first (best) ordered item's index.
pub(super) fn chosen_index(answer: &LoggedAnswer) -> Option<i64> {
    match answer {
        LoggedAnswer::Pick { ranking, .. } => ranking.first().map(|&c| c as i64),
        LoggedAnswer::Pair { .. } | LoggedAnswer::Statement { .. } => None,
    }
}

/// The `ranking` column: every ordered index, for an answer that orders more than one item.
pub(super) fn ranking_text(answer: &LoggedAnswer) -> Option<String> {
    match answer {
        LoggedAnswer::Pick { ranking, .. } if ranking.len() > 1 => Some(json_text(ranking)),
        _ => None,
    }
}

pub(super) fn logged_answer(row: &AnyRow) -> Result<LoggedAnswer, StoreError> {
    let text = |column: &str| -> Result<Option<String>, StoreError> { Ok(row.try_get(column)?) };
    fn parse<T: serde::de::DeserializeOwned>(value: String) -> Result<T, serde_json::Error> {
        serde_json::from_value(serde_json::Value::String(value))
    }
    Ok(match text("shown")? {
        Some(items) => LoggedAnswer::Pick {
            items: serde_json::from_str(&items)?,
            ranking: match text("ranking")? {
                Some(ranking) => serde_json::from_str(&ranking)?,
                None => row
                    .try_get::<Option<i64>, _>("chosen")?
                    .map(|c| {
                        usize::try_from(c)
                            .map_err(|_| StoreError::Corrupt(format!("answer pick {c}")))
                    })
                    .transpose()?
                    .into_iter()
                    .collect(),
            },
        },
        None => {
            let choice: String = row.try_get("choice")?;
            let strength = text("strength")?.map(parse).transpose()?;
            match choice.as_str() {
                "low" | "high" => LoggedAnswer::Statement {
                    prefer: parse(choice)?,
                    strength,
                },
                _ => LoggedAnswer::Pair {
                    choice: parse(choice)?,
                    strength,
                },
            }
        }
    })
}

pub(super) fn answer_from_row(row: &AnyRow) -> Result<AnswerRow, StoreError> {
    Ok(AnswerRow {
        seq: row.try_get("seq")?,
        item_a: row.try_get("item_a")?,
        item_b: row.try_get("item_b")?,
        answer: logged_answer(row)?,
        log_evidence: row.try_get("log_evidence")?,
        direction: decode_vector(&row.try_get::<Vec<u8>, _>("direction")?)?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: row.try_get("request_hash")?,
        created_ms: row.try_get("created_ms")?,
        lapse: row.try_get("lapse")?,
    })
}

pub(super) fn profile_from_row(row: &AnyRow) -> Result<ProfileRecord, StoreError> {
    Ok(ProfileRecord {
        user_id: row.try_get("user_id")?,
        model: row.try_get("model")?,
        session_id: row.try_get("session_id")?,
        status: status_from(row.try_get("status")?)?,
        mean: decode_vector(&row.try_get::<Vec<u8>, _>("mean")?)?,
        cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("cov")?)?,
        version: row.try_get("version")?,
        answers: row.try_get("answers")?,
        updated_ms: row.try_get("updated_ms")?,
        unreliable: row.try_get::<i64, _>("unreliable")? != 0,
        prior_version: row.try_get("prior_version")?,
    })
}

pub(super) fn key_from_row(row: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        key_hash: row.try_get("key_hash")?,
        created_ms: row.try_get("created_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        rate_per_s: row.try_get("rate_per_s")?,
        burst: row.try_get("burst")?,
        expires_ms: row.try_get("expires_ms")?,
        rotated_from: row.try_get("rotated_from")?,
        models: row
            .try_get::<Option<String>, _>("models")?
            .map(|text| serde_json::from_str(&text))
            .transpose()?,
    })
}

pub(super) fn insert_key(
    key: &ApiKeyRecord,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key.id.clone())
        .bind(key.name.clone())
        .bind(key.role.clone())
        .bind(key.key_hash.clone())
        .bind(key.created_ms)
        .bind(key.revoked_ms);
    bind_f64(query, key.rate_per_s)
        .bind(key.burst)
        .bind(key.expires_ms)
        .bind(key.rotated_from.clone())
        .bind(key.models.as_ref().map(json_text))
}

pub(super) fn text_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value).expect("plain data serialises") {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Runs DELETE statements that each bind `key` as `$1`, in order, in `tx`; returns the rows removed.
pub(super) async fn delete_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    statements: &[&'static str],
    key: &str,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    for sql in statements {
        removed += sqlx::query(*sql)
            .bind(key)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(removed)
}

/// Appends `audit` to the audit trail in `tx`, the transaction of the change it records.
pub(super) async fn append_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, action, target, request_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(audit.at_ms)
    .bind(audit.actor.clone())
    .bind(audit.action.as_str())
    .bind(audit.target.clone())
    .bind(audit.request_id.clone())
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "audit entry"))?;
    Ok(())
}
