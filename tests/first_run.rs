//! A first run works as it is: with no admin key configured and an empty store, the service
//! creates an admin key and prints it once; a restart prints nothing new and the key still works.

#[path = "support/net.rs"]
mod net;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `elicit serve` on `db` without an admin key; returns the process and what it printed
/// on stdout up to a short while after its "listening on" line.
fn start(db: &std::path::Path, port: u16) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_elicit"))
        .args(["serve", "--port", &port.to_string()])
        .env("ELICIT_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env_remove("ELICIT_ADMIN_KEY")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    // Everything printed at start-up comes right after the "listening on" line.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut listening = false;
    while std::time::Instant::now() < deadline {
        let wait = if listening {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(30)
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                listening |= line.starts_with("listening on");
                printed.push_str(&line);
                printed.push('\n');
            }
            Err(_) if listening => break,
            Err(e) => panic!("no start-up output: {e}"),
        }
    }
    (child, printed)
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn the_first_run_prints_a_working_admin_key_once() {
    let dir = std::env::temp_dir().join(format!("elicit-first-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("first.db");
    let port = net::free_port();
    let base = format!("http://127.0.0.1:{port}");

    let (child, printed) = start(&db, port);
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("ek_"))
        .unwrap_or_else(|| panic!("no key printed:\n{printed}"))
        .to_string();
    assert!(
        printed.contains(&format!(
            "curl -H 'Authorization: Bearer {key}' {base}/v1/models"
        )),
        "{printed}"
    );
    let client = elicit::client::with_key(&key, Some(Duration::from_secs(5))).unwrap();
    let models = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200, "the printed key is an admin key");
    // The embedded default loads the demo model and serves its page, and says where.
    let models: serde_json::Value = models.json().await.unwrap();
    assert_eq!(models["models"][0]["name"], "demo", "{models}");
    assert!(printed.contains(&format!("{base}/demo")), "{printed}");
    let page = reqwest::get(format!("{base}/demo")).await.unwrap();
    assert_eq!(page.status(), 200);
    stop(child);

    let (child, printed) = start(&db, port);
    assert!(
        !printed.contains("ek_"),
        "a key is printed only on the first run:\n{printed}"
    );
    // A new client: the old one's pooled connection died with the first process.
    let client = elicit::client::with_key(&key, Some(Duration::from_secs(5))).unwrap();
    let keys: serde_json::Value = client
        .get(format!("{base}/v1/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys["keys"][0]["role"], "admin");
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
