//! The population prior learned from finished sessions (`prior:refit`) and put back
//! (`prior:restore`): versions, sessions that keep the prior they started with, shrinkage when
//! sessions are few.

use serde_json::{Value, json};

use crate::harness::{
    Backend, TestDatabase, TestServer, posterior_distance, question_item, replayed_posterior,
};

/// Runs user `user` with coefficients `lambda` through `answers` questions; finishes unless
/// `finish` is false. Returns the session id and its (a, b, choice) log.
async fn onboard(
    server: &TestServer,
    model: &str,
    user: &str,
    features: &[Vec<f64>],
    lambda: &[f64],
    answers: usize,
    finish: bool,
) -> (String, Vec<(usize, usize, &'static str)>) {
    let (status, created) = server
        .post(
            "/v1/sessions",
            // A session left under way may ask more than it has been answered so far.
            &json!({"model": model, "user_id": user, "max_questions": if finish { answers } else { answers + 10 }}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let mut log = Vec::new();
    for n in 0..answers {
        let (choice, body) = server
            .answer_truthfully(&id, &question, features, lambda, &format!("{user}-{n}"))
            .await;
        log.push((
            question_item(&question, 0),
            question_item(&question, 1),
            choice,
        ));
        question = body["question"].clone();
        if question.is_null() {
            break;
        }
    }
    if finish {
        let (status, body) = server
            .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    (id, log)
}

fn prior_of(view: &Value) -> (Vec<f64>, Vec<Vec<f64>>) {
    serde_json::from_value(json!([view["prior"]["mean"], view["prior"]["cov"]])).unwrap()
}

async fn a_refit_learns_the_population_and_a_restore_puts_it_back(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = server.create_model_with_items("pop", 2, 14, 5).await;
    let (status, body) = server.post("/v1/models/pop/prior:refit", &json!({})).await;
    assert_eq!(status, 409, "no finished sessions yet: {body}");
    assert_eq!(body["type"], "https://elicit.dev/problems/not-now");
    let (status, body) = server
        .post("/v1/models/pop/prior:restore", &json!({}))
        .await;
    assert_eq!(status, 409, "nothing to restore yet: {body}");

    // A session under way before the refit.
    let early_lambda = [1.0, -1.0];
    let (early, mut early_log) =
        onboard(&server, "pop", "early", &features, &early_lambda, 3, false).await;
    // Thirty users who all like the first dimension more than the second.
    for u in 0..30 {
        let t = u as f64;
        let lambda = [2.0 + 0.5 * t.sin(), 1.0 + 0.5 * t.cos()];
        onboard(
            &server,
            "pop",
            &format!("u{u}"),
            &features,
            &lambda,
            8,
            true,
        )
        .await;
    }
    let (_, before) = server.get("/v1/models/pop").await;
    assert_eq!(before["prior_version"], 1);

    let (status, refit) = server.post("/v1/models/pop/prior:refit", &json!({})).await;
    assert_eq!(status, 200, "{refit}");
    assert_eq!(refit["prior_version"], 2);
    assert_eq!(refit["previous_version"], 1);
    assert_eq!(
        refit["users"], 30,
        "the latest finished session of each user"
    );
    let (mean, cov) = prior_of(&refit);
    assert!(
        mean[0] > 0.5 && mean[1] > 0.2 && mean[0] > mean[1],
        "{mean:?}"
    );
    assert!(cov[0][0] > 0.0 && cov[1][1] > 0.0);
    let (_, model) = server.get("/v1/models/pop").await;
    assert_eq!(model["prior_version"], 2);
    assert_eq!(prior_of(&model), (mean.clone(), cov.clone()));

    // The session under way keeps its prior: it finishes exactly as a replay from prior 1.
    let (status, rest) = server.get(&format!("/v1/sessions/{early}/question")).await;
    assert_eq!(status, 200);
    let mut question = rest["question"].clone();
    for n in 3..5 {
        let (choice, body) = server
            .answer_truthfully(
                &early,
                &question,
                &features,
                &early_lambda,
                &format!("early-{n}"),
            )
            .await;
        early_log.push((
            question_item(&question, 0),
            question_item(&question, 1),
            choice,
        ));
        question = body["question"].clone();
    }
    let (_, view) = server.get(&format!("/v1/sessions/{early}")).await;
    assert_eq!(view["prior_version"], 1);
    let replayed = replayed_posterior(&features, &early_log);
    assert!(
        posterior_distance(&view["posterior"], &replayed) < 1e-9,
        "{view}"
    );

    // New sessions start from the refitted prior; profiles say which prior they came from.
    let (_, created) = server
        .post("/v1/sessions", &json!({"model": "pop", "user_id": "late"}))
        .await;
    assert_eq!(created["prior_version"], 2);
    assert_eq!(created["posterior"]["mean"], json!(mean));
    let (_, profile) = server.get("/v1/users/u0/profile?model=pop").await;
    assert_eq!(profile["prior_version"], 1, "{profile}");
    // A user without a profile is scored with the refitted population prior.
    let (status, scored) = server
        .post(
            "/v1/score",
            &json!({"model": "pop", "user_id": "stranger", "candidates": [{"id": "x", "features": [1.0, 0.0]}]}),
        )
        .await;
    assert_eq!(status, 200, "{scored}");
    assert_eq!(scored["profile"]["source"], "population");
    assert!((scored["scores"][0]["mean"].as_f64().unwrap() - mean[0]).abs() < 1e-12);

    // A restore puts back the exact previous prior, as a new version; again, the refitted one.
    let (status, restored) = server
        .post("/v1/models/pop/prior:restore", &json!({}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["prior_version"], 3);
    assert_eq!(prior_of(&restored), prior_of(&before));
    let (_, again) = server
        .post("/v1/models/pop/prior:restore", &json!({}))
        .await;
    assert_eq!(again["prior_version"], 4);
    assert_eq!(prior_of(&again), (mean, cov));

    // Each change is in the audit trail.
    let (_, trail) = server.get("/v1/audit?target=models/pop").await;
    let actions: Vec<&str> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .take(3)
        .collect();
    assert_eq!(actions, ["prior.restore", "prior.restore", "prior.refit"]);
    server.stop().await;
}

/// One finished session at J = 3 moves the prior a little and does not collapse it.
async fn a_refit_from_few_sessions_shrinks_towards_the_current_prior(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = server.create_model_with_items("few", 3, 10, 9).await;
    onboard(
        &server,
        "few",
        "only",
        &features,
        &[3.0, -2.0, 1.0],
        6,
        true,
    )
    .await;
    let (status, refit) = server.post("/v1/models/few/prior:refit", &json!({})).await;
    assert_eq!(status, 200, "{refit}");
    let (mean, cov) = prior_of(&refit);
    let cov = nalgebra::DMatrix::from_fn(3, 3, |r, c| cov[r][c]);
    let smallest = cov.clone().symmetric_eigen().eigenvalues.min();
    assert!(smallest > 0.5, "no collapse: eigenvalues {cov}");
    let moved = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
    assert!(
        moved > 0.0 && moved < 1.0,
        "a small move towards the user: {mean:?}"
    );
    // Without shrinkage the single user's posterior is the prior: far narrower.
    let (_, unshrunk) = server
        .post("/v1/models/few/prior:refit", &json!({"shrinkage": 0}))
        .await;
    let (_, cov0) = prior_of(&unshrunk);
    assert!(cov0[0][0] < cov[(0, 0)], "{cov0:?}");
    for bad in [
        json!({"iterations": 0}),
        json!({"iterations": 2.5}),
        json!({"shrink": 1}),
    ] {
        let (status, body) = server.post("/v1/models/few/prior:refit", &bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let malformed = server
        .client
        .post(server.url("/v1/models/few/prior:refit"))
        .header("content-type", "application/json")
        .body("{\"iterations\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    server.stop().await;
}

/// `elicit fit --model NAME --target URL`: the learned items and prior become a service model.
async fn a_fit_loads_into_a_model(backend: Backend) {
    use elicit::eval::learn::{self, ComparisonSet, FitOptions};
    use elicit::model::basis::{BasisOptions, Comparison};
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    // Two camps of users over eight items: even users prefer lower ids, odd users higher ones.
    let mut set = ComparisonSet {
        users: (0..20).map(|u| format!("u{u}")).collect(),
        items: (0..8).map(|i| format!("movie-{i}")).collect(),
        comparisons: Vec::new(),
    };
    for user in 0..20 {
        for a in 0..8 {
            for b in a + 1..8 {
                let (winner, loser) = if user % 2 == 0 { (a, b) } else { (b, a) };
                set.comparisons.push(Comparison {
                    user,
                    winner,
                    loser,
                });
            }
        }
    }
    let options = FitOptions {
        basis: BasisOptions {
            dims: 2,
            epochs: 100,
            ..BasisOptions::default()
        },
        held_out: 0.0,
    };
    let fitted = learn::fit(&set, &options, |_, _| {}).unwrap();
    fitted
        .load_into(&server.base, crate::harness::ADMIN_KEY, "learned")
        .await
        .unwrap();
    let (status, model) = server.get("/v1/models/learned").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["dimensions"], json!(["f1", "f2"]));
    let served: Vec<f64> = serde_json::from_value(model["prior"]["mean"].clone()).unwrap();
    for (served, fitted) in served.iter().zip(fitted.prior.mean().iter()) {
        // JSON numbers round-trip to within the last digit.
        assert!((served - fitted).abs() <= 1e-12 * fitted.abs().max(1.0));
    }
    let (_, items) = server.get("/v1/models/learned/items").await;
    assert_eq!(items["items"].as_array().unwrap().len(), 8);
    server.stop().await;
}

crate::on_both_stores!(
    a_fit_loads_into_a_model,
    a_refit_learns_the_population_and_a_restore_puts_it_back,
    a_refit_from_few_sessions_shrinks_towards_the_current_prior
);
