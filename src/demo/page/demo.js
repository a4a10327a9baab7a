// The elicit demo page: starts a demo session (no key: the response's token drives the
// session), asks its questions, draws the posterior and says it in words after every answer, and
// at the end shows the answers the user has not seen, ranked for them beside the population's
// ranking.
"use strict";

// The two poles of each demo dimension (scores run from the first to the second).
const POLES = {
  detailed: ["concise", "detailed"],
  casual: ["formal", "casual"],
  bold: ["cautious", "bold"],
  technical: ["plain", "technical"],
  playful: ["serious", "playful"],
  examples: ["no examples", "examples"],
};
// Bars span λ ∈ [-SCALE, SCALE].
const SCALE = 3;
const STOP_REASONS = {
  budget: "All questions asked.",
  information: "Further questions would teach elicit too little.",
  uncertainty: "elicit is sure enough about your taste.",
  exhausted: "No questions left to ask.",
  finished: "Finished.",
};

// `statements` counts the user's corrections: the session's `answers` counts them too, and they
// are not questions.
const state = { session: null, token: null, question: null, busy: false, done: false, statements: 0 };
const $ = (id) => document.getElementById(id);

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function call(method, path, body, key) {
  const headers = { "content-type": "application/json" };
  if (state.token) headers.authorization = "Bearer " + state.token;
  if (key) headers["idempotency-key"] = key;
  // A lost request is retried with the same idempotency key, so it is never applied twice.
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    } catch (error) {
      if (attempt < 3) { await new Promise((r) => setTimeout(r, 500 * (attempt + 1))); continue; }
      throw new Error("the service cannot be reached");
    }
    const data = await response.json().catch(() => ({}));
    if (response.ok) return data;
    if ((response.status === 503 || response.status === 429) && attempt < 3) {
      const wait = Number(response.headers.get("retry-after") || "1");
      await new Promise((r) => setTimeout(r, Math.min(wait, 5) * 1000));
      continue;
    }
    throw new Error(data.detail || response.statusText);
  }
}

function setBusy(busy) {
  state.busy = busy;
  for (const id of ["choice-a", "choice-b", "choice-tie", "choice-skip"]) {
    $(id).disabled = busy || state.done;
  }
}

function showQuestion(question, answers, max) {
  state.question = question;
  if (!question) return;
  const [a, b] = question.items;
  $("prompt").textContent = (a.payload && a.payload.prompt) || "";
  $("text-a").textContent = (a.payload && a.payload.text) || a.id;
  $("text-b").textContent = (b.payload && b.payload.text) || b.id;
  $("progress").textContent = `Question ${answers + 1} of ${max}`;
}

function percent(x) {
  return ((Math.max(-SCALE, Math.min(SCALE, x)) + SCALE) / (2 * SCALE)) * 100;
}

function showPosterior(posterior, bits) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const d of posterior.dimensions) {
    const [low, high] = POLES[d.name] || ["less " + d.name, d.name];
    const lo = d.mean - 1.96 * d.sd;
    const hi = d.mean + 1.96 * d.sd;
    const li = document.createElement("li");
    li.className = "dimension";
    li.dataset.dimension = d.name;
    const left = document.createElement("span");
    left.className = "pole low";
    left.textContent = low;
    const right = document.createElement("span");
    right.className = "pole high";
    right.textContent = high;
    const track = document.createElement("div");
    track.className = "track";
    track.setAttribute("role", "img");
    track.setAttribute(
      "aria-label",
      `${low} to ${high}: ${d.mean.toFixed(2)}, 95 % interval ${lo.toFixed(2)} to ${hi.toFixed(2)}`,
    );
    const zero = document.createElement("span");
    zero.className = "zero";
    const band = document.createElement("span");
    band.className = "interval";
    band.style.left = percent(lo) + "%";
    band.style.width = percent(hi) - percent(lo) + "%";
    const mean = document.createElement("span");
    mean.className = "mean";
    mean.style.left = percent(d.mean) + "%";
    track.append(zero, band, mean);
    li.append(left, track, right);
    bars.append(li);
  }
  $("bits").textContent = `${bits.toFixed(1)} bits learned so far.`;
}

// The session's profile in words: one line per trait elicit is sure of, each with a "Not me"
// button that states the opposite (the service's statements), then what it does not know yet.
function showSummary(summary) {
  const capitalised = (line) => line.charAt(0).toUpperCase() + line.slice(1);
  const lines = summary.statements.map((statement) => {
    const li = document.createElement("li");
    li.dataset.dimension = statement.dimension;
    li.append(capitalised(statement.sentence));
    if (!state.done) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "not-me";
      button.textContent = "Not me";
      button.setAttribute("aria-label", "Not me: " + statement.sentence);
      const opposite = statement.prefers === "high" ? "low" : "high";
      button.addEventListener("click", () => correct(statement.dimension, opposite));
      li.append(" ", button);
    }
    return li;
  });
  if (summary.unknown_sentence) {
    const li = document.createElement("li");
    li.textContent = summary.unknown_sentence;
    lines.push(li);
  }
  $("summary").replaceChildren(...lines);
}

// "Not me": the user clearly prefers the other end of a trait; elicit takes it as evidence.
async function correct(dimension, prefer) {
  if (state.busy || state.done) return;
  await submit("statements", { dimension, prefer, strength: "clearly" }, () => {
    state.statements += 1;
    $("status").textContent = "Noted: elicit has taken your correction into account.";
  });
}

async function answer(choice) {
  if (state.busy || state.done || !state.question) return;
  await submit("answers", { question_id: state.question.id, choice }, async (reply) => {
    if (reply.question) {
      showQuestion(reply.question, reply.answers - state.statements, reply.max_questions);
    } else {
      await finish(reply);
    }
  });
}

// Posts an answer or a statement (with a fresh idempotency key), redraws the bars and the
// profile in words from the reply, then runs `then` on it; the page is busy meanwhile.
async function submit(what, body, then) {
  setBusy(true);
  $("status").textContent = "";
  try {
    const id = state.session;
    const reply = await call("POST", `/v1/sessions/${id}/${what}`, body, uuid());
    showPosterior(reply.posterior, reply.bits);
    showSummary((await call("GET", `/v1/sessions/${id}`)).summary);
    await then(reply);
  } catch (error) {
    $("status").textContent = "Something went wrong: " + error.message;
  } finally {
    setBusy(false);
  }
}

async function finish(reply) {
  state.done = true;
  state.question = null;
  $("progress").textContent = `Done: ${reply.answers - state.statements} answers.`;
  $("stop").textContent = STOP_REASONS[reply.stop_reason] || "";
  const finished = await call("POST", `/v1/sessions/${state.session}/finish`, {});
  showSummary(finished.summary);
  const ranking = await call("GET", `/v1/sessions/${state.session}/ranking?limit=1000`);
  showRanking(ranking);
}

function list(items, key) {
  const ol = document.createElement("ol");
  for (const item of [...items].sort((x, y) => y[key] - x[key])) {
    const li = document.createElement("li");
    li.textContent = (item.payload && item.payload.text) || item.id;
    ol.append(li);
  }
  return ol;
}

function showRanking(ranking) {
  // Prompts whose every response is unseen, in the order of their best response for the user.
  const byPrompt = new Map();
  for (const item of ranking.items) {
    const group = item.group || "";
    if (!byPrompt.has(group)) byPrompt.set(group, []);
    byPrompt.get(group).push(item);
  }
  const prompts = [...byPrompt.values()].filter((items) => items.length >= 3).slice(0, 3);
  const container = $("rankings");
  container.replaceChildren();
  for (const items of prompts) {
    const block = document.createElement("div");
    block.className = "ranking";
    const title = document.createElement("h3");
    title.textContent = (items[0].payload && items[0].payload.prompt) || items[0].group;
    const columns = document.createElement("div");
    columns.className = "columns";
    const mine = document.createElement("div");
    mine.className = "mine";
    const mineTitle = document.createElement("h4");
    mineTitle.textContent = "Your order";
    mine.append(mineTitle, list(items, "mean"));
    const theirs = document.createElement("div");
    theirs.className = "population";
    const theirsTitle = document.createElement("h4");
    theirsTitle.textContent = "The population's order";
    theirs.append(theirsTitle, list(items, "population_mean"));
    columns.append(mine, theirs);
    block.append(title, columns);
    container.append(block);
  }
  $("question").hidden = true;
  $("result").hidden = false;
  $("result").focus();
}

async function start() {
  state.done = false;
  state.token = null;
  state.statements = 0;
  $("result").hidden = true;
  $("question").hidden = false;
  $("stop").textContent = "";
  setBusy(true);
  try {
    const created = await call("POST", "/v1/demo/sessions", {});
    state.session = created.id;
    state.token = created.token;
    document.body.dataset.session = created.id;
    showPosterior(created.posterior, created.diagnostics.bits);
    showSummary(created.summary);
    showQuestion(created.question, created.answers, created.max_questions);
    setBusy(false);
    $("choice-a").focus();
  } catch (error) {
    $("status").textContent = "The demo could not start: " + error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("choice-a").addEventListener("click", () => answer("a"));
  $("choice-b").addEventListener("click", () => answer("b"));
  $("choice-tie").addEventListener("click", () => answer("tie"));
  $("choice-skip").addEventListener("click", () => answer("skip"));
  $("restart").addEventListener("click", start);
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const choice = { a: "a", b: "b", t: "tie", s: "skip" }[event.key.toLowerCase()];
    if (choice) {
      event.preventDefault();
      answer(choice);
    }
  });
  start();
});
