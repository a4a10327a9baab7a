//! A synthetic ratings data set whose users follow the model (with noise), shared by the
//! evaluator's tests.

use std::io::Write;
use std::path::PathBuf;

use elicit::eval::{EqualPairs, EvalOptions, PriorKind};
use elicit::model::{NoiseModel, Strategy, UpdateMethod};

/// Deterministic N(0, 1) draws.
struct Normal(u64);

impl Normal {
    fn next(&mut self) -> f64 {
        let mut uniform = || {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos()
    }
}

/// Writes items.csv and ratings.csv: 150 items (J = 4), 80 users (40 train, 40 test) who rate 50
/// items each with half-star ratings of λᵀφ plus noise.
pub fn write_dataset(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Normal(0x2545F4914F6CDD1D);
    let (items, j) = (150, 4);
    let features: Vec<Vec<f64>> = (0..items)
        .map(|_| (0..j).map(|_| rng.next()).collect())
        .collect();
    let items_path = dir.join("items.csv");
    let mut f = std::fs::File::create(&items_path).unwrap();
    writeln!(f, "item_id,f1,f2,f3,f4").unwrap();
    for (i, phi) in features.iter().enumerate() {
        writeln!(
            f,
            "m{i},{}",
            phi.iter()
                .map(|v| format!("{v:.6}"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .unwrap();
    }
    let ratings_path = dir.join("ratings.csv");
    let mut f = std::fs::File::create(&ratings_path).unwrap();
    writeln!(f, "user_id,item_id,rating,split").unwrap();
    for u in 0..80 {
        // A population with a shared taste (so a train-split prior helps) and individual ones.
        let lambda: Vec<f64> = [1.0, -1.0, 0.5, 0.0]
            .iter()
            .map(|m| m + 1.2 * rng.next())
            .collect();
        let split = if u < 40 { "train" } else { "test" };
        for k in 0..50 {
            let i = (u * 37 + k * 11) % items;
            let utility: f64 = features[i]
                .iter()
                .zip(&lambda)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                + 0.7 * rng.next();
            let rating = (2.0 * (3.0 + utility / 2.0)).round().clamp(1.0, 10.0) / 2.0;
            writeln!(f, "u{u},m{i},{rating},{split}").unwrap();
        }
    }
    (items_path, ratings_path)
}

pub fn options(strategies: Vec<Strategy>) -> EvalOptions {
    EvalOptions {
        split: Some("test".into()),
        questions: 20,
        strategies: strategies.into_iter().collect(),
        method: UpdateMethod::Adf,
        seed: 7,
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
