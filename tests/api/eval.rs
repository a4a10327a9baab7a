//! `elicit eval --target`: the same users through the HTTP API give the same curves as in-process.

#[path = "../support/synthetic.rs"]
mod synthetic;

use elicit::eval::{self, data::Dataset, remote::Remote};
use elicit::model::Strategy;

use crate::harness::{ADMIN_KEY, Backend, TestDatabase, TestServer};

async fn the_http_path_matches_in_process(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let dir = std::env::temp_dir().join(format!(
        "elicit-eval-http-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let target = server.base.clone();
    // The evaluator blocks on its own runtime: run it on a plain thread.
    let (local, remote) = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let (items, ratings) = synthetic::write_dataset(&dir);
            let dataset = Dataset::load(&items, &ratings).unwrap();
            let mut options = synthetic::options(vec![Strategy::Bald, Strategy::Random]);
            options.questions = 12;
            let prior = eval::train_prior(&dataset, &options).unwrap();
            let tasks = eval::tasks(&dataset, &options);
            let local = eval::evaluate(&dataset, &tasks, &prior, &options, |t, s| {
                eval::run_in_process(&dataset, t, &prior, s, &options)
            })
            .unwrap();
            let client = Remote::connect(&target, ADMIN_KEY, &dataset, &prior, &options).unwrap();
            let remote = eval::evaluate(&dataset, &tasks, &prior, &options, |t, s| {
                client.run_user(&dataset, t, s, &options)
            })
            .unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            (local, remote)
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    // Random questions come from another stream on the server (seeded by the session id), so the
    // two random curves are independent estimates: compare the last point with 4 standard errors
    // of the difference (a false alarm once in ~15,000 runs).
    let (a, b) = (
        local.curves["random"].last().unwrap(),
        remote.curves["random"].last().unwrap(),
    );
    let tolerance = 4.0 * (a.se * a.se + b.se * b.se).sqrt();
    assert!(
        (a.accuracy - b.accuracy).abs() <= tolerance,
        "random: in-process {a:?}, http {b:?}"
    );
    // BALD is deterministic given the posterior: the two paths agree exactly.
    assert_eq!(local.curves["bald"], remote.curves["bald"]);
    server.stop().await;
}

crate::on_both_stores!(the_http_path_matches_in_process);
