// The elicit demo page: starts a demo session (no key: the response's token drives the
// session), asks its questions (four answers to one prompt, for the user to put in order by
// keys, taps or dragging), draws the posterior and says it in words after every answer, and at
// the end shows the answers the user has not seen, ranked for them beside the population's
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
// are not questions. `order` is the order being built for the question (indices into its items,
// best first) and `placed` how many of its places the user has set: all of them once they drag.
const state = {
  session: null, token: null, question: null, busy: false, done: false, statements: 0,
  order: [], placed: 0,
};
const ORDINALS = ["1st", "2nd", "3rd", "4th", "5th", "6th"];
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
  refreshControls();
}

// Enables what may be pressed now: the answers and "skip" while a question waits, "send" once
// every place is set, "start again" once one is.
function refreshControls() {
  const idle = !state.busy && !state.done && state.question;
  const complete = state.question && state.placed === state.question.items.length;
  for (const button of $("choices").querySelectorAll("button")) button.disabled = !idle;
  $("choice-skip").disabled = !idle;
  $("send-order").disabled = !idle || !complete;
  $("clear-order").disabled = !idle || state.placed === 0;
}

function showQuestion(question, answered, max) {
  state.question = question;
  if (!question) return;
  state.order = question.items.map((_, index) => index);
  state.placed = 0;
  $("prompt").textContent = (question.items[0].payload && question.items[0].payload.prompt) || "";
  $("progress").textContent = `Question ${answered + 1} of ${max}`;
  showChoices();
}

// The question's answers in the order being built, each with the number it was shown with (its
// key), its place once set, and a handle to drag it by.
function showChoices() {
  const { items } = state.question;
  const cards = state.order.map((index, place) => {
    const item = items[index];
    const card = document.createElement("li");
    card.className = "choice" + (place < state.placed ? " placed" : "");
    card.dataset.item = item.id;
    card.dataset.index = String(index);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "place";
    button.setAttribute("aria-keyshortcuts", String(index + 1));
    const key = document.createElement("span");
    key.className = "key";
    key.setAttribute("aria-hidden", "true");
    key.textContent = String(index + 1);
    const name = document.createElement("span");
    name.className = "visually-hidden";
    name.textContent = `Answer ${index + 1}:`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = (item.payload && item.payload.text) || item.id;
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = place < state.placed ? ORDINALS[place] : "";
    button.append(key, name, text, rank);
    button.addEventListener("click", () => placeNext(index));
    const handle = document.createElement("span");
    handle.className = "handle";
    handle.setAttribute("aria-hidden", "true");
    handle.textContent = "⠿";
    handle.addEventListener("pointerdown", (event) => drag(event, card));
    card.append(button, handle);
    return card;
  });
  $("choices").replaceChildren(...cards);
  const placed = state.order.slice(0, state.placed).map((index) => index + 1);
  $("order").textContent = placed.length === items.length
    ? `Your order: ${placed.join(", ")}. Send it, or start again.`
    : placed.length ? `Your order so far: ${placed.join(", ")}.` : "";
  refreshControls();
}

// Gives the answer shown as number `index + 1` the next free place; once one answer is left it
// takes the last place, and "send" gets the focus.
function placeNext(index) {
  if (state.busy || state.done || !state.question) return;
  const at = state.order.indexOf(index);
  if (at < state.placed) return;
  state.order.splice(at, 1);
  state.order.splice(state.placed, 0, index);
  state.placed += state.placed + 2 === state.order.length ? 2 : 1;
  showChoices();
  if (state.placed === state.order.length) $("send-order").focus();
}

function clearOrder() {
  if (state.busy || state.done || !state.question) return;
  state.order = state.question.items.map((_, index) => index);
  state.placed = 0;
  showChoices();
}

// Drags `card` by its handle: while the pointer moves the other cards make way (the dragged card
// itself stays in the document, so it keeps the pointer), and on release the list as it stands
// is the user's whole order.
function drag(event, card) {
  if (state.busy || state.done || event.button !== 0) return;
  event.preventDefault();
  const handle = event.currentTarget;
  const list = $("choices");
  handle.setPointerCapture(event.pointerId);
  card.classList.add("dragging");
  const move = (moved) => {
    const others = [...list.children].filter((other) => other !== card);
    let before = others.findIndex((other) => {
      const box = other.getBoundingClientRect();
      return moved.clientY < box.top + box.height / 2;
    });
    if (before < 0) before = others.length;
    for (const other of others.slice(0, before)) list.insertBefore(other, card);
    for (const other of others.slice(before)) list.append(other);
  };
  const release = () => {
    handle.removeEventListener("pointermove", move);
    handle.removeEventListener("pointerup", release);
    handle.removeEventListener("pointercancel", release);
    state.order = [...list.children].map((other) => Number(other.dataset.index));
    state.placed = state.order.length;
    showChoices();
    $("send-order").focus();
  };
  handle.addEventListener("pointermove", move);
  handle.addEventListener("pointerup", release);
  handle.addEventListener("pointercancel", release);
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

function sendOrder() {
  if (!state.question || state.placed !== state.question.items.length) return;
  answer({ ranking: state.order.map((index) => state.question.items[index].id) });
}

async function answer(body) {
  if (state.busy || state.done || !state.question) return;
  await submit("answers", { question_id: state.question.id, ...body }, async (reply) => {
    if (reply.question) {
      showQuestion(reply.question, reply.answers - state.statements, reply.max_questions);
      focusFirstChoice();
    } else {
      await finish(reply);
    }
  });
}

function focusFirstChoice() {
  const first = $("choices").querySelector("button");
  if (first) first.focus();
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
  refreshControls();
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
    focusFirstChoice();
  } catch (error) {
    $("status").textContent = "The demo could not start: " + error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("send-order").addEventListener("click", sendOrder);
  $("clear-order").addEventListener("click", clearOrder);
  $("choice-skip").addEventListener("click", () => answer({ choice: "skip" }));
  $("restart").addEventListener("click", start);
  // Keys 1–k give answers their places in turn, Backspace starts the order again, S skips, and
  // Enter sends a complete order (on a focused button Enter presses that button instead).
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || !state.question) return;
    const key = event.key.toLowerCase();
    const count = state.question.items.length;
    if (/^[1-9]$/.test(key) && Number(key) <= count) {
      event.preventDefault();
      placeNext(Number(key) - 1);
    } else if (key === "backspace") {
      event.preventDefault();
      clearOrder();
    } else if (key === "s") {
      event.preventDefault();
      answer({ choice: "skip" });
    } else if (key === "enter" && document.activeElement.tagName !== "BUTTON") {
      event.preventDefault();
      sendOrder();
    }
  });
  start();
});
