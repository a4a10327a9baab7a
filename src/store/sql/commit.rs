//! A session read for a change and its conditional commit: [`SqlSessionUpdate`], and the
//! statements it runs ([`CommitShape`]: on PostgreSQL one autocommit statement of data-modifying
//! CTEs, on SQLite a write transaction).

use super::*;

/// A session read for a change: on SQLite inside a write transaction, on PostgreSQL through the
/// pool (the commit is conditional on the version read).
pub(super) struct SqlSessionUpdate {
    pub(super) reader: Reader,
    pub(super) session: SessionRecord,
    pub(super) bank: BankStamp,
    pub(super) started: std::time::Instant,
}

/// Where a [`SqlSessionUpdate`] reads and writes.
pub(super) enum Reader {
    Transaction(sqlx::Transaction<'static, sqlx::Any>),
    /// PostgreSQL: each read, and the commit, on a connection of the answer path's lane.
    Lane(Arc<Lane>),
}

impl Reader {
    /// Every row of a read, on whichever the reader holds.
    async fn fetch_all(
        &mut self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        match self {
            Reader::Lane(lane) => lane.fetch_all(query).await,
            Reader::Transaction(tx) => query.fetch_all(&mut **tx).await,
        }
    }

    /// The first row of a read, if any (read to its end, so the connection goes back idle).
    pub(super) async fn fetch_first(
        &mut self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        Ok(self.fetch_all(query).await?.into_iter().next())
    }
}

/// A value bound to a statement whose parameters are assembled at run time.
pub(super) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    OptFloat(Option<f64>),
    Bytes(Vec<u8>),
}

/// One statement with its parameters `$1…$n`.
pub(super) struct Statement {
    sql: &'static str,
    args: Vec<Arg>,
}

impl Statement {
    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        bind_all(sqlx::query(sqlx::AssertSqlSafe(self.sql)), &self.args)
    }
}

pub(super) fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(v) => query.bind(v.as_str()),
            Arg::OptText(v) => query.bind(v.as_deref()),
            Arg::Int(v) => query.bind(*v),
            Arg::OptInt(v) => query.bind(*v),
            Arg::OptFloat(v) => bind_f64(query, *v),
            Arg::Bytes(v) => query.bind(v.as_slice()),
        };
    }
    query
}

/// Binds an optional f64. sqlx 0.9's Any driver declares a NULL f64 to PostgreSQL as `float4`
/// (sqlx-core `any/arguments.rs` maps `Null(Double)` to `Option<f32>`, and `Null(Real)` to
/// `Option<f64>`), and a cached prepared statement keeps the types of its first execution: a
/// skipped answer (no evidence) followed by an answered one on the same connection then failed
/// with "incorrect binary data format". A NULL f32 is declared as `float8`, so NULLs go as that.
pub(super) fn bind_f64(
    query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    value: Option<f64>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    match value {
        Some(v) => query.bind(v),
        None => query.bind(None::<f32>),
    }
}

/// Renumbers the parameters `$k` of `sql` to `$(k + offset)`.
pub(super) fn shift_params(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            if let Ok(k) = digits.parse::<usize>() {
                out.push_str(&(k + offset).to_string());
            } else {
                out.push_str(&digits);
            }
        }
    }
    out
}

/// How the inserts of a commit get their rows: plain `VALUES` inside SQLite's write transaction;
/// on PostgreSQL a `SELECT` that yields a row only if the session update (CTE `upd`) did.
#[derive(Clone, Copy)]
pub(super) enum RowSource {
    Values,
    IfUpdated,
}

impl RowSource {
    fn of(self, placeholders: usize) -> String {
        let list = (1..=placeholders)
            .map(|k| format!("${k}"))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            RowSource::Values => format!("VALUES ({list})"),
            RowSource::IfUpdated => format!("SELECT {list} WHERE EXISTS (SELECT 1 FROM upd)"),
        }
    }
}

/// Which statements a commit runs: the session update always, the answer and the profile
/// inserts when it has them; `merged` into one statement (PostgreSQL) or one after another in a
/// transaction (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CommitShape {
    merged: bool,
    answer: bool,
    profile: bool,
}

impl CommitShape {
    fn of(commit: &SessionCommit, merged: bool) -> Self {
        Self {
            merged,
            answer: commit.answer.is_some(),
            profile: commit.profile.is_some(),
        }
    }

    /// The SQL texts of this shape. A commit runs on every answer and its text depends on nothing
    /// else, so each of the eight is built once.
    fn sql(self) -> &'static [String] {
        static TEXTS: std::sync::LazyLock<Vec<(CommitShape, Vec<String>)>> =
            std::sync::LazyLock::new(|| {
                CommitShape::all()
                    .map(|shape| (shape, shape.build_sql()))
                    .collect()
            });
        &TEXTS
            .iter()
            .find(|(shape, _)| *shape == self)
            .expect("every shape is built")
            .1
    }

    /// Every shape.
    fn all() -> impl Iterator<Item = CommitShape> {
        (0..8).map(|bits| CommitShape {
            merged: bits & 4 != 0,
            answer: bits & 2 != 0,
            profile: bits & 1 != 0,
        })
    }

    fn build_sql(self) -> Vec<String> {
        let source = if self.merged {
            RowSource::IfUpdated
        } else {
            RowSource::Values
        };
        let mut texts = vec![(SESSION_UPDATE_SQL.to_string(), SESSION_UPDATE_PARAMS)];
        if self.answer {
            texts.push((
                format!(
                    "INSERT INTO answers (session_id, user_id, {ANSWER_COLUMNS}, response) {}",
                    source.of(ANSWER_INSERT_PARAMS)
                ),
                ANSWER_INSERT_PARAMS,
            ));
        }
        if self.profile {
            texts.push((
                format!(
                    "INSERT INTO profiles ({PROFILE_COLUMNS}) {} \
                     ON CONFLICT (user_id, model) DO UPDATE SET session_id = excluded.session_id, status = excluded.status, \
                     mean = excluded.mean, cov = excluded.cov, version = profiles.version + 1, answers = excluded.answers, updated_ms = excluded.updated_ms, \
                     unreliable = excluded.unreliable, prior_version = excluded.prior_version",
                    source.of(PROFILE_INSERT_PARAMS)
                ),
                PROFILE_INSERT_PARAMS,
            ));
        }
        if !self.merged {
            return texts.into_iter().map(|(sql, _)| sql).collect();
        }
        // PostgreSQL runs a commit as one autocommit statement: the session update is the CTE
        // `upd` (conditional on the version read), the inserts are CTEs that yield rows only if
        // it updated, and the statement returns a row only if it did. Atomic, and one round trip.
        let mut texts = texts.into_iter();
        let (head, mut offset) = texts.next().expect("a commit updates the session");
        let mut ctes = vec![format!("upd AS ({head} RETURNING 1)")];
        for (i, (sql, params)) in texts.enumerate() {
            ctes.push(format!("w{i} AS ({})", shift_params(&sql, offset)));
            offset += params;
        }
        vec![format!(
            "WITH {} SELECT 1 AS applied FROM upd",
            ctes.join(", ")
        )]
    }
}

/// The session update of a commit, conditional on the session's version and on its model's bank:
/// the change was computed from both, as read (or as this replica last committed them).
/// `scripts/answer-ceiling.py` writes the merged answer commit as a pgbench script (PostgreSQL's
/// ceiling in BENCHMARKS.md): a change to these statements belongs there too.
pub(super) const SESSION_UPDATE_SQL: &str = "UPDATE sessions SET status = $2, stop_reason = $3, mean = $4, cov = $5, version = $6, answers = $7, question = $8, updated_ms = $9 \
    WHERE id = $1 AND version = $10 \
    AND EXISTS (SELECT 1 FROM models m WHERE m.name = sessions.model AND m.created_ms = $11 AND m.bank_version = $12)";
pub(super) const SESSION_UPDATE_PARAMS: usize = 12;
pub(super) const ANSWER_INSERT_PARAMS: usize = 17;
pub(super) const PROFILE_INSERT_PARAMS: usize = 11;

/// The parameters of a commit that moves a session read at `read_version`, statement by statement
/// in the order of [`CommitShape::sql`]: the session update, then the answer and the profile.
pub(super) fn commit_args(
    commit: &SessionCommit,
    read_version: i64,
    bank: BankStamp,
) -> Vec<Vec<Arg>> {
    let s = &commit.session;
    let mut args = vec![vec![
        Arg::Text(s.id.clone()),
        Arg::Text(s.status.as_str().into()),
        Arg::OptText(s.stop_reason.map(|r| r.as_str().into())),
        Arg::Bytes(encode_vector(&s.mean)),
        Arg::Bytes(encode_symmetric(&s.cov)),
        Arg::Int(s.version),
        Arg::Int(s.answers),
        Arg::OptText(s.question.as_ref().map(json_text)),
        Arg::Int(s.updated_ms),
        Arg::Int(read_version),
        Arg::Int(bank.model_created_ms),
        Arg::Int(bank.version),
    ]];
    if let Some(AnswerCommit { row: a, response }) = &commit.answer {
        args.push(vec![
            Arg::Text(s.id.clone()),
            Arg::Text(s.user_id.clone()),
            Arg::Int(a.seq),
            Arg::Text(a.item_a.clone()),
            Arg::Text(a.item_b.clone()),
            Arg::Text(choice_text(&a.answer)),
            Arg::OptFloat(a.log_evidence),
            Arg::Bytes(encode_vector(&a.direction)),
            Arg::OptText(a.idempotency_key.clone()),
            Arg::Text(a.request_hash.clone()),
            Arg::Int(a.created_ms),
            Arg::OptFloat(a.lapse),
            Arg::OptText(strength_text(&a.answer)),
            Arg::OptText(shown_text(&a.answer)),
            Arg::OptInt(chosen_index(&a.answer)),
            Arg::OptText(ranking_text(&a.answer)),
            Arg::Text(response.clone()),
        ]);
    }
    if let Some(p) = &commit.profile {
        args.push(vec![
            Arg::Text(p.user_id.clone()),
            Arg::Text(p.model.clone()),
            Arg::Text(p.session_id.clone()),
            Arg::Text(p.status.as_str().into()),
            Arg::Bytes(encode_vector(&p.mean)),
            Arg::Bytes(encode_symmetric(&p.cov)),
            Arg::Int(p.version),
            Arg::Int(p.answers),
            Arg::Int(p.updated_ms),
            Arg::Int(i64::from(p.unreliable)),
            Arg::Int(p.prior_version),
        ]);
    }
    args
}

#[async_trait]
impl SessionUpdate for SqlSessionUpdate {
    fn session(&self) -> &SessionRecord {
        &self.session
    }

    fn bank(&self) -> BankStamp {
        self.bank
    }

    async fn stored_reply(
        &mut self,
        idempotency_key: &str,
    ) -> Result<Option<StoredReply>, StoreError> {
        let query = sqlx::query(
            "SELECT request_hash, response FROM answers WHERE session_id = $1 AND idempotency_key = $2",
        )
        .bind(self.session.id.as_str())
        .bind(idempotency_key);
        let row = self
            .reader
            .fetch_first(query)
            .await
            .map_err(|e| classify(e, "answer"))?;
        row.map(|row| {
            Ok(StoredReply {
                request_hash: row.try_get("request_hash")?,
                body: row.try_get("response")?,
            })
        })
        .transpose()
    }

    async fn answers(&mut self) -> Result<Vec<AnswerRow>, StoreError> {
        let sql =
            format!("SELECT {ANSWER_COLUMNS} FROM answers WHERE session_id = $1 ORDER BY seq");
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.session.id.as_str());
        self.reader
            .fetch_all(query)
            .await
            .map_err(|e| classify(e, "answers"))?
            .iter()
            .map(answer_from_row)
            .collect()
    }

    async fn commit(self: Box<Self>, commit: &SessionCommit) -> Result<(), StoreError> {
        if commit.session.version != self.session.version + 1 {
            return Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "a commit must advance the session from version {} to {}, not {}",
                self.session.version,
                self.session.version + 1,
                commit.session.version
            ))));
        }
        let read_version = self.session.version;
        let started = self.started;
        match self.reader {
            Reader::Lane(lane) => {
                let statement = Statement {
                    sql: &CommitShape::of(commit, true).sql()[0],
                    args: commit_args(commit, read_version, self.bank)
                        .into_iter()
                        .flatten()
                        .collect(),
                };
                // `fetch_all`, not `fetch_optional`: the row arrives before the implicit
                // transaction commits; only the end of the stream (ReadyForQuery, after Sync)
                // says the commit is durable. `fetch_optional` returned at the row, and the fault
                // test once saw an acknowledged answer vanish in a crash.
                let applied = lane
                    .fetch_all(statement.query())
                    .await
                    .map_err(|e| classify(e, "answer"))?;
                if applied.is_empty() {
                    return Err(StoreError::Changed);
                }
            }
            Reader::Transaction(mut tx) => {
                let statements = CommitShape::of(commit, false)
                    .sql()
                    .iter()
                    .zip(commit_args(commit, read_version, self.bank))
                    .map(|(sql, args)| Statement { sql, args });
                for (i, statement) in statements.enumerate() {
                    let done = statement
                        .query()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| classify(e, "answer"))?;
                    if i == 0 && done.rows_affected() != 1 {
                        return Err(StoreError::Changed);
                    }
                }
                tx.commit().await.map_err(|e| classify(e, "session"))?;
            }
        }
        metrics::histogram!("elicit_store_transaction_duration_seconds", "op" => "session")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest `$n` in `sql`.
    fn last_param(sql: &str) -> usize {
        sql.split('$')
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn each_commit_shape_numbers_exactly_the_parameters_it_binds() {
        for shape in CommitShape::all() {
            let mut params = vec![SESSION_UPDATE_PARAMS];
            params.extend(shape.answer.then_some(ANSWER_INSERT_PARAMS));
            params.extend(shape.profile.then_some(PROFILE_INSERT_PARAMS));
            let texts = shape.sql();
            if shape.merged {
                assert_eq!(texts.len(), 1);
                assert_eq!(last_param(&texts[0]), params.iter().sum::<usize>());
            } else {
                let numbered: Vec<usize> = texts.iter().map(|t| last_param(t)).collect();
                assert_eq!(numbered, params, "{shape:?}");
            }
        }
    }
}
