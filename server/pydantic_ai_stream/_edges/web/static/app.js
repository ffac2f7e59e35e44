// The chat page: one session at a time (`#agent=<name>&session=<id>`), its history, then its live run followed
// over the Vercel AI UI message stream. Every chunk is saved with its cursor (sessionStorage), so a reload goes
// on after the last chunk it rendered; a dropped stream is resumed the same way.

import { Api, HttpError } from "./api.js";
import { applyChunk, assistantMessage, openCalls, pendingCalls, userMessage, wireMessage } from "./message.js";
import { h, messageElement, updateMessage } from "./render.js";
import { sseEvents } from "./sse.js";
import { live, sessions, token } from "./store.js";

const $ = (id) => document.getElementById(id);
const api = new Api(token.get);
const STARTED = "pydantic-ai-stream.started"; // a run started in another tab (a `storage` event here)
const RETRY_MS = [250, 500, 1000, 2000, 4000];

const state = {
  agent: "",
  session: "",
  messages: [],
  current: null, // the assistant message the stream goes into
  user: null, // the user message that started it (not in the stored history until the run ends)
  continues: false, // the stream goes on with a message of the history (answers to a waiting run)
  cursor: null,
  phase: "loading", // loading | idle | streaming | stopping | waiting
  controller: null,
};
const elements = new Map();

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function setStatus(text, kind = "info") {
  $("status").textContent = text;
  $("status").dataset.kind = kind;
}

function setPhase(phase) {
  state.phase = phase;
  const busy = phase !== "idle" && phase !== "waiting";
  $("send").disabled = busy;
  $("stop").hidden = !["streaming", "stopping", "waiting"].includes(phase); // a waiting run can be stopped too
  $("stop").disabled = phase === "stopping";
  $("agent").disabled = busy || state.messages.length > 0;
  draw(); // now: what the phase says is on the page
  $("messages").setAttribute("aria-busy", String(busy)); // a screen reader reads the answer once it is whole
  document.body.dataset.phase = phase;
}

function save() {
  const { cursor, current, user, continues } = state;
  try {
    live.set(state.agent, state.session, { cursor, message: current, user, continues });
  } catch {
    live.clear(state.agent, state.session); // too large to keep (big files): a reload shows the run from its start
  }
}

// Rendering: at most once a frame, however fast chunks come (a hidden tab gets no frames: a timer then).
let scheduled = false;
function render() {
  if (scheduled) return;
  scheduled = true;
  if (document.hidden) setTimeout(draw, 100);
  else requestAnimationFrame(draw);
}

function draw() {
  scheduled = false;
  const log = $("messages");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const last = state.messages.at(-1);
  for (const message of state.messages) {
    let el = elements.get(message);
    if (!el) {
      el = messageElement(message);
      elements.set(message, el);
      log.append(el);
    }
    updateMessage(el, message, message === last && state.phase === "waiting" ? answers : null);
  }
  document.body.dataset.cursor = state.cursor ?? "";
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function renderSessions() {
  const list = $("session-list");
  list.replaceChildren(
    ...sessions.list().map((s) => {
      const href = `#agent=${encodeURIComponent(s.agent)}&session=${encodeURIComponent(s.id)}`;
      const current = s.id === state.session && s.agent === state.agent ? "page" : null;
      return h("li", {}, h("a", { href, "aria-current": current }, s.title, h("small", {}, `${s.agent} · ${s.id}`)));
    }),
  );
}

/** Answers to a waiting run's calls; sent together once every call has one. */
const answers = {
  approve(part, approved) {
    Object.assign(part, { state: "approval-responded", approval: { id: part.approval.id, approved } });
    answered();
  },
  output(part, output) {
    Object.assign(part, { state: "output-available", output });
    answered();
  },
};

function answered() {
  const message = state.messages.at(-1);
  if (pendingCalls(message).length) {
    setStatus("Answer the other calls to go on.");
    render();
    return;
  }
  Object.assign(message, { end: null, error: undefined, open: assistantMessage().open });
  Object.assign(state, { current: message, user: null, continues: true, cursor: null });
  post();
}

function post() {
  save();
  // A new prompt ends the request's messages; answers end them with the message they answer.
  const sent = state.continues ? state.messages : state.messages.filter((m) => m !== state.current);
  const body = { id: state.session, messages: sent.map(wireMessage), trigger: "submit-message" };
  follow((signal) => api.chat(state.agent, body, signal), { started: true });
}

/** The files chosen to go with the next message, each as `{mediaType, filename, url}` with a data URL. */
function chosenFiles() {
  const read = (file) =>
    new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve({ mediaType: file.type || "application/octet-stream", filename: file.name, url: reader.result });
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  return Promise.all(Array.from($("files").files, read));
}

function send(text, files) {
  const user = userMessage(`u${randomId()}`, text, files);
  const current = assistantMessage();
  state.messages.push(user, current);
  Object.assign(state, { current, user, continues: false, cursor: null });
  sessions.remember(state.session, state.agent, text.slice(0, 60));
  renderSessions();
  post();
}

/**
 * Stream the run into `state.current`: `open(signal)` gives the first response; when a stream drops before the
 * run's end, it goes on after the last cursor rendered.
 */
async function follow(open, { started = false, waiting = false } = {}) {
  state.controller?.abort();
  const controller = new AbortController();
  const { signal } = controller;
  state.controller = controller;
  setPhase(waiting ? "waiting" : "streaming");
  setStatus(waiting ? "The agent waits for your answer." : "Streaming…");
  try {
    let response = await open(signal);
    if (started) localStorage.setItem(STARTED, JSON.stringify({ agent: state.agent, session: state.session, at: Date.now() }));
    for (let attempt = 0, cursor = state.cursor; response; attempt++) {
      if (await consume(response, signal)) break;
      if (state.cursor !== cursor) [attempt, cursor] = [0, state.cursor]; // it got somewhere: a new drop
      if (attempt >= RETRY_MS.length) throw new Error("the stream keeps dropping; reload to try again");
      setStatus("Connection lost; resuming…");
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS[attempt]));
      response = await api.resume(state.agent, state.session, state.cursor, signal).catch((e) => {
        if (e instanceof HttpError && e.status < 500) throw e;
        return undefined; // the server is away: try again
      });
      if (response === null) break; // 204: no run any more (its stream expired)
    }
    if (!signal.aborted) await ended();
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof Reopen) {
      openSession();
      return;
    }
    setPhase("idle");
    setStatus(error.message, "error");
  }
}

/** Read one response; whether the run's stream reached its end. */
async function consume(response, signal) {
  for await (const event of sseEvents(response)) {
    if (signal.aborted) return true;
    if (event.data === "[DONE]") return true;
    const chunk = JSON.parse(event.data);
    if (state.phase === "waiting") setPhase("streaming"); // answered, here or in another tab
    applyChunk(state.current, chunk);
    if (event.id) state.cursor = event.id;
    save();
    render();
  }
  return Boolean(state.current.end);
}

async function ended() {
  live.clear(state.agent, state.session);
  const stopped = state.phase === "stopping" || state.current.end === "aborted";
  const calls = pendingCalls(state.current);
  // Open calls after the stream ended: the run waits for them, unless it ended otherwise (cancelled mid-call).
  const active = !stopped && calls.length > 0 && (await api.history(state.agent, state.session)).active;
  if (active) {
    goOnFrom(state.current, active, true);
    return;
  }
  setPhase("idle");
  setStatus(stopped ? "Stopped." : "");
}

/** Follow the run after `active` into `message`, whose calls it goes on from; `waiting` for their answers (given
 * here or in another tab). */
function goOnFrom(message, active, waiting) {
  Object.assign(message, { end: null, error: undefined, open: assistantMessage().open });
  Object.assign(state, { current: message, user: null, continues: true, cursor: active });
  follow((signal) => api.resume(state.agent, state.session, active, signal), { waiting });
}

/** Open the session the URL names (a new one when it names none): its history, then its live run if any. */
async function openSession() {
  state.controller?.abort();
  const params = new URLSearchParams(location.hash.slice(1));
  const agent = params.get("agent") || $("agent").value;
  if (!agent) return;
  const session = params.get("session") || randomId();
  if (!params.get("session") || !params.get("agent")) {
    history.replaceState(null, "", `#agent=${encodeURIComponent(agent)}&session=${encodeURIComponent(session)}`);
  }
  Object.assign(state, { agent, session, messages: [], current: null, user: null, cursor: null, continues: false });
  $("agent").value = agent;
  $("messages").replaceChildren();
  elements.clear();
  renderSessions();
  setPhase("loading");
  setStatus("Loading…");
  let stored;
  try {
    stored = await api.history(agent, session);
  } catch (error) {
    setStatus(error.status === 401 ? "Enter a token to continue." : error.message, "error");
    setPhase("idle");
    return;
  }
  state.messages = stored.messages ?? [];
  if (state.messages.length) sessions.remember(session, agent, firstText(state.messages));
  renderSessions();
  setStatus("");
  const kept = live.get(agent, session);
  if (!stored.active) {
    live.clear(agent, session); // its run ended: the history has it all
    setPhase("idle");
    return;
  }
  if (kept?.cursor && !before(kept.cursor, stored.active)) {
    resumeKept(kept); // this tab rendered this run up to `kept.cursor`: go on after it
    return;
  }
  const last = state.messages.at(-1);
  if (openCalls(last).length) {
    // The history ends with the calls the run waits on, or was answered on and goes on from.
    goOnFrom(last, stored.active, stored.pending?.length > 0 && pendingCalls(last).length > 0);
    return;
  }
  if (kept?.user && !endsWith(state.messages, kept.user)) state.messages.push(kept.user);
  Object.assign(state, { current: assistantMessage(), cursor: stored.active });
  state.messages.push(state.current);
  follow((signal) => api.resume(agent, session, stored.active, signal));
}

function resumeKept(kept) {
  const message = Object.assign(assistantMessage(), kept.message);
  if (kept.continues && state.messages.at(-1)?.role === "assistant") state.messages.pop(); // it is `message`
  if (kept.user && !endsWith(state.messages, kept.user)) state.messages.push(kept.user);
  state.messages.push(message);
  Object.assign(state, { current: message, user: kept.user, continues: kept.continues, cursor: kept.cursor });
  follow(async (signal) => {
    try {
      return await api.resume(state.agent, state.session, kept.cursor, signal);
    } catch (error) {
      // Its cursor is gone (trimmed: 410) or unknown here (416): open the session anew, without the kept copy.
      if (!(error instanceof HttpError) || (error.status !== 410 && error.status !== 416)) throw error;
      live.clear(state.agent, state.session);
      throw new Reopen();
    }
  });
}

/** Thrown to open the session anew. */
class Reopen extends Error {}

const firstText = (messages) => messages.find((m) => m.role === "user")?.parts.find((p) => p.type === "text")?.text;
const lastText = (message) => message?.parts.findLast((p) => p.type === "text")?.text;
const endsWith = (messages, user) => {
  const last = messages.findLast((m) => m.role === "user");
  return last && lastText(last) === lastText(user) && messages.at(-1) === last;
};

/** Whether stream cursor `a` comes before `b` (`<ms>-<seq>`, optionally `/<chunk>`; a bare entry id is its last). */
function before(a, b) {
  const key = (cursor) => {
    const [entry, chunk] = String(cursor).split("/");
    const [ms, seq] = entry.split("-").map(Number);
    return [ms, seq ?? 0, chunk === undefined ? Infinity : Number(chunk)];
  };
  const [x, y] = [key(a), key(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] < y[i];
  return false;
}

async function loadAgents() {
  const select = $("agent");
  try {
    const agents = await api.agents();
    select.replaceChildren(...agents.map((a) => h("option", { value: a.name }, a.name)));
    return true;
  } catch (error) {
    setStatus(error.status === 401 ? "Enter a token to continue." : error.message, "error");
    setPhase("idle");
    return false;
  }
}

function wire() {
  $("token").value = token.get();
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    token.set($("token").value.trim());
    if (await loadAgents()) openSession();
  });
  $("agent").addEventListener("change", () => {
    location.hash = `agent=${encodeURIComponent($("agent").value)}&session=${randomId()}`;
  });
  $("new-chat").addEventListener("click", () => {
    location.hash = `agent=${encodeURIComponent(state.agent || $("agent").value)}&session=${randomId()}`;
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || $("send").disabled || !state.agent) return;
    $("prompt").value = "";
    chosenFiles().then(
      (files) => {
        $("files").value = "";
        send(text, files);
      },
      (error) => setStatus(`a file could not be read: ${error.message}`, "error"),
    );
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", async () => {
    setPhase("stopping");
    setStatus("Stopping…");
    try {
      await api.cancel(state.agent, state.session);
    } catch (error) {
      setStatus(error.message, "error");
    }
  });
  window.addEventListener("hashchange", openSession);
  window.addEventListener("storage", (event) => {
    if (event.key !== STARTED || !event.newValue) return;
    const { agent, session } = JSON.parse(event.newValue);
    if (agent === state.agent && session === state.session && state.phase === "idle") openSession();
  });
}

wire();
setPhase("loading");
if (await loadAgents()) await openSession();
