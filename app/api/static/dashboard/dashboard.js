// charnn runs dashboard: every job, live; chosen jobs' curves on one chart with the
// data, budgets, schedules and hyperparameters they differ in; models' versions with their
// metrics and files; datasets (datasets.js). Talks to the public API only, through client.js
// (the API key, requests). No dependencies.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 900, height: 320, left: 56, right: 56, top: 16, bottom: 44 };
const POLL_MS = 2000; // the jobs table is read again this often while the page is shown
const EPOCH_PAGE = 1000; // GET /jobs/{id}/epochs's largest page
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const COLOURS = ["#0b5cad", "#b35c00", "#1a7f37", "#8250df", "#bf3989", "#57606a"];

const view = { offset: 0, total: 0, jobs: [] }; // the page of jobs shown
const rows = new Map(); // job id -> its <tr>, kept so that a refresh keeps ticks and focus
const epochs = new Map(); // job id -> { items: [...], complete }: read once, then only new ones
const chosen = new Map(); // job id -> job summary, the jobs compared (across pages)
let polling = false;

// --- formatting -----------------------------------------------------------------------------

const dash = "–";
const fixed = (x) => (x === null || x === undefined ? dash : Number(x).toPrecision(4));
const percent = (x) => (x === null || x === undefined ? dash : `${Math.round(x * 100)}%`);
const tick = (x) => String(Number(x.toPrecision(4)));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return dash;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function when(iso) {
  if (!iso) return dash;
  const options = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  return new Date(iso).toLocaleString([], options);
}

// "embedding_rnn gru 64×2, adam 0.01": what tells runs apart at a glance
function network(hp) {
  const shape = hp.architecture === "rnn_cell" ? "" : ` ${hp.hidden_size}×${hp.num_layers}`;
  const cell = hp.architecture === "rnn_cell" ? "" : ` ${hp.cell}`;
  return `${hp.architecture}${cell}${shape}`;
}

const settings = (hp) => `${network(hp)}, ${hp.optimizer} lr ${hp.learning_rate}`;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- epochs: each job's history, read a page at a time and only what is new ----------------

async function syncEpochs(job) {
  const known = epochs.get(job.id) || { items: [], complete: false };
  epochs.set(job.id, known);
  if (known.complete) return known;
  const base = `/jobs/${encodeURIComponent(job.id)}/epochs`;
  let after = known.items.length ? known.items[known.items.length - 1].epoch : 0;
  for (;;) {
    const page = await api("GET", `${base}?after=${after}&limit=${EPOCH_PAGE}`);
    // two reads at once (a poll and a click) must not add an epoch twice
    const last = known.items.length ? known.items[known.items.length - 1].epoch : 0;
    known.items.push(...page.items.filter((e) => e.epoch > last));
    if (page.next_after === null) break;
    after = page.next_after;
  }
  known.complete = FINAL.has(job.status);
  return known;
}

function lossesOf(id) {
  const items = (epochs.get(id) || { items: [] }).items;
  const last = items[items.length - 1];
  const losses = items.map((e) => e.loss).filter((v) => typeof v === "number");
  return {
    final: last ? last.loss : null,
    best: losses.length ? Math.min(...losses) : null,
    accuracy: last ? last.train_char_accuracy : null,
  };
}

// --- the jobs table ---------------------------------------------------------------------

function query() {
  const params = new URLSearchParams({ limit: $("page-size").value, offset: view.offset });
  if ($("filter-model").value) params.set("model_name", $("filter-model").value);
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  return `/jobs?${params}`;
}

async function loadRuns() {
  const box = $("runs-error");
  try {
    const page = await api("GET", query());
    view.jobs = page.items;
    view.total = page.total;
    for (const job of page.items) if (chosen.has(job.id)) chosen.set(job.id, job);
    const shown = new Map([...page.items, ...chosen.values()].map((job) => [job.id, job]));
    await Promise.all([...shown.values()].map(syncEpochs));
    await syncVersions([...shown.values()]); // outcomes.js: stop reasons and best epochs
    clearError(box);
  } catch (err) {
    showError(box, err, "Listing jobs failed");
  }
  renderRuns();
  renderComparison();
}

function rowFor(job) {
  let row = rows.get(job.id);
  if (row) return row;
  const box = el("input", { type: "checkbox", "aria-label": `Compare job ${job.id.slice(0, 8)}` });
  box.addEventListener("change", () => {
    if (box.checked) chosen.set(job.id, view.jobs.find((j) => j.id === job.id) || job);
    else chosen.delete(job.id);
    renderComparison();
  });
  const cells = Array.from({ length: 12 }, () => el("td"));
  row = el("tr", { "data-job": job.id }, el("td", { class: "pick" }, box), ...cells);
  rows.set(job.id, row);
  return row;
}

function fillRow(row, job) {
  const { final, best, accuracy } = lossesOf(job.id);
  const status = el("span", { class: `badge ${job.status}` }, job.status);
  const values = [
    el("code", { title: job.id }, job.id.slice(0, 8)),
    job.model_name,
    datasetLabel(job.dataset), // datasets.js
    status,
    settings(job.hyperparameters),
    `${job.epoch} / ${job.epochs}`,
    fixed(final),
    fixed(best),
    percent(accuracy),
    outcomeOf(job), // outcomes.js
    duration(job.elapsed_seconds),
    when(job.started_at || job.created_at),
  ];
  const classes = ["id", "", "data", "", "hp", "num", "num", "num", "num", "outcome", "num", "when"];
  row.cells[3].title = job.dataset || "inline data"; // the whole id, where a name is cut
  values.forEach((value, i) => {
    const cell = row.cells[i + 1];
    cell.className = classes[i];
    cell.replaceChildren(value);
  });
  row.cells[0].firstChild.checked = chosen.has(job.id);
  row.classList.toggle("chosen", chosen.has(job.id));
}

function renderRuns() {
  const body = $("runs").tBodies[0];
  const shown = view.jobs.map((job) => {
    const row = rowFor(job);
    fillRow(row, job);
    return row;
  });
  if (!shown.length) {
    shown.push(el("tr", {}, el("td", { class: "empty", colspan: "13" }, "No jobs here yet.")));
  }
  body.replaceChildren(...shown);
  const size = Number($("page-size").value);
  const first = view.total ? view.offset + 1 : 0;
  const last = Math.min(view.offset + view.jobs.length, view.total);
  $("page-label").textContent = `${first}–${last} of ${view.total} jobs`;
  $("prev-page").disabled = view.offset === 0;
  $("next-page").disabled = view.offset + size >= view.total;
}

function turnPage(direction) {
  const size = Number($("page-size").value);
  view.offset = Math.max(0, view.offset + direction * size);
  loadRuns();
}

// --- comparing chosen jobs: one chart, and the hyperparameters they differ in -------------

function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((v) => v >= value * (1 - 1e-9));
}

function colourOf(index) {
  return COLOURS[index % COLOURS.length];
}

function renderComparison() {
  const jobs = [...chosen.values()];
  $("compare-hint").textContent = jobs.length
    ? `${jobs.length} job${jobs.length === 1 ? "" : "s"} chosen; untick to remove.`
    : "Tick two or more jobs above.";
  drawComparison(jobs);
  renderLegend(jobs);
  renderDifferences(jobs);
}

function drawComparison(jobs) {
  const chart = $("compare-chart");
  const { width, height, left, right, top, bottom } = CHART;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const histories = jobs.map((job) => (epochs.get(job.id) || { items: [] }).items);
  const lastEpoch = Math.max(1, ...jobs.map((job) => job.epochs));
  const finite = (v) => typeof v === "number" && Number.isFinite(v);
  const losses = histories
    .flat()
    .flatMap((e) => [e.loss, e.val_bits_per_char])
    .filter(finite);
  const lossTop = niceCeiling(Math.max(0, ...losses));
  const x = (epoch) =>
    lastEpoch === 1 ? left + plotW / 2 : left + ((epoch - 1) / (lastEpoch - 1)) * plotW;
  const y = (value, max) => top + plotH - Math.max(0, Math.min(value / max, 1)) * plotH;

  const title = chart.querySelector("title");
  title.textContent = jobs.length
    ? `Loss and accuracy per epoch of ${jobs.map((j) => j.id.slice(0, 8)).join(", ")}`
    : "Loss and accuracy per epoch: no jobs chosen";
  const parts = [title];
  for (let i = 0; i <= 4; i++) {
    const gy = y(i / 4, 1);
    parts.push(svg("line", { class: "grid-line", x1: left, x2: left + plotW, y1: gy, y2: gy }));
    const attrs = { x: left - 8, y: gy + 4, "text-anchor": "end" };
    parts.push(svg("text", attrs, tick((lossTop * i) / 4)));
    parts.push(svg("text", { x: left + plotW + 8, y: gy + 4 }, `${i * 25}%`));
  }
  for (const epoch of [1, Math.ceil(lastEpoch / 2), lastEpoch]) {
    const attrs = { x: x(epoch), y: top + plotH + 18, "text-anchor": "middle" };
    parts.push(svg("text", attrs, String(epoch)));
  }
  const frame = `M${left},${top}V${top + plotH}H${left + plotW}V${top}`;
  parts.push(svg("path", { class: "axis", fill: "none", d: frame }));
  parts.push(
    svg("text", { x: left + plotW / 2, y: height - 6, class: "axis-label" }, "epoch"),
  );
  jobs.forEach((job, index) => {
    const history = histories[index];
    const group = svg("g", { class: "series", "data-job": job.id, stroke: colourOf(index) });
    for (const [name, value, max] of [
      ["loss", (e) => e.loss, lossTop],
      ["accuracy", (e) => e.train_char_accuracy, 1],
      ["val-bpc", (e) => e.val_bits_per_char, lossTop], // text runs with validation data
    ]) {
      const points = history
        .filter((e) => finite(value(e)))
        .map((e) => `${x(e.epoch).toFixed(1)},${y(value(e), max).toFixed(1)}`);
      if (points.length) group.append(svg("polyline", { class: name, points: points.join(" ") }));
    }
    parts.push(group);
  });
  if (!jobs.length) {
    const attrs = { x: left + plotW / 2, y: top + plotH / 2, class: "empty" };
    parts.push(svg("text", attrs, "No jobs chosen"));
  }
  chart.replaceChildren(...parts);
}

function jobLabel(job) {
  return `${job.model_name} ${job.id.slice(0, 8)}`;
}

function swatch(index) {
  return el("span", { class: "swatch", style: `border-color: ${colourOf(index)}` });
}

function renderLegend(jobs) {
  $("compare-legend").replaceChildren(
    ...jobs.map((job, index) => {
      const { final, best } = lossesOf(job.id);
      const text = `${jobLabel(job)}: final loss ${fixed(final)}, best ${fixed(best)}`;
      return el("li", {}, swatch(index), " ", text);
    }),
  );
}

// Rows: the hyperparameters whose values are not all the same; columns: the chosen jobs.
function renderDifferences(jobs) {
  const table = $("differ");
  const head = el("tr", {}, el("th", { scope: "col" }, "Hyperparameter"));
  jobs.forEach((job, index) => head.append(el("th", { scope: "col" }, swatch(index), jobLabel(job))));
  table.tHead.replaceChildren(head);
  // the dataset first: runs on other data differ most
  const compared = (job) => ({ dataset: datasetLabel(job.dataset), ...job.hyperparameters });
  const rest = new Set(jobs.flatMap((job) => Object.keys(job.hyperparameters)));
  const names = ["dataset", ...[...rest].sort()];
  const shown = (job, name) => JSON.stringify(compared(job)[name] ?? null);
  const differing = names.filter((name) => new Set(jobs.map((j) => shown(j, name))).size > 1);
  const body = differing.map((name) =>
    el(
      "tr",
      { "data-hyperparameter": name },
      el("th", { scope: "row" }, name),
      ...jobs.map((job) => el("td", { class: "mono" }, shown(job, name))),
    ),
  );
  if (!body.length) {
    const message = jobs.length < 2 ? "Choose two jobs or more." : "None: the same everywhere.";
    body.push(el("tr", {}, el("td", { class: "empty", colspan: String(jobs.length + 1) }, message)));
  }
  table.tBodies[0].replaceChildren(...body);
}

// --- models: versions, their metrics and files ---------------------------------------------

async function loadModels() {
  const box = $("models-error");
  try {
    const models = await api("GET", "/models");
    for (const id of ["model-select", "filter-model"]) {
      const select = $(id);
      const keep = select.value;
      const first = id === "filter-model" ? [el("option", { value: "" }, "all models")] : [];
      select.replaceChildren(
        ...first,
        ...models.map((m) => el("option", { value: m.name }, m.name)),
      );
      if (models.some((m) => m.name === keep)) select.value = keep;
    }
    if (!models.length) $("model-select").append(el("option", { value: "" }, "no models yet"));
    clearError(box);
    await loadVersions();
  } catch (err) {
    showError(box, err, "Listing models failed");
  }
}

async function loadVersions() {
  const name = $("model-select").value;
  const body = $("versions").tBodies[0];
  if (!name) {
    body.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: "12" }, "No models.")));
    return;
  }
  const model = await api("GET", `/models/${encodeURIComponent(name)}`);
  body.replaceChildren(...[...model.versions].reverse().map(versionRow));
}

function versionRow(v) {
  const metrics = v.metrics || {};
  const val = v.validation || {}; // the scores at the best epoch, whose weights it holds
  const base = `/models/${encodeURIComponent(v.model_name)}/versions/${v.version}/files`;
  // short link texts keep thirteen columns within 1024 px; the title names the file
  const files = [["checkpoint.json", "checkpoint"], ["weights.safetensors", "weights"]];
  const links = files.map(([file, text]) => {
    const saved = `${v.model_name}-v${v.version}-${file}`;
    const link = el("a", { href: `${base}/${file}`, download: saved, title: file }, text);
    link.addEventListener("click", download);
    return link;
  });
  return el(
    "tr",
    { "data-version": String(v.version) },
    el("th", { scope: "row" }, String(v.version)),
    el("td", {}, v.task),
    el("td", { class: "hp" }, network(v.hyperparameters)),
    el("td", { class: "num" }, `${v.best_epoch || dash} of ${v.epochs}`),
    el("td", {}, v.stop_reason ? v.stop_reason.replace("_", " ") : dash),
    el("td", { class: "num" }, fixed(metrics.loss)),
    el("td", { class: "num" }, fixed(val.loss)),
    el("td", { class: "num" }, fixed(val.bits_per_char)),
    el("td", { class: "num" }, percent(val.char_accuracy)),
    el("td", { class: "num" }, v.parameters.toLocaleString()),
    el("td", { class: "when" }, when(v.created_at)),
    el("td", { class: "files" }, ...links),
  );
}

// A link cannot send the key: with one, the file is fetched with it and saved from memory.
async function download(event) {
  if (!apiKey.get()) return;
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const response = await fetch(link.getAttribute("href"), { headers: authHeaders() });
    if (!response.ok) throw await refusal(response, "GET", link.getAttribute("href"));
    const url = URL.createObjectURL(await response.blob());
    const save = el("a", { href: url, download: link.getAttribute("download") });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (err) {
    showError($("models-error"), err, "Download failed");
  }
}

// --- wiring ---------------------------------------------------------------------------------

async function poll() {
  if (polling || document.hidden) return;
  polling = true;
  try {
    await loadDatasets(); // uploads from the playground appear, named in the jobs table
    await loadRuns();
  } finally {
    polling = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  installKeyField(() => {
    loadDatasets().then(loadRuns);
    loadModels();
  });
  $("prev-page").addEventListener("click", () => turnPage(-1));
  $("next-page").addEventListener("click", () => turnPage(1));
  for (const id of ["page-size", "filter-model", "filter-status"]) {
    $(id).addEventListener("change", () => {
      view.offset = 0;
      loadRuns();
    });
  }
  $("model-select").addEventListener("change", () =>
    loadVersions().catch((err) => showError($("models-error"), err, "Listing versions failed")),
  );
  renderComparison();
  loadDatasets().then(loadRuns); // the jobs table names their datasets
  loadModels();
  setInterval(poll, POLL_MS);
});
