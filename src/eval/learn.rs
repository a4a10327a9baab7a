//! `elicit fit`: learn item features and a population prior from many users' comparisons
//! (`user_id,item_a,item_b,winner[,split…]`), with [`crate::model::basis`] and
//! [`crate::model::population`].

use std::collections::HashMap;
use std::path::Path;

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::model::Posterior;
use crate::model::basis::{self, Basis, BasisOptions, Comparison};
use crate::model::population::{EmOptions, em_prior};

/// Comparisons read from a CSV file, with the ids behind the indices.
#[derive(Debug, Clone, Default)]
pub struct ComparisonSet {
    pub users: Vec<String>,
    pub items: Vec<String>,
    pub comparisons: Vec<Comparison>,
}

#[derive(Debug, Deserialize)]
struct Row {
    user_id: String,
    item_a: String,
    item_b: String,
    winner: String,
    #[serde(default)]
    split: Option<String>,
}

impl ComparisonSet {
    /// Reads `user_id,item_a,item_b,winner[,split]` (other columns are ignored); with a split
    /// column only `train` rows are kept.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut reader =
            csv::Reader::from_path(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut set = Self::default();
        let (mut users, mut items) = (HashMap::new(), HashMap::new());
        let index = |ids: &mut Vec<String>, map: &mut HashMap<String, usize>, id: &str| {
            *map.entry(id.to_string()).or_insert_with(|| {
                ids.push(id.to_string());
                ids.len() - 1
            })
        };
        for (line, row) in reader.deserialize::<Row>().enumerate() {
            let row =
                row.map_err(|e| anyhow::anyhow!("{} row {}: {e}", path.display(), line + 2))?;
            if row.split.as_deref().is_some_and(|s| s != "train") {
                continue;
            }
            let loser = if row.winner == row.item_a {
                &row.item_b
            } else if row.winner == row.item_b {
                &row.item_a
            } else {
                anyhow::bail!(
                    "{} row {}: the winner '{}' is neither item",
                    path.display(),
                    line + 2,
                    row.winner
                );
            };
            let comparison = Comparison {
                user: index(&mut set.users, &mut users, &row.user_id),
                winner: index(&mut set.items, &mut items, &row.winner),
                loser: index(&mut set.items, &mut items, loser),
            };
            set.comparisons.push(comparison);
        }
        anyhow::ensure!(
            !set.comparisons.is_empty(),
            "{}: no comparisons",
            path.display()
        );
        Ok(set)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    pub basis: BasisOptions,
    /// Share of each user's comparisons held out to report accuracy on.
    pub held_out: f64,
}

/// What `elicit fit` learned and how well it predicts.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub users: usize,
    pub items: usize,
    pub comparisons: usize,
    pub dims: usize,
    pub train_accuracy: f64,
    pub held_out_accuracy: f64,
    pub second_moment_share: Vec<f64>,
    /// Per dimension: the item ids at its low and high ends.
    pub extremes: Vec<(Vec<String>, Vec<String>)>,
}

/// A learned basis and prior, with the item ids.
pub struct Fitted {
    pub basis: Basis,
    pub items: Vec<String>,
    pub prior: Posterior,
    pub report: FitReport,
}

/// A prior file (`--prior-out`, read by `elicit eval --prior PATH`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriorFile {
    pub dimensions: Vec<String>,
    pub mean: Vec<f64>,
    pub cov: Vec<Vec<f64>>,
    /// Users it was fitted to.
    pub users: usize,
}

impl PriorFile {
    pub fn new(prior: &Posterior, users: usize) -> Self {
        Self {
            dimensions: (1..=prior.dim()).map(|d| format!("f{d}")).collect(),
            mean: prior.mean().iter().copied().collect(),
            cov: prior
                .cov()
                .row_iter()
                .map(|r| r.iter().copied().collect())
                .collect(),
            users,
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Posterior> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let file: Self = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a prior file: {e}", path.display()))?;
        let j = file.mean.len();
        anyhow::ensure!(
            file.cov.len() == j && file.cov.iter().all(|r| r.len() == j),
            "{}: the covariance is not {j} × {j}",
            path.display()
        );
        let cov = DMatrix::from_fn(j, j, |r, c| file.cov[r][c]);
        Ok(Posterior::new(DVector::from_vec(file.mean), cov)?)
    }
}

/// Fits the basis on all but a seeded `held_out` share of each user's comparisons, then the EM
/// prior of the users' coefficients in the learned basis.
pub fn fit(
    set: &ComparisonSet,
    options: &FitOptions,
    progress: impl FnMut(usize, f64),
) -> anyhow::Result<Fitted> {
    let mut rng = StdRng::seed_from_u64(options.basis.seed);
    let mut shuffled = set.comparisons.clone();
    shuffled.shuffle(&mut rng);
    let held = (shuffled.len() as f64 * options.held_out).round() as usize;
    let (held_out, train) = shuffled.split_at(held);
    let mut fitted = basis::fit_basis(
        train,
        set.users.len(),
        set.items.len(),
        &options.basis,
        progress,
    )?;
    let mut by_user: Vec<Vec<DVector<f64>>> = vec![Vec::new(); set.users.len()];
    for c in train {
        let d = fitted.features.row(c.winner) - fitted.features.row(c.loser);
        by_user[c.user].push(d.transpose());
    }
    let j = options.basis.dims;
    let em = em_prior(
        &by_user,
        &Posterior::isotropic(j, 1.0)?,
        EmOptions::default(),
    )?;
    // The fit's normal form makes the point estimates' second moment I; the EM prior also counts
    // each user's uncertainty, and its spread is what a new user's N(0, I) should match (module
    // docs of `basis`), so the basis is re-expressed in its terms.
    let second_moment = em.cov() + em.mean() * em.mean().transpose();
    let map = fitted.align(&second_moment, em.mean());
    let prior = Posterior::new(&map * em.mean(), &map * em.cov() * map.transpose())?;
    let extremes = (0..j)
        .map(|d| {
            let (low, high) = basis::extremes(&fitted, d, 5);
            let ids = |v: Vec<usize>| v.into_iter().map(|i| set.items[i].clone()).collect();
            (ids(low), ids(high))
        })
        .collect();
    let report = FitReport {
        users: set.users.len(),
        items: set.items.len(),
        comparisons: set.comparisons.len(),
        dims: j,
        train_accuracy: fitted.accuracy(train),
        held_out_accuracy: fitted.accuracy(held_out),
        second_moment_share: fitted.second_moment_share.clone(),
        extremes,
    };
    Ok(Fitted {
        basis: fitted,
        items: set.items.clone(),
        prior,
        report,
    })
}

impl Fitted {
    /// `item_id,f1..fJ`, the format `elicit eval --items` reads.
    pub fn write_items(&self, path: &Path) -> anyhow::Result<()> {
        let mut writer = csv::Writer::from_path(path)?;
        let j = self.basis.features.ncols();
        let mut header = vec!["item_id".to_string()];
        header.extend((1..=j).map(|d| format!("f{d}")));
        writer.write_record(&header)?;
        for (i, id) in self.items.iter().enumerate() {
            let mut record = vec![id.clone()];
            record.extend(self.basis.features.row(i).iter().map(|x| format!("{x:.6}")));
            writer.write_record(&record)?;
        }
        writer.flush()?;
        Ok(())
    }

    /// Creates model `name` on the server at `target` with the learned items (dimensions
    /// `f1..fJ`) and the population prior.
    pub async fn load_into(&self, target: &str, api_key: &str, name: &str) -> anyhow::Result<()> {
        let client = crate::client::with_key(api_key, None)?;
        let file = PriorFile::new(&self.prior, self.report.users);
        let definition = serde_json::json!({
            "name": name,
            "dimensions": file.dimensions,
            "prior": {"mean": file.mean, "cov": file.cov},
        });
        let items: Vec<serde_json::Value> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let features: Vec<f64> = self.basis.features.row(i).iter().copied().collect();
                serde_json::json!({"id": id, "features": features})
            })
            .collect();
        super::remote::upload_model(&client, target.trim_end_matches('/'), &definition, &items)
            .await
    }

    pub fn write_prior(&self, path: &Path) -> anyhow::Result<()> {
        let file = PriorFile::new(&self.prior, self.report.users);
        std::fs::write(path, serde_json::to_string_pretty(&file)?)?;
        Ok(())
    }
}

/// Item titles by id, from a CSV with a header naming at least `item_id` and `title` (such as
/// `datasets/movielens/item_info.csv`), so that the ends of each learned dimension can be read.
pub fn read_titles(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    #[derive(Deserialize)]
    struct TitleRow {
        item_id: String,
        title: String,
    }
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    reader
        .deserialize::<TitleRow>()
        .enumerate()
        .map(|(line, row)| {
            let row =
                row.map_err(|e| anyhow::anyhow!("{} row {}: {e}", path.display(), line + 2))?;
            Ok((row.item_id, row.title))
        })
        .collect()
}

/// The report as text; items are shown by title where `titles` has one.
pub fn table(report: &FitReport, titles: &HashMap<String, String>) -> String {
    let name = |id: &String| match titles.get(id) {
        Some(title) => format!("{title} [{id}]"),
        None => id.clone(),
    };
    let names = |ids: &[String]| ids.iter().map(name).collect::<Vec<_>>().join("; ");
    let mut out = format!(
        "fit: {} users, {} items, {} comparisons, J = {}\n  pairwise accuracy: train {:.3}, held-out {:.3}\n",
        report.users,
        report.items,
        report.comparisons,
        report.dims,
        report.train_accuracy,
        report.held_out_accuracy
    );
    for (d, ((low, high), share)) in report
        .extremes
        .iter()
        .zip(&report.second_moment_share)
        .enumerate()
    {
        out.push_str(&format!(
            "  f{}: {:.1} % of the population's E‖λ‖²\n    low end:  {}\n    high end: {}\n",
            d + 1,
            share * 100.0,
            names(low),
            names(high)
        ));
    }
    out
}

#[derive(Debug, Deserialize)]
struct RatingRow {
    user_id: String,
    item_id: String,
    rating: f64,
    #[serde(default)]
    split: Option<String>,
}

/// A user, their split, and the items they rated with the ratings.
type RatedBy = (String, Option<String>, Vec<(String, f64)>);

/// Writes `user_id,item_a,item_b,winner,split` from `user_id,item_id,rating[,split]`: for each
/// user, the pairs of items rated differently (higher wins), at most `max_per_user` of them
/// sampled uniformly with a seeded stream, each in a random a/b order. Returns the rows written.
pub fn comparisons_from_ratings(
    ratings: &Path,
    out: &Path,
    max_per_user: usize,
    seed: u64,
) -> anyhow::Result<usize> {
    let mut reader = csv::Reader::from_path(ratings)
        .map_err(|e| anyhow::anyhow!("{}: {e}", ratings.display()))?;
    // Users in the order they first appear, so the output does not depend on hashing.
    let mut users: Vec<RatedBy> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (line, row) in reader.deserialize::<RatingRow>().enumerate() {
        let row =
            row.map_err(|e| anyhow::anyhow!("{} row {}: {e}", ratings.display(), line + 2))?;
        let u = *index.entry(row.user_id.clone()).or_insert_with(|| {
            users.push((row.user_id.clone(), row.split.clone(), Vec::new()));
            users.len() - 1
        });
        users[u].2.push((row.item_id, row.rating));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut writer = csv::Writer::from_path(out)?;
    writer.write_record(["user_id", "item_a", "item_b", "winner", "split"])?;
    let mut written = 0;
    for (user, split, rated) in &users {
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for a in 0..rated.len() {
            for b in a + 1..rated.len() {
                if rated[a].1 != rated[b].1 {
                    pairs.push((a, b));
                }
            }
        }
        pairs.shuffle(&mut rng);
        pairs.truncate(max_per_user);
        for (a, b) in pairs {
            let (a, b) = if rand::RngExt::random::<bool>(&mut rng) {
                (a, b)
            } else {
                (b, a)
            };
            let winner = if rated[a].1 > rated[b].1 { a } else { b };
            writer.write_record([
                user.as_str(),
                rated[a].0.as_str(),
                rated[b].0.as_str(),
                rated[winner].0.as_str(),
                split.as_deref().unwrap_or(""),
            ])?;
            written += 1;
        }
    }
    writer.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped MovieLens titles read by id, quoted commas and all, and name the ends of a
    /// dimension in the text report.
    #[test]
    fn titles_name_the_ends_of_each_dimension() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/movielens/item_info.csv");
        let titles = read_titles(&path).unwrap();
        assert_eq!(titles.len(), 1393);
        assert_eq!(titles["1"], "Toy Story (1995)");
        assert_eq!(titles["11"], "American President, The (1995)");
        let report = FitReport {
            users: 1,
            items: 3,
            comparisons: 2,
            dims: 1,
            train_accuracy: 1.0,
            held_out_accuracy: 1.0,
            second_moment_share: vec![1.0],
            extremes: vec![(vec!["1".into()], vec!["11".into(), "no-title".into()])],
        };
        let text = table(&report, &titles);
        assert!(text.contains("low end:  Toy Story (1995) [1]"), "{text}");
        assert!(
            text.contains("high end: American President, The (1995) [11]; no-title"),
            "{text}"
        );
    }

    /// Ratings → comparisons → fit → files, and the prior file reads back as written.
    #[test]
    fn ratings_become_comparisons_a_fit_and_files() {
        let dir = std::env::temp_dir().join(format!("elicit-learn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ratings = dir.join("ratings.csv");
        let mut text = String::from("user_id,item_id,rating,split\n");
        for u in 0..12 {
            let split = if u < 10 { "train" } else { "test" };
            for i in 0..6 {
                // Half the users like low ids, half high ids; item 5 is always rated 3.
                let rating = if i == 5 {
                    3.0
                } else if u % 2 == 0 {
                    5.0 - i as f64
                } else {
                    1.0 + i as f64
                };
                text.push_str(&format!("u{u},i{i},{rating},{split}\n"));
            }
        }
        std::fs::write(&ratings, text).unwrap();
        let out = dir.join("comparisons.csv");
        let written = comparisons_from_ratings(&ratings, &out, 8, 1).unwrap();
        assert_eq!(written, 12 * 8, "8 of each user's differently rated pairs");
        let set = ComparisonSet::load(&out).unwrap();
        assert_eq!(set.users.len(), 10, "only the train split");
        assert_eq!(set.comparisons.len(), 80);

        let options = FitOptions {
            basis: BasisOptions {
                dims: 1,
                epochs: 200,
                ..BasisOptions::default()
            },
            held_out: 0.0,
        };
        let fitted = fit(&set, &options, |_, _| {}).unwrap();
        assert!(fitted.report.train_accuracy > 0.9, "{:?}", fitted.report);
        fitted.write_items(&dir.join("items.csv")).unwrap();
        fitted.write_prior(&dir.join("prior.json")).unwrap();
        let items = std::fs::read_to_string(dir.join("items.csv")).unwrap();
        assert!(items.starts_with("item_id,f1\n"));
        assert_eq!(items.lines().count(), 1 + set.items.len());
        let prior = PriorFile::load(&dir.join("prior.json")).unwrap();
        assert_eq!(prior.mean(), fitted.prior.mean());
        assert!((prior.cov() - fitted.prior.cov()).amax() < 1e-12);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
