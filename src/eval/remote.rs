//! Running the evaluation through a server's HTTP API (`elicit eval --target`): one model with the
//! dataset's items, one session per user and strategy, answers posted like a frontend would.

use std::collections::HashMap;

use anyhow::Context;
use serde_json::{Value, json};

use super::data::Dataset;
use super::{EvalOptions, UserTask};
use crate::model::{Posterior, Strategy};

/// Items uploaded per request.
const UPLOAD_CHUNK: usize = 20_000;

pub struct Remote {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    model: String,
}

async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "the server answered {status}: {body}");
    Ok(body)
}

/// Creates a model on the server at `base` from its JSON `definition` and uploads its `items`
/// in chunks.
pub async fn upload_model(
    client: &reqwest::Client,
    base: &str,
    definition: &Value,
    items: &[Value],
) -> anyhow::Result<()> {
    let model = definition["name"].as_str().unwrap_or_default();
    send(client.post(format!("{base}/v1/models")).json(definition))
        .await
        .with_context(|| format!("creating model '{model}'"))?;
    for chunk in items.chunks(UPLOAD_CHUNK) {
        send(
            client
                .put(format!("{base}/v1/models/{model}/items"))
                .json(&json!({"items": chunk})),
        )
        .await
        .context("uploading items")?;
    }
    Ok(())
}

impl Remote {
    /// Creates a model named `eval-…` with the dataset's items and the evaluation's prior.
    pub fn connect(
        target: &str,
        api_key: &str,
        dataset: &Dataset,
        prior: &Posterior,
        options: &EvalOptions,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = crate::client::with_key(api_key, None)?;
        let base = target.trim_end_matches('/').to_string();
        let model = format!("eval-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let cov: Vec<Vec<f64>> = prior
            .cov()
            .row_iter()
            .map(|r| r.iter().copied().collect())
            .collect();
        let definition = json!({
            "name": model,
            "dimensions": dataset.dimensions,
            "prior": {"mean": prior.mean().as_slice(), "cov": cov},
            "noise": options.noise,
            "update_method": options.method,
        });
        let items: Vec<Value> = dataset
            .item_ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"id": id, "features": dataset.features.column(i).as_slice()}))
            .collect();
        runtime.block_on(upload_model(&client, &base, &definition, &items))?;
        Ok(Self {
            base,
            client,
            runtime,
            model,
        })
    }

    /// The population prior the server learns from the train users: each onboards through the
    /// API (the first strategy, `questions` answers) and finishes, then `prior:refit` runs EM
    /// over their answer logs; the train users are erased afterwards. Sessions created later
    /// start from the returned prior.
    pub fn learn_prior(
        &self,
        dataset: &Dataset,
        options: &EvalOptions,
    ) -> anyhow::Result<Posterior> {
        let train = EvalOptions {
            split: Some("train".into()),
            ..options.clone()
        };
        let strategy = *options.strategies.first().context("a strategy")?;
        let tasks = super::tasks(dataset, &train);
        anyhow::ensure!(
            !tasks.is_empty(),
            "--prior refit needs users in the 'train' split"
        );
        let mut users = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let (user, _) = self.drive(dataset, task, strategy, options, true)?;
            users.push(user);
        }
        let base = &self.base;
        self.runtime.block_on(async {
            let refit = send(
                self.client
                    .post(format!("{base}/v1/models/{}/prior:refit", self.model))
                    .json(&json!({})),
            )
            .await
            .context("refitting the prior")?;
            for user in &users {
                send(self.client.delete(format!("{base}/v1/users/{user}"))).await?;
            }
            let mean: Vec<f64> = serde_json::from_value(refit["prior"]["mean"].clone())?;
            let cov: Vec<Vec<f64>> = serde_json::from_value(refit["prior"]["cov"].clone())?;
            let j = mean.len();
            let cov = nalgebra::DMatrix::from_fn(j, j, |r, c| cov[r][c]);
            Ok(Posterior::new(nalgebra::DVector::from_vec(mean), cov)?)
        })
    }

    /// One user through the API: accuracy after each k = 1..=questions.
    pub fn run_user(
        &self,
        dataset: &Dataset,
        task: &UserTask,
        strategy: Strategy,
        options: &EvalOptions,
    ) -> anyhow::Result<Vec<f64>> {
        let (user, curve) = self.drive(dataset, task, strategy, options, false)?;
        // The evaluation's users are not real: erase them.
        self.runtime.block_on(async {
            send(self.client.delete(format!("{}/v1/users/{user}", self.base))).await
        })?;
        Ok(curve)
    }

    /// Onboards one user through the API, finishing the session if `finish`: the user id and the
    /// accuracy after each k = 1..=questions.
    fn drive(
        &self,
        dataset: &Dataset,
        task: &UserTask,
        strategy: Strategy,
        options: &EvalOptions,
        finish: bool,
    ) -> anyhow::Result<(String, Vec<f64>)> {
        let ids: Vec<&str> = task
            .items
            .iter()
            .map(|&i| dataset.item_ids[i].as_str())
            .collect();
        let local: HashMap<&str, usize> = ids.iter().enumerate().map(|(k, id)| (*id, k)).collect();
        let user = format!("eval-{}-{}", task.user, strategy.as_str());
        let base = &self.base;
        self.runtime.block_on(async {
            let excluded: Vec<[&str; 2]> = task
                .never_asked
                .iter()
                .map(|&(a, b)| [ids[a], ids[b]])
                .collect();
            let mut state = send(
                self.client
                    .post(format!("{base}/v1/sessions"))
                    .json(&json!({
                        "model": self.model,
                        "user_id": user,
                        "max_questions": options.questions,
                        "strategy": strategy,
                        "items": ids,
                        "exclude_pairs": excluded,
                    })),
            )
            .await
            .with_context(|| format!("creating the session of user {}", task.user))?;
            let session = state["id"].as_str().context("a session id")?.to_string();
            let mut curve = Vec::with_capacity(options.questions);
            for _ in 0..options.questions {
                if let Some(question) = state["question"].as_object() {
                    let item = |k: usize| -> anyhow::Result<usize> {
                        let id = question["items"][k]["id"].as_str().context("an item id")?;
                        local.get(id).copied().with_context(|| {
                            format!("the server asked about item {id}, which the user did not rate")
                        })
                    };
                    let (a, b) = (item(0)?, item(1)?);
                    let choice = task.answer(a, b, &options.noise);
                    state = send(
                        self.client
                            .post(format!("{base}/v1/sessions/{session}/answers"))
                            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                            .json(&json!({"question_id": question["id"], "choice": choice})),
                    )
                    .await?;
                }
                let mean: Vec<f64> = serde_json::from_value(state["posterior"]["mean"].clone())
                    .context("a posterior mean")?;
                curve.push(task.accuracy(dataset, &nalgebra::DVector::from_vec(mean)));
            }
            if finish {
                send(
                    self.client
                        .post(format!("{base}/v1/sessions/{session}/finish"))
                        .json(&json!({})),
                )
                .await?;
            }
            Ok((user.clone(), curve))
        })
    }
}
