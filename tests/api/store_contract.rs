//! The `Store` contract, checked directly against both implementations.

use elicit::model::kway::AnswerFormat;
use elicit::model::summary::DimensionEnds;
use elicit::model::{Choice, NoiseModel, Strategy, Strength, UpdateMethod};
use elicit::store::sql::{Dialect, PoolSettings};
use elicit::store::{
    AccessStore, AnswerCommit, AnswerRow, ApiKeyRecord, AuditAction, AuditEntry, AuditQuery,
    BankStamp, CatalogStore, ItemRecord, LoggedAnswer, ModelRecord, ModelSpec, PriorRecord,
    ProfileRecord, QuestionRecord, SessionCommit, SessionRecord, SessionSettings, SessionStatus,
    SessionStore, SqlStore, Store, StoreError, StoredReply,
};
use nalgebra::{DMatrix, DVector};
use serde_json::json;

use crate::harness::{Backend, TestDatabase};

async fn store(db: &TestDatabase) -> SqlStore {
    let store = SqlStore::connect(&db.url, PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

fn model(name: &str) -> ModelRecord {
    ModelRecord {
        name: name.into(),
        spec: ModelSpec {
            ends: vec![
                None,
                Some(DimensionEnds {
                    low: "less".into(),
                    high: "more".into(),
                }),
            ],
            dimensions: vec!["a".into(), "b".into()],
            noise: NoiseModel::default(),
            update_method: UpdateMethod::Adf,
            strategy: Strategy::Bald,
            reliability: Default::default(),
            guard: Default::default(),
            probes: None,
            checks: None,
            lapse_per_user: None,
            choices: 4,
            answer: AnswerFormat::Top(2),
            strength_threshold: 1.5,
            targets: vec!["x".into(), "y".into()],
        },
        prior_mean: DVector::from_vec(vec![0.5, -0.5]),
        prior_cov: DMatrix::from_row_slice(2, 2, &[1.0, 0.2, 0.2, 2.0]),
        bank_version: 0,
        created_ms: 1,
        prior_version: 1,
    }
}

fn audit(action: AuditAction, target: &str) -> AuditEntry {
    AuditEntry {
        at_ms: 7,
        actor: "k0".into(),
        action,
        target: target.into(),
        request_id: Some("r1".into()),
    }
}

/// The actions in the audit trail, oldest first.
async fn trail(store: &SqlStore) -> Vec<(AuditAction, String)> {
    let query = AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    };
    let mut entries: Vec<_> = store
        .audit_trail(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.entry.action, r.entry.target))
        .collect();
    entries.reverse();
    entries
}

fn item(id: &str, x: f64) -> ItemRecord {
    ItemRecord {
        id: id.into(),
        features: DVector::from_vec(vec![x, -x]),
        group: None,
        payload: Some(json!({"text": id})),
    }
}

fn session(id: &str, user: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        user_id: user.into(),
        model: "m".into(),
        token_hash: format!("hash-{id}"),
        status: SessionStatus::Active,
        stop_reason: None,
        settings: SessionSettings {
            max_questions: 5,
            strategy: Strategy::Bald,
            items: None,
            exclude_pairs: vec![],
            probes: Some(elicit::model::elicitation::ProbeRule {
                every: 4,
                min_gap: 2,
            }),
            checks: Some(elicit::model::elicitation::CheckRule { every: 3 }),
            choices: 3,
            answer: AnswerFormat::Rank,
            targets: Some(vec!["x".into(), "z".into()]),
        },
        mean: DVector::zeros(2),
        cov: DMatrix::identity(2, 2),
        version: 1,
        answers: 0,
        question: None,
        created_ms: 1,
        updated_ms: 1,
        prior_version: 1,
    }
}

/// Answers of every kind the log keeps: plain, graded, a pick of three, a ranking of three, a
/// skipped pick.
fn answer_of_kind(seq: i64) -> LoggedAnswer {
    let pick = |ranking: &[usize]| LoggedAnswer::Pick {
        items: vec!["x".into(), "y".into(), "z".into()],
        ranking: ranking.to_vec(),
    };
    match seq {
        1 => LoggedAnswer::Pair {
            choice: Choice::A,
            strength: None,
        },
        2 => LoggedAnswer::Pair {
            choice: Choice::B,
            strength: Some(Strength::Clearly),
        },
        3 => pick(&[2]),
        4 => pick(&[1, 2, 0]),
        _ => pick(&[]),
    }
}

/// A mutator that appends one answer and bumps the version.
fn append(current: &SessionRecord, key: Option<&str>) -> SessionCommit {
    let mut next = current.clone();
    next.version += 1;
    next.answers += 1;
    next.mean[0] += 1.0;
    next.question = Some(QuestionRecord {
        id: (next.answers + 1).to_string(),
        item_a: "x".into(),
        item_b: "y".into(),
        more_items: vec!["z".into()],
        information_bits: 0.5,
    });
    let answer = AnswerRow {
        seq: next.answers,
        item_a: "x".into(),
        item_b: "y".into(),
        answer: answer_of_kind(next.answers),
        log_evidence: Some(-0.5),
        direction: DVector::from_vec(vec![1.0, 2.0]),
        idempotency_key: key.map(str::to_string),
        request_hash: "h1".into(),
        created_ms: 2,
        lapse: Some(0.05),
    };
    SessionCommit {
        profile: Some(ProfileRecord {
            user_id: next.user_id.clone(),
            model: next.model.clone(),
            session_id: next.id.clone(),
            status: next.status,
            mean: next.mean.clone(),
            cov: next.cov.clone(),
            version: 1,
            answers: next.answers,
            updated_ms: 2,
            unreliable: false,
            prior_version: next.prior_version,
        }),
        answer: Some(AnswerCommit {
            row: answer,
            response: format!("{{\"answers\": {}}}", next.answers),
        }),
        session: next,
    }
}

async fn models_and_items(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    store.ping().await.unwrap();
    let upserted = audit(AuditAction::ItemsUpsert, "models/m");
    let deleted = audit(AuditAction::ItemDelete, "models/m/items/x");
    store
        .create_model(&model("m"), &audit(AuditAction::ModelCreate, "models/m"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_model(&model("m"), &audit(AuditAction::ModelCreate, "models/m"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_model("m").await.unwrap().unwrap(), model("m"));
    assert!(store.get_model("nope").await.unwrap().is_none());
    assert_eq!(
        store
            .upsert_items(
                "m",
                &[item("x", 1.0), item("y", 2.0), item("z", 3.0)],
                &upserted
            )
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .upsert_items("m", &[item("y", 5.0)], &upserted)
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store
            .upsert_items("nope", &[item("q", 1.0)], &upserted)
            .await,
        Err(StoreError::NotFound(_))
    ));
    let (version, bank) = store.load_bank("m").await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        bank.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["x", "y", "z"]
    );
    assert_eq!(bank[1], item("y", 5.0));
    let page = store.list_items("m", Some("x"), 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "y");
    assert!(store.delete_item("m", "x", &deleted).await.unwrap());
    assert!(!store.delete_item("m", "x", &deleted).await.unwrap());
    assert_eq!(store.load_bank("m").await.unwrap().0, 3);
    assert_eq!(store.list_models().await.unwrap().len(), 1);
    // One entry per change made; failed and no-op calls leave none.
    let m = || "models/m".to_string();
    assert_eq!(
        trail(&store).await,
        [
            (AuditAction::ModelCreate, m()),
            (AuditAction::ItemsUpsert, m()),
            (AuditAction::ItemsUpsert, m()),
            (AuditAction::ItemDelete, "models/m/items/x".into()),
        ]
    );
    let erased = audit(AuditAction::ModelDelete, "models/m");
    assert!(store.delete_model("m", &erased).await.unwrap() > 0);
    assert!(matches!(
        store.delete_model("m", &erased).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(trail(&store).await.len(), 5);
}

/// The trail reads newest first, filtered by action and by target (with what lies under it),
/// in pages; the database drew its own user-hash secret.
async fn audit_trail(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    for (name, created) in [("m", 1), ("m2", 2), ("mm", 3)] {
        let record = ModelRecord {
            created_ms: created,
            ..model(name)
        };
        let entry = audit(AuditAction::ModelCreate, &format!("models/{name}"));
        store.create_model(&record, &entry).await.unwrap();
    }
    let item_entry = audit(AuditAction::ItemsUpsert, "models/m/items/x");
    store
        .upsert_items("m", &[item("x", 1.0)], &item_entry)
        .await
        .unwrap();
    let read = |action, target: Option<&str>, before, limit| AuditQuery {
        action,
        target: target.map(str::to_string),
        before,
        limit,
    };
    let all = store
        .audit_trail(&read(None, None, None, 10))
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].entry, item_entry);
    let creates = store
        .audit_trail(&read(Some(AuditAction::ModelCreate), None, None, 10))
        .await
        .unwrap();
    assert_eq!(creates.len(), 3);
    // `models/m` is m and what lies under it, not m2 or mm.
    let about_m = store
        .audit_trail(&read(None, Some("models/m"), None, 10))
        .await
        .unwrap();
    let targets: Vec<_> = about_m.iter().map(|r| r.entry.target.as_str()).collect();
    assert_eq!(targets, ["models/m/items/x", "models/m"]);
    let page = store
        .audit_trail(&read(None, None, Some(all[1].id), 2))
        .await
        .unwrap();
    assert_eq!(page, all[2..4]);
    let secret = store.service_secret("audit_user_hash").await.unwrap();
    assert_eq!(secret.len(), 64, "256 random bits as hex");
    assert!(matches!(
        store.service_secret("nope").await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn session_mutations(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    store
        .create_model(&model("m"), &audit(AuditAction::ModelCreate, "models/m"))
        .await
        .unwrap();
    store.create_session(&session("s1", "u")).await.unwrap();
    assert!(matches!(
        store.create_session(&session("s1", "u")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.session_by_token("hash-s1").await.unwrap().as_deref(),
        Some("s1")
    );

    // Lock, commit an answer with a key; the stored reply is found by the key, byte for byte.
    let mut lock = store.read_for_change("s1").await.unwrap();
    assert_eq!(lock.bank().version, 0);
    assert!(lock.stored_reply("k").await.unwrap().is_none());
    let commit = append(lock.session(), Some("k"));
    lock.commit(&commit).await.unwrap();
    let mut lock = store.read_for_change("s1").await.unwrap();
    assert_eq!(
        lock.stored_reply("k").await.unwrap(),
        Some(StoredReply {
            request_hash: "h1".into(),
            body: "{\"answers\": 1}".into()
        })
    );
    assert!(lock.stored_reply("other").await.unwrap().is_none());
    // A dropped lock rolls back: nothing of an uncommitted change is visible.
    drop(lock);
    let s = store.get_session("s1").await.unwrap().unwrap();
    assert_eq!((s.version, s.answers, s.mean[0]), (2, 1, 1.0));
    let log = store.session_answers("s1").await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].direction, DVector::from_vec(vec![1.0, 2.0]));
    // A commit that does not advance the version by one, or reuses a key, is refused whole.
    let lock = store.read_for_change("s1").await.unwrap();
    let mut stale = append(lock.session(), Some("k"));
    stale.answer.as_mut().unwrap().row.seq = 2;
    assert!(matches!(
        lock.commit(&stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_session("s1").await.unwrap().unwrap().version, 2);
    assert!(matches!(
        store.read_for_change("nope").await.err(),
        Some(StoreError::NotFound(_))
    ));
    // Optimistic concurrency (PostgreSQL reads without locking): of two updates read at the same
    // version, the second to commit is refused whole.
    if store.dialect() == Dialect::Postgres {
        let first = store.read_for_change("s1").await.unwrap();
        let second = store.read_for_change("s1").await.unwrap();
        let mut commit = append(first.session(), Some("k2"));
        commit.answer.as_mut().unwrap().row.seq = 2;
        first.commit(&commit).await.unwrap();
        let mut late = append(second.session(), Some("k3"));
        late.answer.as_mut().unwrap().row.seq = 2;
        assert!(matches!(
            second.commit(&late).await,
            Err(StoreError::Changed)
        ));
        let log = store.session_answers("s1").await.unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].idempotency_key.as_deref(), Some("k2"));
        assert_eq!(store.get_session("s1").await.unwrap().unwrap().version, 3);
    } else {
        // SQLite: the update holds the write lock, so the same sequence is serial.
        let lock = store.read_for_change("s1").await.unwrap();
        let mut commit = append(lock.session(), Some("k2"));
        commit.answer.as_mut().unwrap().row.seq = 2;
        lock.commit(&commit).await.unwrap();
    }
    // The update sees the log; the profile is upserted with a growing version.
    let mut lock = store.read_for_change("s1").await.unwrap();
    assert_eq!(lock.answers().await.unwrap().len(), 2);
    let mut commit = append(lock.session(), None);
    commit.answer.as_mut().unwrap().row.seq = 3;
    lock.commit(&commit).await.unwrap();
    let profile = store.get_profile("u", "m").await.unwrap().unwrap();
    assert_eq!((profile.version, profile.answers), (3, 3));
    // Every kind of answer, the question of three items and the session's settings read back as
    // written.
    let kinds: Vec<LoggedAnswer> = store
        .session_answers("s1")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.answer)
        .collect();
    assert_eq!(kinds, (1..=3).map(answer_of_kind).collect::<Vec<_>>());
    let stored = store.get_session("s1").await.unwrap().unwrap();
    assert_eq!(stored.question, commit.session.question);
    assert_eq!(stored.settings, commit.session.settings);
    // A change resumed from what the caller last committed, without reading it, applies only
    // while neither the session nor its model's bank moved since.
    let bank = store.read_for_change("s1").await.unwrap().bank();
    let mut earlier = commit.session.clone();
    earlier.version -= 1;
    let resumed = store
        .change_as_last_committed(earlier.clone(), bank)
        .await
        .unwrap();
    assert!(matches!(
        resumed.commit(&append(&earlier, None)).await,
        Err(StoreError::Changed)
    ));
    let resumed = store
        .change_as_last_committed(stored.clone(), bank)
        .await
        .unwrap();
    resumed.commit(&append(&stored, None)).await.unwrap();
    let stored = store.get_session("s1").await.unwrap().unwrap();
    assert_eq!(stored.answers, 4);
    let upserted = audit(AuditAction::ItemsUpsert, "models/m");
    let bumped = store
        .upsert_items("m", &[item("w", 1.0)], &upserted)
        .await
        .unwrap();
    let resumed = store
        .change_as_last_committed(stored.clone(), bank)
        .await
        .unwrap();
    assert!(matches!(
        resumed.commit(&append(&stored, None)).await,
        Err(StoreError::Changed)
    ));
    let current = BankStamp {
        version: bumped,
        ..bank
    };
    let resumed = store
        .change_as_last_committed(stored.clone(), current)
        .await
        .unwrap();
    resumed.commit(&append(&stored, None)).await.unwrap();
    assert_eq!(store.session_answers("s1").await.unwrap().len(), 5);
    assert_eq!(
        store.sessions_by_status().await.unwrap(),
        vec![("active".to_string(), 1)]
    );
    assert!(
        store
            .delete_user("u", &audit(AuditAction::UserErase, "users/h"))
            .await
            .unwrap()
            >= 4
    );
    assert!(store.get_session("s1").await.unwrap().is_none());
    assert!(store.get_profile("u", "m").await.unwrap().is_none());
}

async fn api_keys(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    let key = ApiKeyRecord {
        id: "k1".into(),
        name: "frontend".into(),
        role: "frontend".into(),
        key_hash: "abc".into(),
        created_ms: 5,
        revoked_ms: None,
        rate_per_s: Some(5.0),
        burst: Some(10),
        expires_ms: Some(1_000_000),
        rotated_from: None,
        models: Some(vec!["m1".into(), "m2".into()]),
    };
    store
        .create_key(&key, &audit(AuditAction::KeyCreate, "keys/k1"))
        .await
        .unwrap();
    assert_eq!(store.key_by_hash("abc").await.unwrap(), Some(key.clone()));
    assert_eq!(store.key_by_id("k1").await.unwrap(), Some(key.clone()));
    assert_eq!(store.key_by_id("nope").await.unwrap(), None);
    let rotated = audit(AuditAction::KeyRotate, "keys/k1");

    // Rotation shortens the old key's life (never lengthens it) and adds the successor at once.
    let successor = ApiKeyRecord {
        id: "k2".into(),
        key_hash: "def".into(),
        expires_ms: None,
        rotated_from: Some("k1".into()),
        ..key.clone()
    };
    assert!(
        store
            .rotate_key("k1", &successor, 500, &rotated)
            .await
            .unwrap()
    );
    assert_eq!(
        store.key_by_hash("abc").await.unwrap().unwrap().expires_ms,
        Some(500)
    );
    assert_eq!(
        store.key_by_hash("def").await.unwrap(),
        Some(successor.clone())
    );
    let later = ApiKeyRecord {
        id: "k3".into(),
        key_hash: "ghi".into(),
        ..successor.clone()
    };
    assert!(
        store
            .rotate_key("k1", &later, 9_000, &rotated)
            .await
            .unwrap()
    );
    assert_eq!(
        store.key_by_hash("abc").await.unwrap().unwrap().expires_ms,
        Some(500)
    );
    let orphan = ApiKeyRecord {
        id: "k4".into(),
        key_hash: "jkl".into(),
        ..successor.clone()
    };
    assert!(
        !store
            .rotate_key("nope", &orphan, 1, &rotated)
            .await
            .unwrap()
    );
    assert!(
        store.key_by_hash("jkl").await.unwrap().is_none(),
        "nothing changes"
    );

    let revoked = |at_ms| AuditEntry {
        at_ms,
        ..audit(AuditAction::KeyRevoke, "keys/k1")
    };
    assert!(store.revoke_key("k1", &revoked(9)).await.unwrap());
    assert!(!store.revoke_key("k1", &revoked(10)).await.unwrap());
    assert!(store.key_by_hash("abc").await.unwrap().is_none());
    let keys = store.list_keys().await.unwrap();
    assert_eq!(
        keys.iter().find(|k| k.id == "k1").unwrap().revoked_ms,
        Some(9)
    );
    let actions: Vec<_> = trail(&store).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        actions,
        [
            AuditAction::KeyCreate,
            AuditAction::KeyRotate,
            AuditAction::KeyRotate,
            AuditAction::KeyRevoke
        ]
    );
}

/// Prior versions: created with the model, replaced only from the version read (bumping the bank
/// version so caches reload), all kept; finished logs are the latest finished session per user.
async fn prior_versions(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = store(&db).await;
    let created = audit(AuditAction::ModelCreate, "models/m");
    store.create_model(&model("m"), &created).await.unwrap();
    let priors = store.model_priors("m").await.unwrap();
    assert_eq!(priors.len(), 1);
    assert_eq!(
        (priors[0].version, &priors[0].mean, &priors[0].cov),
        (1, &model("m").prior_mean, &model("m").prior_cov)
    );
    let next = PriorRecord {
        version: 2,
        mean: DVector::from_vec(vec![1.0, 2.0]),
        cov: DMatrix::identity(2, 2) * 0.5,
        users: 3,
        created_ms: 9,
    };
    let refit = audit(AuditAction::PriorRefit, "models/m");
    store.set_prior("m", 1, &next, &refit).await.unwrap();
    let stored = store.get_model("m").await.unwrap().unwrap();
    assert_eq!((stored.prior_version, stored.bank_version), (2, 1));
    assert_eq!(
        (&stored.prior_mean, &stored.prior_cov),
        (&next.mean, &next.cov)
    );
    assert!(matches!(
        store.set_prior("m", 1, &next, &refit).await,
        Err(StoreError::Changed)
    ));
    assert!(matches!(
        store.set_prior("nope", 1, &next, &refit).await,
        Err(StoreError::NotFound(_))
    ));
    let priors = store.model_priors("m").await.unwrap();
    assert_eq!(priors.len(), 2);
    assert_eq!(priors[1], next);
    assert_eq!(trail(&store).await.len(), 2, "created and refitted once");

    // u finishes s1 then s2 (one answer each); v's session is still active.
    for (id, user, finish) in [("s1", "u", true), ("s2", "u", true), ("s3", "v", false)] {
        store.create_session(&session(id, user)).await.unwrap();
        let lock = store.read_for_change(id).await.unwrap();
        let commit = append(lock.session(), None);
        lock.commit(&commit).await.unwrap();
        if finish {
            let lock = store.read_for_change(id).await.unwrap();
            let mut finished = lock.session().clone();
            finished.version += 1;
            finished.status = SessionStatus::Finished;
            finished.updated_ms = if id == "s1" { 10 } else { 20 };
            let commit = SessionCommit {
                session: finished,
                answer: None,
                profile: None,
            };
            lock.commit(&commit).await.unwrap();
        }
    }
    let logs = store.finished_logs("m").await.unwrap();
    assert_eq!(logs.len(), 1, "the latest finished session of each user");
    assert_eq!(
        (logs[0].user_id.as_str(), logs[0].session_id.as_str()),
        ("u", "s2")
    );
    assert_eq!(logs[0].answers.len(), 1);
    assert_eq!(
        store
            .get_session("s3")
            .await
            .unwrap()
            .unwrap()
            .prior_version,
        1
    );
}

crate::on_both_stores!(
    models_and_items,
    session_mutations,
    api_keys,
    audit_trail,
    prior_versions
);

/// Every PostgreSQL connection of the service runs at the configured `synchronous_commit`,
/// whatever the server's default: what an acknowledged answer survives does not depend on it.
#[tokio::test]
async fn postgres_connections_use_the_configured_synchronous_commit() {
    use elicit::store::sql::SynchronousCommit;
    use sqlx::Row;
    let db = TestDatabase::new(Backend::Postgres).await;
    for (level, shown) in [
        (SynchronousCommit::On, "on"),
        (SynchronousCommit::Local, "local"),
    ] {
        let settings = PoolSettings {
            synchronous_commit: level,
            ..PoolSettings::default()
        };
        let store = SqlStore::connect(&db.url, settings).await.unwrap();
        let row = sqlx::query("SHOW synchronous_commit")
            .fetch_one(&store.pool())
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), shown);
        store.close().await;
    }
}
