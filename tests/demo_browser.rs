//! The demo page end to end in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, both from Debian's packages; `.ci/run` installs them when missing). It opens
//! `/demo` on a server with the bundled demo model, answers ten questions by clicking and by
//! keyboard as a user who always prefers the shorter answer, checks that the bars, the learned
//! preference and the final ranking render and that the server holds ten answers, checks the page
//! at phone width, and saves screenshots under `target/demo/`.
#[path = "support/net.rs"]
mod net;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use elicit::app::{Application, Config};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ADMIN_KEY: &str = "demo-test-admin-key";

/// chromedriver on a free port, killed on drop.
struct Driver(Child, u16);

impl Driver {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser test needs Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; .ci/run installs them)"
        );
        let port = net::free_port();
        // Held by the driver at once, so that it is killed and reaped on every path.
        let driver = Self(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
            port,
        );
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not listen on port {port}");
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.1))
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 100 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The mean of the bar of `dimension`, read from its accessible description.
async fn bar_mean(browser: &Client, dimension: &str) -> f64 {
    let label = browser
        .find(Locator::Css(&format!(
            "#bars li[data-dimension='{dimension}'] .track"
        )))
        .await
        .unwrap()
        .attr("aria-label")
        .await
        .unwrap()
        .unwrap();
    label
        .split(": ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// After nine answers from a user who prefers concise answers the bars and the profile in words
/// say so; "Not me" on that line states the opposite, and the bar moves towards it.
async fn correct_the_length_line(browser: &Client) {
    let before = bar_mean(browser, "detailed").await;
    assert!(
        before < 0.0,
        "a user choosing shorter answers is concise: {before}"
    );
    let summary = text(browser, "#summary").await.to_lowercase();
    assert!(
        summary.contains("prefers concise answers to detailed answers"),
        "{summary}"
    );
    browser
        .find(Locator::Css(
            "#summary li[data-dimension='detailed'] button.not-me",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the correction", || async {
        text(browser, "#status").await.starts_with("Noted")
    })
    .await;
    let after = bar_mean(browser, "detailed").await;
    assert!(
        after > before + 0.05,
        "the bar moved from {before} to {after}"
    );
    assert_eq!(text(browser, "#progress").await, "Question 10 of 10");
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn script(browser: &Client, source: &str) -> Value {
    browser.execute(source, vec![]).await.unwrap()
}

async fn enabled(element: &Element) -> bool {
    element.is_enabled().await.unwrap_or(false)
}

async fn save_screenshot(browser: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo");
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(dir.join(name), png).unwrap();
}

/// The lowest text contrast on the page (WCAG 2 relative luminance), with the text it belongs to.
/// The background is the nearest opaque one among the element and its ancestors.
const CONTRAST_SCRIPT: &str = r#"
const luminance = (rgb) => {
  const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const parse = (color) => color.match(/[\d.]+/g).map(Number);
const background = (el) => {
  for (; el; el = el.parentElement) {
    const c = parse(getComputedStyle(el).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
let worst = { ratio: Infinity, text: "" };
for (const el of document.querySelectorAll("body *")) {
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length) continue;
  const style = getComputedStyle(el);
  const opacity = Number(style.opacity);
  if (style.visibility === "hidden" || opacity === 0) continue;
  const [a, b] = [luminance(parse(style.color).slice(0, 3)), luminance(background(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < worst.ratio) worst = { ratio, text: el.textContent.trim().slice(0, 60) };
}
return worst;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_onboards_on_the_demo_page() {
    let dir = std::env::temp_dir().join(format!("elicit-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config {
        port: 0,
        database_url: format!("sqlite://{}", dir.join("demo.db").display()),
        admin_key: Some(ADMIN_KEY.into()),
        demo: true,
        ..Config::default()
    };
    let app = Application::build(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/demo")).await.unwrap();
    let choice_a = browser.find(Locator::Id("choice-a")).await.unwrap();
    let choice_b = browser.find(Locator::Id("choice-b")).await.unwrap();
    let body = browser.find(Locator::Css("body")).await.unwrap();
    eventually("the first question", || enabled(&choice_a)).await;
    assert_eq!(text(&browser, "#progress").await, "Question 1 of 10");
    assert_eq!(
        browser
            .find_all(Locator::Css("#bars li"))
            .await
            .unwrap()
            .len(),
        6,
        "one bar per dimension"
    );
    // Before any answer the summary in words knows nothing yet.
    assert!(
        text(&browser, "#summary")
            .await
            .starts_with("Not known yet: detailed, casual"),
        "{}",
        text(&browser, "#summary").await
    );

    // Ten answers from a user who prefers concise answers: odd questions by clicking, even ones
    // by keyboard (a and b), and the ninth with `t` ("about the same").
    for n in 1..=10 {
        let progress = text(&browser, "#progress").await;
        assert_eq!(progress, format!("Question {n} of 10"));
        let (a, b) = (
            text(&browser, "#text-a").await,
            text(&browser, "#text-b").await,
        );
        let shorter = if a.len() <= b.len() { "a" } else { "b" };
        if n == 10 {
            correct_the_length_line(&browser).await;
        }
        match (n % 2, n) {
            (_, 9) => body.send_keys("t").await.unwrap(),
            (1, _) => if shorter == "a" { &choice_a } else { &choice_b }
                .click()
                .await
                .unwrap(),
            _ => body.send_keys(shorter).await.unwrap(),
        }
        eventually("the next question or the result", || async {
            text(&browser, "#progress").await != progress
        })
        .await;
    }

    // The result: the learned preference for concise answers shows in the bars, and the unseen
    // answers are ranked for the user beside the population.
    eventually("the ranking", || async {
        browser
            .find_all(Locator::Css("#result:not([hidden]) .ranking ol li"))
            .await
            .is_ok_and(|items| items.len() >= 6)
    })
    .await;
    assert_eq!(text(&browser, "#progress").await, "Done: 10 answers.");
    assert!(!text(&browser, "#stop").await.is_empty());
    let bits: f64 = text(&browser, "#bits")
        .await
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bits > 1.0, "{bits} bits learned");
    // The finished profile's words, without "Not me" buttons.
    assert!(
        browser
            .find_all(Locator::Css("#summary button"))
            .await
            .unwrap()
            .is_empty()
    );
    let rankings = browser.find_all(Locator::Css(".ranking")).await.unwrap();
    assert!(!rankings.is_empty());
    for ranking in &rankings {
        let mine = ranking.find_all(Locator::Css(".mine li")).await.unwrap();
        let theirs = ranking
            .find_all(Locator::Css(".population li"))
            .await
            .unwrap();
        assert_eq!(mine.len(), theirs.len());
    }
    save_screenshot(&browser, "desktop.png").await;

    // The server holds the ten answers and the correction, and the session was finished into a
    // profile.
    let session = script(&browser, "return document.body.dataset.session").await;
    let admin = elicit::client::with_key(ADMIN_KEY, None).unwrap();
    let view: Value = admin
        .get(format!("{base}/v1/sessions/{}", session.as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["answers"], 11, "{view}");
    assert_eq!(
        view["statements"],
        json!([{"dimension": "detailed", "prefer": "high", "strength": "clearly"}])
    );
    assert_eq!(view["status"], "finished", "{view}");

    // At phone width the page fits without sideways scrolling and the answers stack.
    browser.set_window_size(390, 844).await.unwrap();
    save_screenshot(&browser, "phone-result.png").await;
    browser
        .find(Locator::Id("restart"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("a new question", || async {
        text(&browser, "#progress").await == "Question 1 of 10"
    })
    .await;
    let layout = script(
        &browser,
        "const a = document.getElementById('choice-a').getBoundingClientRect();
         const b = document.getElementById('choice-b').getBoundingClientRect();
         return {stacked: b.top >= a.bottom, width: document.documentElement.scrollWidth,
                 viewport: window.innerWidth};",
    )
    .await;
    assert_eq!(layout["stacked"], true, "{layout}");
    assert!(
        layout["width"].as_f64() <= layout["viewport"].as_f64(),
        "{layout}"
    );
    save_screenshot(&browser, "phone.png").await;

    // Accessible: every control has a name, the bars describe themselves, and focus starts on
    // the first answer.
    let unnamed = script(
        &browser,
        "return [...document.querySelectorAll('button')].filter(b => !b.textContent.trim()).length",
    )
    .await;
    assert_eq!(unnamed, 0);
    let focused = script(&browser, "return document.activeElement.id").await;
    assert_eq!(focused, "choice-a");
    // Focus order follows reading order: the two answers, then "about the same", then "skip".
    let mut order = Vec::new();
    for _ in 0..3 {
        body.send_keys("\u{e004}").await.unwrap(); // WebDriver's Tab key
        order.push(script(&browser, "return document.activeElement.id").await);
    }
    assert_eq!(
        order,
        [json!("choice-b"), json!("choice-tie"), json!("choice-skip")]
    );
    // Every visible text has a contrast of at least 4.5:1 with the background behind it (WCAG AA).
    let worst = script(&browser, CONTRAST_SCRIPT).await;
    assert!(worst["ratio"].as_f64().unwrap() >= 4.5, "{worst}");

    browser.close().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
