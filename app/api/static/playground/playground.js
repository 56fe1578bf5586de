// charnn playground: talks to the public API only (POST /train, GET /jobs, GET
// /jobs/{id}/events, GET /models, GET /models/{name}, POST /predict, POST /generate,
// POST /datasets, GET /datasets, POST /models/{name}/versions/{n}/evaluate),
// through client.js (the API key, requests, the event stream). No dependencies.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 640, height: 300, left: 52, right: 52, top: 16, bottom: 44 };
const MAX_ROWS = 500; // epochs shown in the table (the newest ones)
const MAX_MARKERS = 40; // a dot per epoch up to this many epochs, then lines only

const ETA_EPOCHS = 6; // the ETA between two summaries: from the last epochs' recorded_at
const RENDER_MS = 100; // epochs that arrive together (a resumed stream) are drawn once
const JOB_STORAGE = "charnn.job"; // the followed job, found again when the page reloads
const RECENT_JOBS = 10; // jobs offered to follow
// { job, request, history, controller } while a job is followed (client.js reads its stream)
let following = null;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const percent = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);
const fixed = (x) => (x === null || x === undefined ? "–" : Number(x).toPrecision(4));
const tick = (x) => String(Number(x.toPrecision(4)));

// --- the training form --------------------------------------------------------------------

function dataKind() {
  return document.querySelector('input[name="data_kind"]:checked').value;
}

// "hello -> ohlol": one space either side of the arrow is layout, any other is data.
function parsePairs(source) {
  const pairs = [];
  const problems = [];
  source.split("\n").forEach((raw, index) => {
    const line = raw.replace(/\r$/, "");
    if (!line.trim()) return;
    const arrow = line.indexOf("->");
    if (arrow < 0) {
      problems.push([`line ${index + 1}`, "write each pair as input -> target"]);
      return;
    }
    pairs.push({
      input: line.slice(0, arrow).replace(/ $/, ""),
      target: line.slice(arrow + 2).replace(/^ /, ""),
    });
  });
  return { pairs, problems };
}

function numberField(id, problems) {
  const input = $(id);
  if (input.disabled) return undefined;
  if (input.validity.badInput) {
    problems.push([document.querySelector(`label[for="${id}"]`).textContent, "enter a number"]);
    return undefined;
  }
  return input.value.trim() === "" ? undefined : Number(input.value);
}

// Whether the user changed a field from what the page started with.
function changed(id) {
  const field = $(id);
  if (field.tagName === "SELECT") {
    const initial = [...field.options].find((option) => option.defaultSelected);
    return field.value !== (initial ? initial.value : field.options[0].value);
  }
  return field.value !== field.defaultValue;
}

function trainRequest() {
  const problems = [];
  // The form starts with the tutorial's values, which suit aligned pairs; plain text sends
  // only what the user changed, so the service picks its defaults for text for the rest.
  // A dataset's kind is the server's to know: its defaults apply as for text, and as for
  // labeled pairs (a classifier).
  const wanted = dataKind() === "pairs" ? () => true : changed;
  const hyperparameters = {};
  for (const id of ["architecture", "cell", "optimizer"]) {
    if (wanted(id)) hyperparameters[id] = $(id).value;
  }
  for (const id of [
    "hidden_size", "embedding_size", "num_layers", "learning_rate", "epochs",
    "validation_fraction", "seq_len",
  ]) {
    const value = numberField(id, problems);
    if (value !== undefined && wanted(id)) hyperparameters[id] = value;
  }
  const seed = numberField("seed", problems);
  if (wanted("seed")) hyperparameters.seed = seed === undefined ? null : seed;
  Object.assign(hyperparameters, stoppingAndSchedule(problems)); // training-options.js

  let source;
  if (dataKind() === "pairs") {
    const parsed = parsePairs($("pairs").value);
    problems.push(...parsed.problems);
    source = { data: { pairs: parsed.pairs } };
  } else if (dataKind() === "text") {
    source = { data: { text: $("text").value } };
  } else if (dataKind() === "labels") {
    const parsed = parseLabeledPairs($("labels").value);
    problems.push(...parsed.problems);
    source = { data: { pairs: parsed.pairs } };
  } else {
    if (!$("dataset-select").value) problems.push(["dataset", "upload or pick a dataset"]);
    source = { dataset: $("dataset-select").value };
  }
  const request = { model_name: $("model-name").value.trim(), ...source, hyperparameters };
  return { request, problems };
}

// Fields that the chosen architecture or data ignore are disabled, and not sent.
function syncTrainForm() {
  const architecture = $("architecture").value;
  const kind = dataKind();
  $("pairs-field").hidden = kind !== "pairs";
  $("text-field").hidden = kind !== "text";
  $("labels-field").hidden = kind !== "labels";
  $("dataset-field").hidden = kind !== "dataset";
  for (const input of document.querySelectorAll("[data-arch]")) {
    input.disabled = !input.dataset.arch.split(" ").includes(architecture);
  }
  for (const input of document.querySelectorAll("[data-kind]")) {
    input.disabled = !input.dataset.kind.split(" ").includes(kind);
  }
  syncScheduleFields();
  $("architecture-hint").textContent =
    architecture === "embedding_rnn"
      ? "Embedding → recurrent layers → Linear."
      : "One-hot inputs; the hidden state is the output, so its size is the output vocabulary's.";
}

async function startTraining(event) {
  event.preventDefault();
  const box = $("train-error");
  clearError(box);
  const { request, problems } = trainRequest();
  if (problems.length) {
    showError(box, new ApiError(0, problems), "Check the form");
    return;
  }
  $("train-button").disabled = true;
  try {
    const job = await api("POST", "/train", request);
    follow(job, request);
    loadRecentJobs();
  } catch (err) {
    showError(box, err, "Training refused");
    $("train-button").disabled = false;
  }
}

// --- following a job ----------------------------------------------------------------------

// The stream (GET /jobs/{id}/events, read by client.js's followEvents): a "job" event with
// the job's summary first and at each change of status, an "epoch" event per epoch (its id
// is the epoch: a dropped stream resumes with Last-Event-ID and gets only the epochs after
// it), "end". The job's id stays in sessionStorage, so a reload follows it again.
function follow(job, request) {
  if (following) following.controller.abort();
  const controller = new AbortController();
  following = { job, request, history: [], lastStatus: null, pending: null, controller };
  rememberJob(job, request);
  $("train-button").disabled = true;
  $("cancel-button").disabled = false;
  $("plot-link").href = `/jobs/${encodeURIComponent(job.id)}/plot.svg`;
  $("plot-link").hidden = false;
  clearError($("train-error"));
  hideStepProgress();
  renderJob(job);
  const handlers = {
    job: (summary) => renderJob(summary),
    epoch: (epoch) => addEpoch(epoch),
    progress: (step) => showStepProgress(step), // step-progress.js
    end: (final) => {
      renderJob(final);
      finished(final);
    },
    dropped: () => {
      following.lastStatus = null; // the next summary says how the job is again
      setStatus("The event stream dropped; reconnecting…");
    },
  };
  followEvents(job.id, handlers, { signal: controller.signal }).catch((err) => {
    if (controller.signal.aborted) return;
    setStatus("Lost the job's event stream.", "failed");
    showError($("train-error"), err, "Following the job failed");
    jobEnded();
  });
}

// Small pairs are kept with the id, so that a reloaded page still marks matching epochs.
function rememberJob(job, request) {
  const pairs = request && request.data && request.data.pairs;
  const kept = pairs && JSON.stringify(pairs).length < 10000 ? { data: { pairs } } : null;
  sessionStorage.setItem(JOB_STORAGE, JSON.stringify({ id: job.id, request: kept }));
}

async function followRemembered() {
  let remembered;
  try {
    remembered = JSON.parse(sessionStorage.getItem(JOB_STORAGE) || "null");
  } catch {
    remembered = null;
  }
  if (!remembered || !remembered.id) return;
  try {
    const job = await api("GET", `/jobs/${encodeURIComponent(remembered.id)}`);
    follow(job, remembered.request);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) sessionStorage.removeItem(JOB_STORAGE);
    showError($("train-error"), err, "Finding the last job failed");
  }
}

async function loadRecentJobs() {
  const select = $("recent-jobs");
  try {
    const page = await api("GET", `/jobs?limit=${RECENT_JOBS}`);
    const chosen = following ? following.job.id : select.value;
    select.replaceChildren(
      ...page.items.map((job) => {
        const text = `${job.model_name} ${job.id.slice(0, 8)}: ${job.status}, ${job.epoch}/${job.epochs} epochs`;
        return el("option", { value: job.id, title: job.created_at }, text);
      }),
    );
    if (!page.items.length) select.append(el("option", { value: "" }, "no jobs yet"));
    if (page.items.some((job) => job.id === chosen)) select.value = chosen;
    $("follow-button").disabled = !page.items.length;
    clearError($("jobs-error"));
  } catch (err) {
    select.replaceChildren(el("option", { value: "" }, "–"));
    $("follow-button").disabled = true;
    showError($("jobs-error"), err, "Listing jobs failed");
  }
}

async function followChosen(event) {
  event.preventDefault();
  const id = $("recent-jobs").value;
  if (!id) return;
  try {
    follow(await api("GET", `/jobs/${encodeURIComponent(id)}`), null);
  } catch (err) {
    showError($("jobs-error"), err, "Reading the job failed");
  }
}

// What an epoch costs the job, as the service's eta_seconds counts it: the wall-clock
// time between consecutive epochs of one attempt (checkpoint and registry writes
// included), the training seconds alone only until there are two.
function secondsPerEpoch(recent) {
  const gaps = [];
  for (let i = 1; i < recent.length; i++) {
    if (recent[i].attempt === recent[i - 1].attempt) {
      gaps.push((Date.parse(recent[i].recorded_at) - Date.parse(recent[i - 1].recorded_at)) / 1000);
    }
  }
  const durations = gaps.length ? gaps : recent.map((e) => e.seconds);
  return durations.reduce((sum, s) => sum + s, 0) / durations.length;
}

// An epoch trained again (after a crash) replaces the one of its number, and those after.
function addEpoch(epoch) {
  if (!following) return;
  const { job, history } = following;
  while (history.length && history[history.length - 1].epoch >= epoch.epoch) history.pop();
  history.push(epoch);
  const seconds = secondsPerEpoch(history.slice(-ETA_EPOCHS));
  following.job = {
    ...job,
    epoch: epoch.epoch,
    progress: Math.min(epoch.epoch / job.epochs, 1),
    eta_seconds: job.status === "running" ? seconds * (job.epochs - epoch.epoch) : null,
  };
  if (following.pending === null) {
    following.pending = setTimeout(() => renderJob(following.job), RENDER_MS);
  }
}

function setStatus(message, kind = "") {
  const status = $("train-status");
  status.textContent = message;
  status.className = `status ${kind}`;
}

function renderJob(job) {
  const history = following ? following.history : [];
  if (following) {
    clearTimeout(following.pending);
    following.pending = null;
    following.job = job;
  }
  // a job followed mid-epoch shows where it stands before its next progress event
  if (job.status === "running" && job.step_progress) showStepProgress(job.step_progress);
  $("train-progress").value = job.progress;
  const eta = job.eta_seconds ? `, about ${Math.ceil(job.eta_seconds)} s left` : "";
  $("progress-label").textContent = `${job.epoch} / ${job.epochs} epochs${eta}`;
  // announce status changes, not every epoch: the table and chart carry the details
  if (following && job.status !== following.lastStatus) {
    following.lastStatus = job.status;
    const label = { queued: "queued", running: "training" }[job.status];
    if (label) setStatus(`Job ${job.id.slice(0, 8)} for ${job.model_name}: ${label}…`);
  }
  drawChart(history, job.epochs);
  renderEpochs(history);
}

function finished(job) {
  const history = following ? following.history : [];
  const last = history[history.length - 1];
  const said = last ? ` Last prediction: “${last.sample_prediction}”.` : "";
  if (job.status === "succeeded") {
    setStatus(`Done: ${job.model_name} version ${job.version} is ready.${said}`, "succeeded");
    const pairs = targetPairs();
    if (pairs) $("predict-inputs").value = pairs[0].input;
    $("step-progress").hidden = true;
    showOutcome(job);
    loadModels(job.model_name, job.version);
  } else if (job.status === "failed") {
    setStatus(`Job ${job.id.slice(0, 8)} failed.`, "failed");
    const reason = new ApiError(0, [["", job.error || "no reason given"]]);
    showError($("train-error"), reason, "The job failed");
  } else {
    setStatus(`Job ${job.id.slice(0, 8)} ${job.status} after ${job.epoch} epochs.`, job.status);
  }
  jobEnded();
}

function jobEnded() {
  $("train-button").disabled = false;
  $("cancel-button").disabled = true;
  loadRecentJobs();
}

async function cancelJob() {
  if (!following) return;
  try {
    await api("POST", `/jobs/${encodeURIComponent(following.job.id)}/cancel`);
    setStatus("Cancelling: the job stops within one epoch…");
  } catch (err) {
    showError($("train-error"), err, "Cancel refused");
  }
}

function targetPairs() {
  const request = following && following.request;
  return request && request.data ? request.data.pairs : null;
}

function targetOf(input) {
  const pairs = targetPairs();
  const pair = pairs ? pairs.find((p) => p.input === input) : null;
  return pair ? pair.target : null;
}

function renderEpochs(history) {
  const body = $("epoch-table").tBodies[0];
  const shown = history.slice(-MAX_ROWS);
  const rows = shown.map((e) => {
    const row = el(
      "tr",
      {},
      el("td", {}, String(e.epoch)),
      el("td", {}, fixed(e.loss)),
      el("td", {}, percent(e.train_char_accuracy)),
      el("td", { class: "mono", title: e.sample_input }, e.sample_input),
      el(
        "td",
        { class: "prediction", title: e.sample_prediction },
        el("span", { class: "predicted" }, e.sample_prediction),
      ),
    );
    if (targetOf(e.sample_input) === e.sample_prediction) {
      row.classList.add("match");
      row.cells[4].append(el("span", { class: "visually-hidden" }, " (matches the target)"));
    }
    return row;
  });
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { class: "empty", colspan: "5" }, "No epochs yet.")));
  }
  body.replaceChildren(...rows);
  const scroller = body.closest(".table-scroll");
  scroller.scrollTop = scroller.scrollHeight;
}

// --- the chart: inline SVG, loss on the left axis, accuracy (0-100%) on the right --------

function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((v) => v >= value * (1 - 1e-9));
}

// Epoch labels: 1, 3, 5 ... for short runs; 1 and round multiples (20, 40 ...) for long ones.
function epochTicks(last) {
  const rough = last / 10;
  const power = 10 ** Math.floor(Math.log10(Math.max(rough, 1)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= rough);
  if (step <= 2) return Array.from({ length: Math.ceil(last / step) }, (_, i) => 1 + i * step);
  const ticks = [1];
  for (let epoch = step; epoch <= last; epoch += step) ticks.push(epoch);
  return ticks;
}

// A text label of the chart, centred on (x, y) unless attrs say otherwise.
function label(x, y, text, attrs = {}) {
  return svg("text", { x, y, "text-anchor": "middle", ...attrs }, text);
}

function drawChart(history, epochs) {
  const chart = $("chart");
  const { width, height, left, right, top, bottom } = CHART;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const lastEpoch = Math.max(epochs, ...history.map((e) => e.epoch), 1);
  const finite = (v) => typeof v === "number" && Number.isFinite(v);
  const losses = history.flatMap((e) => [e.loss, e.val_loss]).filter(finite);
  const lossTop = niceCeiling(Math.max(0, ...losses));
  const x = (epoch) =>
    lastEpoch === 1 ? left + plotW / 2 : left + ((epoch - 1) / (lastEpoch - 1)) * plotW;
  const y = (value, max) => top + plotH - Math.max(0, Math.min(value / max, 1)) * plotH;

  const title = chart.querySelector("title");
  title.textContent = history.length
    ? `Loss and accuracy for ${history.length} of ${epochs} epochs; ` +
      `last loss ${fixed(history[history.length - 1].loss)}, ` +
      `char accuracy ${percent(history[history.length - 1].train_char_accuracy)}`
    : "Loss and accuracy per epoch: no epochs yet";
  const parts = [title];

  for (let i = 0; i <= 4; i++) {
    const gy = y(i / 4, 1);
    parts.push(svg("line", { class: "grid-line", x1: left, x2: left + plotW, y1: gy, y2: gy }));
    parts.push(label(left - 8, gy + 4, tick((lossTop * i) / 4), { "text-anchor": "end" }));
    parts.push(label(left + plotW + 8, gy + 4, `${i * 25}%`, { "text-anchor": "start" }));
  }
  for (const epoch of epochTicks(lastEpoch)) {
    parts.push(label(x(epoch), top + plotH + 18, String(epoch)));
  }
  const frame = `M${left},${top}V${top + plotH}H${left + plotW}V${top}`;
  parts.push(svg("path", { class: "axis", fill: "none", d: frame }));
  const midX = left + plotW / 2;
  const midY = top + plotH / 2;
  parts.push(
    label(midX, height - 6, "epoch", { class: "axis-label" }),
    label(14, midY, "loss", { class: "axis-label", transform: `rotate(-90 14 ${midY})` }),
    label(width - 10, midY, "accuracy", {
      class: "axis-label",
      transform: `rotate(90 ${width - 10} ${midY})`,
    }),
  );
  if (!history.length) parts.push(label(midX, midY, "No epochs yet", { class: "empty" }));
  const series = [
    ["loss", (e) => e.loss, lossTop],
    ["accuracy", (e) => e.train_char_accuracy, 1],
    ["val-loss", (e) => e.val_loss, lossTop],
    ["val-accuracy", (e) => e.val_char_accuracy, 1],
  ];
  const present = new Set();
  for (const [name, value, max] of series) {
    const points = history
      .filter((e) => finite(value(e)))
      .map((e) => [x(e.epoch).toFixed(1), y(value(e), max).toFixed(1)]);
    if (!points.length) continue;
    present.add(name);
    const group = svg("g", { class: `series ${name}` });
    const line = points.map(([px, py]) => `${px},${py}`).join(" ");
    group.append(svg("polyline", { class: `line ${name}`, points: line }));
    if (points.length <= MAX_MARKERS) {
      for (const [cx, cy] of points) group.append(svg("circle", { class: name, cx, cy, r: 3 }));
    }
    parts.push(group);
  }
  $("legend-val-loss").hidden = !present.has("val-loss");
  $("legend-val-accuracy").hidden = !present.has("val-accuracy");
  chart.replaceChildren(...parts);
}

// --- models, versions, predict and generate -----------------------------------------------

// version ("" for the latest) -> task: a classifier is asked for its top labels
let versionTasks = new Map();

async function loadModels(selectName, selectVersion) {
  const box = $("models-error");
  clearError(box);
  try {
    const models = await api("GET", "/models");
    const select = $("model-select");
    const keep = selectName || select.value;
    const count = (n) => `${n} version${n === 1 ? "" : "s"}`;
    select.replaceChildren(
      ...models.map((m) => el("option", { value: m.name }, `${m.name} (${count(m.version_count)})`)),
    );
    if (!models.length) select.append(el("option", { value: "" }, "no models yet: train one"));
    if (models.some((m) => m.name === keep)) select.value = keep;
    await loadVersions(selectVersion);
  } catch (err) {
    showError(box, err, "Listing models failed");
  }
}

async function loadVersions(selectVersion) {
  const name = $("model-select").value;
  const select = $("version-select");
  const body = $("versions").tBodies[0];
  const usable = Boolean(name);
  $("predict-button").disabled = !usable;
  $("generate-button").disabled = !usable;
  $("evaluate-button").disabled = !usable;
  if (!name) {
    select.replaceChildren(el("option", { value: "" }, "–"));
    const empty = el("td", { class: "empty", colspan: "11" }, "No models yet.");
    body.replaceChildren(el("tr", {}, empty));
    return;
  }
  const model = await api("GET", `/models/${encodeURIComponent(name)}`);
  const versions = [...model.versions].reverse();
  const latest = versions.length ? versions[0].version : null;
  select.replaceChildren(
    el("option", { value: "" }, latest ? `latest (${latest})` : "latest"),
    ...versions.map((v) => el("option", { value: String(v.version) }, `version ${v.version}`)),
  );
  if (versions.some((v) => v.version === selectVersion)) select.value = String(selectVersion);
  body.replaceChildren(...versions.map(versionRow));
  versionTasks = new Map(versions.map((v) => [String(v.version), v.task]));
  versionTasks.set("", latest ? versionTasks.get(String(latest)) : undefined);
  markSelectedVersion();
}

function vocabText(vocab) {
  return vocab.labels
    ? `${vocab.input.join("")} → ${vocab.labels.join(", ")}`
    : `${vocab.input.join("")} → ${vocab.output.join("")}`;
}

function versionRow(v) {
  const hp = v.hyperparameters;
  const layers = `${v.config.num_layers}×${v.config.hidden_size}`;
  const arch =
    hp.architecture === "embedding_rnn"
      ? `${hp.architecture} (${hp.cell}, ${layers})`
      : `${hp.architecture} (${hp.cell})`;
  const metrics = v.metrics || {};
  const val = v.validation || {};
  const best = v.best_epoch ? `${v.best_epoch} of ${v.epochs}` : "–";
  return el(
    "tr",
    { "data-version": String(v.version) },
    el("th", { scope: "row" }, String(v.version)),
    el("td", {}, v.task),
    el("td", {}, arch),
    el("td", { class: "mono", title: vocabText(v.vocab) }, vocabText(v.vocab)),
    el("td", {}, fixed(metrics.loss)),
    el("td", {}, percent(metrics.train_char_accuracy)),
    el("td", {}, best),
    el("td", {}, v.stop_reason ? v.stop_reason.replace("_", " ") : "–"),
    el("td", {}, fixed(val.loss)),
    el("td", {}, fixed(val.bits_per_char)),
    el("td", {}, new Date(v.created_at).toLocaleString()),
  );
}

function markSelectedVersion() {
  const rows = $("versions").tBodies[0].rows;
  const chosen = $("version-select").value || (rows[0] && rows[0].dataset.version);
  for (const row of rows) row.classList.toggle("selected", row.dataset.version === chosen);
}

function chosenModel() {
  const version = $("version-select").value;
  return { model_name: $("model-select").value, ...(version ? { version: Number(version) } : {}) };
}

async function predict(event) {
  event.preventDefault();
  const box = $("predict-error");
  const output = $("predict-output");
  clearError(box);
  const inputs = $("predict-inputs")
    .value.split("\n")
    .map((s) => s.replace(/\r$/, ""))
    .filter((s) => s.length);
  const classify = versionTasks.get($("version-select").value) === "classify";
  try {
    const body = { ...chosenModel(), inputs, ...(classify ? { top_k: 3 } : {}) };
    const answer = await api("POST", "/predict", body);
    output.replaceChildren(
      ...answer.outputs.map((out, i) =>
        el(
          "li",
          {},
          el("code", {}, inputs[i]),
          el("span", { class: "arrow", "aria-label": "gives" }, "→"),
          el("output", {}, out),
          ...(answer.labels ? [labelScores(answer.labels[i])] : []),
        ),
      ),
      el("li", { class: "version" }, `${answer.model_name}, version ${answer.version}`),
    );
  } catch (err) {
    output.replaceChildren();
    showError(box, err, "Prediction refused");
  }
}

// a classifier's answer: its label's probability, then the top labels with theirs
function labelScores(scores) {
  const top = scores.top_k.map((t) => `${t.label} ${percent(t.probability)}`).join(", ");
  const text = ` ${percent(scores.probability)}${top ? ` (top: ${top})` : ""}`;
  return el("span", { class: "label-scores" }, text);
}

async function generate(event) {
  event.preventDefault();
  const box = $("generate-error");
  const output = $("generate-output");
  clearError(box);
  const problems = [];
  const request = { ...chosenModel(), prompt: $("prompt").value };
  const fields = [["length", "length"], ["temperature", "temperature"], ["generate-seed", "seed"]];
  for (const [id, key] of fields) {
    const value = numberField(id, problems);
    if (value !== undefined) request[key] = value;
  }
  if (problems.length) {
    showError(box, new ApiError(0, problems), "Check the form");
    return;
  }
  try {
    const answer = await api("POST", "/generate", request);
    const continued = answer.text.startsWith(request.prompt);
    output.replaceChildren(
      ...(continued
        ? [el("strong", {}, request.prompt), answer.text.slice(request.prompt.length)]
        : [answer.text]),
    );
    output.hidden = false;
  } catch (err) {
    output.hidden = true;
    showError(box, err, "Generation refused");
  }
}

// --- datasets -----------------------------------------------------------------------------

async function loadDatasets(select) {
  const page = await api("GET", "/datasets?limit=100");
  const options = page.items.map((d) =>
    el("option", { value: d.id }, `${d.name || d.id.slice(0, 8)} (${d.kind}, ${d.characters} characters)`),
  );
  $("dataset-select").replaceChildren(...options);
  if (select) $("dataset-select").value = select;
  const kept = $("evaluate-dataset").value; // Evaluate offers the same datasets
  $("evaluate-dataset").replaceChildren(...options.map((option) => option.cloneNode(true)));
  if (kept) $("evaluate-dataset").value = kept;
}

async function uploadDataset() {
  const box = $("dataset-error");
  clearError(box);
  const file = $("dataset-file").files[0];
  if (!file) {
    showError(box, new ApiError(0, [["file", "choose a file first"]]), "Nothing to upload");
    return;
  }
  const kind = $("dataset-kind").value;
  const query = new URLSearchParams({ kind, name: file.name.slice(0, 64) });
  $("dataset-upload").disabled = true;
  $("dataset-status").textContent = `Uploading ${file.name}…`;
  try {
    const dataset = await upload(`/datasets?${query}`, file);
    $("dataset-status").textContent =
      `Dataset ${dataset.id}: ${dataset.characters} characters, ${dataset.vocab_size} distinct.`;
    await loadDatasets(dataset.id);
  } catch (err) {
    $("dataset-status").textContent = "";
    showError(box, err, "Upload refused");
  } finally {
    $("dataset-upload").disabled = false;
  }
}

// --- wiring -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("train-form").addEventListener("submit", startTraining);
  $("train-form").addEventListener("change", syncTrainForm);
  $("cancel-button").addEventListener("click", cancelJob);
  $("pick-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadModels();
  });
  $("model-select").addEventListener("change", () =>
    loadVersions().catch((err) => showError($("models-error"), err, "Listing versions failed")),
  );
  $("version-select").addEventListener("change", markSelectedVersion);
  $("predict-form").addEventListener("submit", predict);
  $("generate-form").addEventListener("submit", generate);
  $("evaluate-form").addEventListener("submit", evaluate); // evaluate.js
  $("evaluate-form").addEventListener("change", syncEvaluateForm);
  $("follow-form").addEventListener("submit", followChosen);
  $("dataset-upload").addEventListener("click", uploadDataset);
  installKeyField(() => {
    loadModels();
    loadRecentJobs();
    loadDatasets().catch(() => {});
  });
  syncTrainForm();
  drawChart([], Number($("epochs").value) || 1);
  renderEpochs([]);
  loadModels();
  loadRecentJobs();
  loadDatasets().catch(() => {}); // listing needs a read key: the upload says why if refused
  followRemembered();
});
