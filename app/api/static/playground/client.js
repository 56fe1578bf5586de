// charnn's pages (the playground and the runs dashboard) talk to the public API through
// this file: the API key, requests, refusals explained, and a job's event stream.
// No dependencies. The key lives in this tab's sessionStorage only: it is sent as
// "Authorization: Bearer <key>", never put in a URL, and never written to the console.
"use strict";

const KEY_STORAGE = "charnn.apiKey";

const apiKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) || "",
  set(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  },
};

function authHeaders() {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

class ApiError extends Error {
  // lines: [[field, message], ...]; advice: what to do about a 401 or 403, if anything
  constructor(status, lines, advice = "") {
    super(lines.map(([, msg]) => msg).join("; "));
    this.status = status;
    this.lines = lines;
    this.advice = advice;
  }
}

// The scope a call needs (README, Security): admin trains, cancels, deletes, imports and
// uploads datasets; predict predicts, generates, evaluates and reads models, jobs and datasets.
function scopeOf(method, path) {
  if (method === "GET") return "predict";
  if (path === "/predict" || path === "/generate") return "predict";
  if (path.endsWith("/evaluate")) return "predict"; // it only reads the version
  return "admin";
}

function authAdvice(status, method, path) {
  const scope = scopeOf(method, path);
  const what =
    scope === "admin" ? "training, cancelling, deleting, importing and uploading" : "this";
  if (status === 401) {
    return (
      `This charnn asks for an API key. Enter a key with the ${scope} scope in the ` +
      `"API key" field at the top of the page (${what} needs ${scope}; an admin key may ` +
      "do everything), then try again."
    );
  }
  if (status === 403 && apiKey.get()) {
    return (
      `Your key may not do this: ${what} needs a key with the ${scope} scope. ` +
      `Enter an ${scope} key in the "API key" field at the top of the page.`
    );
  }
  return "";
}

// "data.pairs[0]" from ["body", "data", "pairs", 0]: the field named as the API names it.
function formatLoc(loc) {
  const parts = Array.isArray(loc) && loc[0] === "body" ? loc.slice(1) : loc || [];
  return parts.reduce((path, part) => {
    if (typeof part === "number") return `${path}[${part}]`;
    return path ? `${path}.${part}` : String(part);
  }, "");
}

function errorLines(status, data, text) {
  if (data && Array.isArray(data.detail)) {
    return data.detail.map((e) => [formatLoc(e.loc), e.msg]);
  }
  if (data && typeof data.detail === "string") return [["", data.detail]];
  return [["", `HTTP ${status}${text ? `: ${text.slice(0, 300)}` : ""}`]];
}

async function refusal(response, method, path) {
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const lines = errorLines(response.status, data, text);
  return new ApiError(response.status, lines, authAdvice(response.status, method, path));
}

async function api(method, path, body) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, [["", `could not reach the service (${err.message})`]]);
  }
  if (!response.ok) throw await refusal(response, method, path);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

// A file as the whole body (POST /datasets): the browser streams it from disk.
async function upload(path, file) {
  const headers = { ...authHeaders(), "Content-Type": "application/octet-stream" };
  let response;
  try {
    response = await fetch(path, { method: "POST", headers, body: file });
  } catch (err) {
    throw new ApiError(0, [["", `could not reach the service (${err.message})`]]);
  }
  if (!response.ok) throw await refusal(response, "POST", path);
  return response.json();
}

// --- a job's server-sent events, read with fetch (EventSource cannot send a key) ----------

// One event from its lines ("event: epoch", "id: 3", "data: {...}"); comments (": keep-alive")
// and unknown fields are skipped, as the SSE specification says.
function parseEvent(block) {
  const event = { name: "message", id: null, data: [] };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.name = value;
    else if (field === "id") event.id = value;
    else if (field === "data") event.data.push(value);
  }
  return event.data.length ? { ...event, data: event.data.join("\n") } : null;
}

// Reads GET /jobs/{id}/events to its end, resuming with Last-Event-ID when the stream
// drops (every `retryMs`: a restarting service has half a minute to come back).
// handlers: { job(summary), epoch(metrics), end(summary), dropped(attempt) }. Resolves
// when the job ended; rejects with an ApiError the service refused the stream with, or
// after `attempts` reconnections in a row that brought nothing new.
async function followEvents(jobId, handlers, { signal, attempts = 30, retryMs = 1000 } = {}) {
  const path = `/jobs/${encodeURIComponent(jobId)}/events`;
  let lastEpoch = 0;
  let failures = 0;
  while (!signal || !signal.aborted) {
    let progressed = false;
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      if (lastEpoch) headers["Last-Event-ID"] = String(lastEpoch);
      const response = await fetch(path, { headers, signal });
      if (!response.ok) throw await refusal(response, "GET", path);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (!event) continue;
          const data = JSON.parse(event.data);
          if (event.name === "epoch") {
            lastEpoch = Number(event.id) || data.epoch;
            progressed = true;
          }
          if (event.name === "end") {
            handlers.end(data);
            return;
          }
          if (handlers[event.name]) handlers[event.name](data);
        }
      }
    } catch (err) {
      if (err instanceof ApiError || (signal && signal.aborted)) throw err;
    }
    failures = progressed ? 1 : failures + 1;
    if (failures > attempts) {
      throw new ApiError(0, [["", "the event stream kept dropping; reload to look again"]]);
    }
    if (handlers.dropped) handlers.dropped(failures);
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

// --- small DOM helpers shared by the pages ------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// title: "Training refused"; the HTTP status is added when the API answered, and what to
// do about a missing or insufficient key.
function showError(box, err, title) {
  box.replaceChildren();
  const lines = err instanceof ApiError ? err.lines : [["", String(err)]];
  const status = err instanceof ApiError && err.status ? ` (HTTP ${err.status})` : "";
  box.append(el("p", {}, `${title}${status}:`));
  const list = el("ul");
  for (const [loc, msg] of lines) {
    const item = el("li");
    if (loc) item.append(el("code", {}, loc), ": ");
    item.append(msg);
    list.append(item);
  }
  box.append(list);
  if (err instanceof ApiError && err.advice) box.append(el("p", { class: "advice" }, err.advice));
  box.hidden = false;
}

function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
}

// The "API key" field of a page: kept in sessionStorage as it is typed; onChange runs
// when a key is saved or forgotten (the page reloads what it shows).
function installKeyField(onChange) {
  const input = $("api-key");
  const state = $("api-key-state");
  const show = () => {
    state.textContent = apiKey.get() ? "key set for this tab" : "no key";
  };
  input.value = apiKey.get();
  show();
  const save = () => {
    apiKey.set(input.value.trim());
    show();
    onChange();
  };
  $("api-key-save").addEventListener("click", save);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      save();
    }
  });
  $("api-key-forget").addEventListener("click", () => {
    input.value = "";
    save();
  });
}
