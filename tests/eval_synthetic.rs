//! `elicit eval` on a synthetic ratings data set whose users follow the model (with noise).

#[path = "support/synthetic.rs"]
mod synthetic;

use elicit::eval::{self, EvalOptions, PriorKind, data::Dataset};
use elicit::model::Strategy;
use synthetic::{options, write_dataset};

#[test]
fn questions_chosen_by_information_beat_random_ones_on_real_shaped_data() {
    let dir = std::env::temp_dir().join(format!("elicit-eval-{}", std::process::id()));
    let (items, ratings) = write_dataset(&dir);
    let dataset = Dataset::load(&items, &ratings).unwrap();
    assert_eq!(dataset.dimensions, ["f1", "f2", "f3", "f4"]);
    let options = options(vec![Strategy::Bald, Strategy::Random]);
    let prior = eval::train_prior(&dataset, &options).unwrap();
    let tasks = eval::tasks(&dataset, &options);
    assert_eq!(tasks.len(), 40, "only test users are evaluated");
    for task in &tasks {
        // Held-out pairs are never candidates.
        let run = eval::run_in_process(&dataset, task, &prior, Strategy::Bald, &options).unwrap();
        assert_eq!(run.len(), 20);
    }
    let report = eval::evaluate(&dataset, &tasks, &prior, &options, |t, s| {
        eval::run_in_process(&dataset, t, &prior, s, &options)
    })
    .unwrap();
    let (bald, random) = (&report.curves["bald"], &report.curves["random"]);
    assert_eq!(
        report.baseline.accuracy, 0.5,
        "a zero prior mean orders nothing"
    );
    assert!(bald[19].accuracy > 0.8, "{:?}", bald[19]);
    assert!(
        bald[9].accuracy > random[9].accuracy,
        "bald {:?} random {:?}",
        bald[9],
        random[9]
    );
    assert!(report.ceiling.accuracy >= bald[19].accuracy - 0.02);
    // The same seed gives the same report.
    let again = eval::evaluate(&dataset, &tasks, &prior, &options, |t, s| {
        eval::run_in_process(&dataset, t, &prior, s, &options)
    })
    .unwrap();
    assert_eq!(again.curves["bald"], report.curves["bald"]);

    // The train prior starts above chance.
    let train = EvalOptions {
        prior: PriorKind::Train,
        ..options.clone()
    };
    let prior = eval::train_prior(&dataset, &train).unwrap();
    let baseline = tasks
        .iter()
        .map(|t| t.accuracy(&dataset, prior.mean()))
        .sum::<f64>()
        / tasks.len() as f64;
    assert!(
        baseline > 0.5 || prior.mean().norm() < 0.3,
        "train prior mean {}",
        prior.mean()
    );

    let svg = dir.join("curve.svg");
    eval::plot::write_svg(&report, "synthetic", &svg).unwrap();
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}
