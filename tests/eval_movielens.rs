//! The evaluator's acceptance on real users: MovieLens test users (`datasets/movielens`, shipped, or
//! `ELICIT_MOVIELENS_DIR`), isotropic prior. BALD must beat random by more than two standard
//! errors at k = 10 and k = 30 and reach 0.69 and 0.72 (a plain numpy ADF + BALD: 0.697 / 0.727;
//! random 0.653 / 0.702; ceiling 0.766).

use elicit::eval::{self, EqualPairs, EvalOptions, PriorKind, data::Dataset};
use elicit::model::kway::AnswerFormat;
use elicit::model::{NoiseModel, Strategy, UpdateMethod};

/// The protocol of BENCHMARKS.md's MovieLens section: test users, 30 questions, BALD and random,
/// isotropic prior, seed 0.
fn test_options() -> EvalOptions {
    EvalOptions {
        split: Some("test".into()),
        questions: 30,
        strategies: vec![Strategy::Bald, Strategy::Random],
        method: UpdateMethod::Adf,
        seed: 0,
        prior: PriorKind::Isotropic,
        noise: NoiseModel::default(),
        max_items_per_user: 200,
        max_scored_pairs: 2000,
        equal_pairs: EqualPairs::Exclude,
        choices: 2,
        answer: Default::default(),
        targets: None,
    }
}

#[test]
fn bald_beats_random_on_movielens_test_users() {
    let dir = std::env::var("ELICIT_MOVIELENS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/movielens")
        });
    let dataset =
        Dataset::load(&dir.join("items.csv"), &dir.join("ratings.csv")).unwrap_or_else(|e| {
            panic!(
                "the MovieLens data is needed at {} (or ELICIT_MOVIELENS_DIR): {e}",
                dir.display()
            )
        });
    let options = test_options();
    let prior = eval::train_prior(&dataset, &options).unwrap();
    let tasks = eval::tasks(&dataset, &options);
    assert_eq!(tasks.len(), 302);
    let report = eval::evaluate(&dataset, &tasks, &prior, &options, |t, s| {
        eval::run_in_process(&dataset, t, &prior, s, &options)
    })
    .unwrap();
    let (bald, random) = (&report.curves["bald"], &report.curves["random"]);
    for k in [10, 30] {
        let (b, r) = (bald[k - 1], random[k - 1]);
        let gap_se = (b.se * b.se + r.se * r.se).sqrt();
        assert!(
            b.accuracy - r.accuracy > 2.0 * gap_se,
            "k={k}: bald {b:?} vs random {r:?}"
        );
    }
    assert!(bald[9].accuracy >= 0.69, "bald k=10: {:?}", bald[9]);
    assert!(bald[29].accuracy >= 0.72, "bald k=30: {:?}", bald[29]);
    assert!(
        (report.ceiling.accuracy - 0.766).abs() < 0.02,
        "ceiling {:?}",
        report.ceiling
    );

    // Pick one of 4, answered with the highest-rated shown movie: measured 0.697 after 6
    // questions, pairwise BALD's figure after 10 (BENCHMARKS.md), and informative 4-sets beat
    // random ones.
    let four = EvalOptions {
        choices: 4,
        answer: Default::default(),
        ..options.clone()
    };
    let sets = eval::evaluate(&dataset, &tasks, &prior, &four, |t, s| {
        eval::run_in_process(&dataset, t, &prior, s, &four)
    })
    .unwrap();
    let (four_bald, four_random) = (&sets.curves["bald"], &sets.curves["random"]);
    assert!(
        four_bald[5].accuracy >= bald[9].accuracy - 0.01,
        "4-way k=6 {:?} vs pairs k=10 {:?}",
        four_bald[5],
        bald[9]
    );
    assert!(four_bald[9].accuracy > four_random[9].accuracy + 0.01);

    // Full rankings of 4, derived from the ratings (the order would stop at equal ratings, but
    // like the pairs a set never holds two equally rated movies): measured 0.680 after 3
    // questions (picks: 0.665) and 0.700 after 5, pairwise BALD's k = 10 figure (BENCHMARKS.md).
    // The "by question 3" is not met on these users: below the top of a set a 5-star
    // rating's order says little.
    let ranked = EvalOptions {
        choices: 4,
        answer: AnswerFormat::Rank,
        ..options.clone()
    };
    let rankings = eval::evaluate(&dataset, &tasks, &prior, &ranked, |t, s| {
        eval::run_in_process(&dataset, t, &prior, s, &ranked)
    })
    .unwrap();
    let rank_bald = &rankings.curves["bald"];
    for k in [2, 4] {
        assert!(
            rank_bald[k].accuracy > four_bald[k].accuracy + 0.005,
            "k={}: rankings {:?} vs picks {:?}",
            k + 1,
            rank_bald[k],
            four_bald[k]
        );
    }
    assert!(
        rank_bald[4].accuracy >= bald[9].accuracy - 0.005,
        "rankings k=5 {:?} vs pairs k=10 {:?}",
        rank_bald[4],
        bald[9]
    );
}

/// `--targets`: questions never show a target item and accuracy is measured on pairs among them.
#[test]
fn target_items_are_never_asked_and_are_what_is_scored() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/movielens");
    let dataset = Dataset::load(&dir.join("items.csv"), &dir.join("ratings.csv")).unwrap();
    let targets = dataset.item_set(&dir.join("targets.csv")).unwrap();
    assert_eq!(targets.len(), 278);
    let options = EvalOptions {
        questions: 10,
        strategies: vec![Strategy::Bald],
        targets: Some(targets.clone()),
        ..test_options()
    };
    let tasks = eval::tasks(&dataset, &options);
    assert!(tasks.len() > 250, "{} users", tasks.len());
    for task in &tasks {
        let is_target = |i: usize| targets.contains(&task.items[i]);
        let askable = task.askable.as_ref().unwrap();
        assert!(askable.iter().all(|&i| !is_target(i)));
        assert_eq!(askable.len() + task.targets.len(), task.items.len());
        assert!(
            task.scored
                .iter()
                .all(|&(w, l)| is_target(w) && is_target(l))
        );
    }
}
