//! Reading an item-features file and a ratings file.

use std::collections::HashMap;
use std::path::Path;

use nalgebra::DMatrix;

/// Items with features and users with their ratings.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Feature names from the items header.
    pub dimensions: Vec<String>,
    pub item_ids: Vec<String>,
    /// Column i is item i's features.
    pub features: DMatrix<f64>,
    pub users: Vec<UserRatings>,
}

/// One user's ratings (higher is better) of dataset items.
#[derive(Debug, Clone)]
pub struct UserRatings {
    pub id: String,
    pub split: Option<String>,
    /// (item index, rating).
    pub ratings: Vec<(usize, f64)>,
}

impl Dataset {
    pub fn dim(&self) -> usize {
        self.features.nrows()
    }

    /// The dataset indices of the item ids listed in `path`, one a line (blank lines and a
    /// header line `item_id` are skipped); an unknown id is an error.
    pub fn item_set(&self, path: &Path) -> anyhow::Result<std::collections::HashSet<usize>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let index: HashMap<&str, usize> = self
            .item_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && *line != "item_id")
            .map(|id| {
                index.get(id).copied().ok_or_else(|| {
                    anyhow::anyhow!("{}: item '{id}' is not in the items file", path.display())
                })
            })
            .collect()
    }

    /// `items`: `item_id,f1..fJ` with a header (any J); `ratings`: `user_id,item_id,rating[,split]`
    /// with a header. Ratings of items missing from `items` are ignored.
    pub fn load(items: &Path, ratings: &Path) -> anyhow::Result<Self> {
        let mut reader = csv::Reader::from_path(items)
            .map_err(|e| anyhow::anyhow!("{}: {e}", items.display()))?;
        let dimensions: Vec<String> = reader
            .headers()?
            .iter()
            .skip(1)
            .map(str::to_string)
            .collect();
        let j = dimensions.len();
        anyhow::ensure!(
            j >= 1,
            "{}: needs item_id and at least one feature column",
            items.display()
        );
        let mut item_ids = Vec::new();
        let mut values = Vec::new();
        for (line, record) in reader.records().enumerate() {
            let record = record?;
            anyhow::ensure!(
                record.len() == j + 1,
                "{} line {}: expected {} columns",
                items.display(),
                line + 2,
                j + 1
            );
            item_ids.push(record[0].to_string());
            for field in record.iter().skip(1) {
                let v: f64 = field.trim().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{} line {}: '{field}' is not a number",
                        items.display(),
                        line + 2
                    )
                })?;
                anyhow::ensure!(
                    v.is_finite(),
                    "{} line {}: non-finite feature",
                    items.display(),
                    line + 2
                );
                values.push(v);
            }
        }
        let features = DMatrix::from_vec(j, item_ids.len(), values);
        let index: HashMap<&str, usize> = item_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();

        let mut reader = csv::Reader::from_path(ratings)
            .map_err(|e| anyhow::anyhow!("{}: {e}", ratings.display()))?;
        let has_split = reader.headers()?.len() >= 4;
        let mut users: Vec<UserRatings> = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        for (line, record) in reader.records().enumerate() {
            let record = record?;
            anyhow::ensure!(
                record.len() >= 3,
                "{} line {}: expected user_id,item_id,rating",
                ratings.display(),
                line + 2
            );
            let Some(&item) = index.get(&record[1]) else {
                continue;
            };
            let rating: f64 = record[2].trim().parse().map_err(|_| {
                anyhow::anyhow!("{} line {}: bad rating", ratings.display(), line + 2)
            })?;
            let slot = *by_id.entry(record[0].to_string()).or_insert_with(|| {
                users.push(UserRatings {
                    id: record[0].to_string(),
                    split: has_split.then(|| record[3].to_string()),
                    ratings: Vec::new(),
                });
                users.len() - 1
            });
            users[slot].ratings.push((item, rating));
        }
        Ok(Self {
            dimensions,
            item_ids,
            features,
            users,
        })
    }
}
