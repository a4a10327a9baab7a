//! `elicit bench --flood`: a key sending at a multiple of its rate limit beside the normal clients.

use super::*;

/// A runaway client: one scorer key limited to a tenth of `rate`, reading a profile at `rate`
/// requests a second (open loop, at most 256 in flight) until stopped.
pub(super) struct Flood {
    key_id: String,
    key_limit_per_s: f64,
    rate: f64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(usize, usize, usize)>,
}

impl Flood {
    pub(super) async fn start(
        api: &Api,
        options: &BenchOptions,
        setup: &Setup,
        rate: f64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(rate > 0.0, "--flood-per-s must be positive");
        let limit = rate / 10.0;
        let reply = api
            .send(
                reqwest::Method::POST,
                "/v1/keys",
                Some(&json!({"name": "bench-flood", "role": "scorer",
                             "rate_per_s": limit, "burst": limit.ceil().max(1.0) as u32})),
                None,
            )
            .await?;
        if reply.status != 201 {
            bail!("creating the flood key: {} {}", reply.status, reply.body);
        }
        let key_id = reply.body["id"].as_str().unwrap_or_default().to_string();
        let flooder = Api::new(
            &options.target,
            reply.body["key"].as_str().unwrap_or_default(),
        )?;
        let path = format!("/v1/users/flood/profile?model={}", setup.model);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
                let (sent, limited, accepted) = (
                    Arc::new(AtomicUsize::new(0)),
                    Arc::new(AtomicUsize::new(0)),
                    Arc::new(AtomicUsize::new(0)),
                );
                let mut pacer = Pacer::new(Some(rate), 1);
                while !stop.load(Ordering::Relaxed) {
                    pacer.wait().await;
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break;
                    };
                    let (flooder, path) = (flooder.clone(), path.clone());
                    let (limited, accepted) = (limited.clone(), accepted.clone());
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let counter =
                            match flooder.send(reqwest::Method::GET, &path, None, None).await {
                                Ok(reply) if reply.status == 429 => &limited,
                                _ => &accepted,
                            };
                        counter.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
                let _ = in_flight.acquire_many(256).await;
                (
                    sent.load(Ordering::Relaxed),
                    limited.load(Ordering::Relaxed),
                    accepted.load(Ordering::Relaxed),
                )
            }
        });
        Ok(Self {
            key_id,
            key_limit_per_s: limit,
            rate,
            stop,
            task,
        })
    }

    /// Stops the flood, revokes its key and reports what it saw.
    pub(super) async fn stop(self, api: &Api) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, limited, accepted) = self.task.await.unwrap_or_default();
        let _ = api
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/keys/{}", self.key_id),
                None,
                None,
            )
            .await;
        FloodReport {
            rate_per_s: self.rate,
            key_limit_per_s: self.key_limit_per_s,
            sent,
            limited,
            accepted,
        }
    }
}
