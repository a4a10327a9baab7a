//! The demo page end to end in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, both from Debian's packages; `.ci/run` installs them when missing). It opens
//! `/demo` on a server with the bundled demo model and ranks the four answers of each of its six
//! questions as a user who always prefers shorter answers: by keys 1–4 (once correcting a slip
//! with Backspace), by dragging with the mouse (down and up) and by tapping; corrects a line of
//! the profile in words; checks that the bars, the learned preference and the final ranking
//! render and that the server's log holds exactly the orders given; ranks a question by tapping at
//! phone width; checks focus order and contrast; and saves screenshots under `target/demo/`.
#[path = "support/net.rs"]
mod net;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use elicit::app::{Application, Config};
use elicit::store::sql::{PoolSettings, SqlStore};
use elicit::store::{LoggedAnswer, SessionStore};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
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

/// After five rankings from a user who prefers concise answers the bars and the profile in words
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
    assert_eq!(text(browser, "#progress").await, "Question 6 of 6");
}

/// The ways the test's user puts a question's answers in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gesture {
    /// Keys 1–4 (three presses: the last place is implied), then Enter on the focused "send".
    Keys,
    /// The same after a wrong first key taken back with Backspace.
    KeysAfterSlip,
    /// Dragging cards by their handles, each to its place from the bottom up (downwards moves).
    DragDown,
    /// Dragging cards by their handles, each to its place from the top down (upwards moves).
    DragUp,
    /// Clicking (tapping) the answers in order, then "send".
    Taps,
}

/// The current question's answers as shown: their item ids and texts, in display order (the
/// number of each is its position plus one).
async fn shown_answers(browser: &Client) -> Vec<(String, String)> {
    let mut shown = Vec::new();
    for card in browser.find_all(Locator::Css("#choices li")).await.unwrap() {
        let id = card.attr("data-item").await.unwrap().unwrap();
        let text = card
            .find(Locator::Css(".text"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        shown.push((id, text));
    }
    shown
}

/// The item ids of the cards in the order the page now shows them.
async fn card_order(browser: &Client) -> Vec<String> {
    let mut order = Vec::new();
    for card in browser.find_all(Locator::Css("#choices li")).await.unwrap() {
        order.push(card.attr("data-item").await.unwrap().unwrap());
    }
    order
}

async fn card(browser: &Client, id: &str) -> Element {
    browser
        .find(Locator::Css(&format!("#choices li[data-item='{id}']")))
        .await
        .unwrap()
}

/// Drags the card of `id` by its handle onto the card now at `place`, releasing in that card's
/// upper quarter (to go before it) or lower quarter (after it).
async fn drag_card(browser: &Client, id: &str, place: usize, before: bool) {
    let handle = card(browser, id)
        .await
        .find(Locator::Css(".handle"))
        .await
        .unwrap();
    let target = browser.find_all(Locator::Css("#choices li")).await.unwrap()[place].clone();
    let (_, _, _, height) = target.rectangle().await.unwrap();
    let offset = if before { -height / 4.0 } else { height / 4.0 };
    let moves = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: handle,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveToElement {
            element: target,
            duration: Some(Duration::from_millis(200)),
            x: 0.0,
            y: offset,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.perform_actions(moves).await.unwrap();
}

/// Puts the current question's answers in `order` (item ids, best first) with `gesture`, checks
/// that the page shows that order, and sends it.
async fn rank(browser: &Client, body: &Element, order: &[String], gesture: Gesture) {
    let shown = shown_answers(browser).await;
    let key = |id: &String| {
        (shown
            .iter()
            .position(|(shown_id, _)| shown_id == id)
            .unwrap()
            + 1)
        .to_string()
    };
    match gesture {
        Gesture::Keys | Gesture::KeysAfterSlip => {
            if gesture == Gesture::KeysAfterSlip {
                body.send_keys(&key(&order[3])).await.unwrap();
                assert_eq!(card_order(browser).await[0], order[3]);
                body.send_keys("\u{e003}").await.unwrap(); // WebDriver's Backspace
                assert_eq!(text(browser, "#order").await, "");
            }
            for id in &order[..3] {
                body.send_keys(&key(id)).await.unwrap();
            }
        }
        Gesture::DragDown | Gesture::DragUp => {
            let places: Vec<usize> = if gesture == Gesture::DragDown {
                (0..order.len()).rev().collect()
            } else {
                (0..order.len()).collect()
            };
            for place in places {
                if card_order(browser).await[place] != order[place] {
                    drag_card(browser, &order[place], place, gesture == Gesture::DragUp).await;
                }
            }
            // Shown in that order already: one drag of the best answer onto its own place says
            // the order is the user's.
            if text(browser, "#order").await.is_empty() {
                drag_card(browser, &order[0], 0, true).await;
            }
        }
        Gesture::Taps => {
            for id in &order[..3] {
                card(browser, id)
                    .await
                    .find(Locator::Css("button"))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(card_order(browser).await, order, "{gesture:?}");
    let keys: Vec<String> = order.iter().map(key).collect();
    assert_eq!(
        text(browser, "#order").await,
        format!("Your order: {}. Send it, or start again.", keys.join(", ")),
        "{gesture:?}"
    );
    let focused = script(browser, "return document.activeElement.id").await;
    assert_eq!(focused, "send-order", "{gesture:?}");
    if gesture == Gesture::DragDown {
        save_screenshot(browser, "ranked.png").await;
    }
    match gesture {
        Gesture::Keys | Gesture::KeysAfterSlip => body.send_keys("\u{e007}").await.unwrap(), // Enter
        _ => browser
            .find(Locator::Id("send-order"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap(),
    }
}

/// The order a user who prefers shorter answers gives the current question (item ids, best
/// first; equal lengths in display order).
async fn shortest_first(browser: &Client) -> Vec<String> {
    let mut shown = shown_answers(browser).await;
    shown.sort_by_key(|(_, text)| text.len());
    shown.into_iter().map(|(id, _)| id).collect()
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
    let skip = browser.find(Locator::Id("choice-skip")).await.unwrap();
    let body = browser.find(Locator::Css("body")).await.unwrap();
    eventually("the first question", || enabled(&skip)).await;
    assert_eq!(text(&browser, "#progress").await, "Question 1 of 6");
    assert_eq!(
        shown_answers(&browser).await.len(),
        4,
        "four answers to rank"
    );
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
    // Nothing to send before the user has given an order.
    assert!(!enabled(&browser.find(Locator::Id("send-order")).await.unwrap()).await);

    // Six rankings from a user who prefers concise answers, by every gesture the page offers;
    // before the last, a correction of the profile in words.
    let gestures = [
        Gesture::Keys,
        Gesture::DragDown,
        Gesture::KeysAfterSlip,
        Gesture::Taps,
        Gesture::DragUp,
        Gesture::Keys,
    ];
    let mut given = Vec::new();
    for (n, gesture) in (1..).zip(gestures) {
        let progress = text(&browser, "#progress").await;
        assert_eq!(progress, format!("Question {n} of 6"));
        if n == 6 {
            correct_the_length_line(&browser).await;
        }
        let order = shortest_first(&browser).await;
        rank(&browser, &body, &order, gesture).await;
        given.push(order);
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
    assert_eq!(text(&browser, "#progress").await, "Done: 6 answers.");
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

    // The server holds the six rankings and the correction, and the session was finished into a
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
    assert_eq!(view["answers"], 7, "{view}");
    assert_eq!(
        view["statements"],
        json!([{"dimension": "detailed", "prefer": "high", "strength": "clearly"}])
    );
    assert_eq!(view["status"], "finished", "{view}");
    // The log holds exactly the orders given, whatever the gesture.
    let store = SqlStore::connect(&config.database_url, PoolSettings::default())
        .await
        .unwrap();
    let logged: Vec<Vec<String>> = store
        .session_answers(session.as_str().unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|row| match row.answer {
            LoggedAnswer::Pick { items, ranking } => {
                Some(ranking.into_iter().map(|i| items[i].clone()).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(logged, given);

    // At phone width the page fits without sideways scrolling, and a question can be ranked by
    // tapping.
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
        text(&browser, "#progress").await == "Question 1 of 6"
    })
    .await;
    let layout = script(
        &browser,
        "return {width: document.documentElement.scrollWidth, viewport: window.innerWidth};",
    )
    .await;
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
    let first = shown_answers(&browser).await[0].0.clone();
    let focused = script(
        &browser,
        "return document.activeElement.closest('li').dataset.item",
    )
    .await;
    assert_eq!(focused, json!(first));
    // Focus order follows reading order: the four answers, then "skip" ("send" and "start
    // again" wait for an order).
    let mut order = Vec::new();
    for _ in 0..4 {
        body.send_keys("\u{e004}").await.unwrap(); // WebDriver's Tab key
        order.push(
            script(
                &browser,
                "const e = document.activeElement; return e.id || e.closest('li').dataset.item",
            )
            .await,
        );
    }
    let shown: Vec<Value> = shown_answers(&browser)
        .await
        .into_iter()
        .map(|(id, _)| json!(id))
        .collect();
    assert_eq!(order[..3], shown[1..]);
    assert_eq!(order[3], json!("choice-skip"));
    let order = shortest_first(&browser).await;
    rank(&browser, &body, &order, Gesture::Taps).await;
    eventually("the second question at phone width", || async {
        text(&browser, "#progress").await == "Question 2 of 6"
    })
    .await;
    // Every visible text has a contrast of at least 4.5:1 with the background behind it (WCAG AA).
    let worst = script(&browser, CONTRAST_SCRIPT).await;
    assert!(worst["ratio"].as_f64().unwrap() >= 4.5, "{worst}");

    browser.close().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
