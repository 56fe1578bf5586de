// The dashboard's datasets: a table of the uploaded corpora (GET /datasets), each deletable
// after a confirmation (DELETE /datasets/{id}; a 409 while a job trains on it is shown as
// the API words it), and their names for the jobs table.
"use strict";

const DATASET_PAGE = 100; // GET /datasets's largest page: the newest are listed
const datasetsById = new Map(); // id -> dataset, for the jobs table's "Data" column
let datasetsShown = null; // the ids listed, so that a poll redraws (and moves focus) on change

function bytes(size) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit ? `${value.toFixed(1)} ${units[unit]}` : `${value} B`;
}

// "fox.txt" for a named dataset, else its id's start; "inline" for a job without one.
function datasetLabel(id) {
  if (!id) return "inline";
  const dataset = datasetsById.get(id);
  return dataset && dataset.name ? dataset.name : id.slice(0, 8);
}

async function loadDatasets() {
  const box = $("datasets-error");
  try {
    const page = await api("GET", `/datasets?limit=${DATASET_PAGE}`);
    datasetsById.clear();
    for (const dataset of page.items) datasetsById.set(dataset.id, dataset);
    const ids = page.items.map((d) => d.id).join(" ");
    if (ids !== datasetsShown) renderDatasets(page.items);
    datasetsShown = ids;
    clearError(box);
  } catch (err) {
    showError(box, err, "Listing datasets failed");
  }
}

function renderDatasets(items) {
  const body = $("datasets").tBodies[0];
  const shown = items.map(datasetRow);
  if (!shown.length) {
    shown.push(el("tr", {}, el("td", { class: "empty", colspan: "8" }, "No datasets yet.")));
  }
  body.replaceChildren(...shown);
}

function datasetRow(d) {
  const remove = el("button", { type: "button", class: "delete" }, "Delete");
  remove.setAttribute("aria-label", `Delete dataset ${d.name || d.id}`);
  remove.addEventListener("click", () => deleteDataset(d));
  return el(
    "tr",
    { "data-dataset": d.id },
    el("th", { scope: "row" }, d.name || dash),
    el("td", { class: "id" }, el("code", { title: d.id }, d.id.slice(0, 8))),
    el("td", {}, d.kind),
    el("td", { class: "num" }, bytes(d.size_bytes)),
    el("td", { class: "num" }, d.characters.toLocaleString()),
    el("td", { class: "num" }, d.examples ? d.examples.toLocaleString() : dash),
    el("td", { class: "when" }, when(d.created_at)),
    el("td", {}, remove),
  );
}

async function deleteDataset(d) {
  const box = $("datasets-error");
  const what = d.name ? `${d.name} (${d.id.slice(0, 8)})` : d.id;
  if (!window.confirm(`Delete dataset ${what}? Its versions stay; new jobs cannot use it.`)) {
    return;
  }
  clearError(box);
  try {
    await api("DELETE", `/datasets/${encodeURIComponent(d.id)}`);
    await loadDatasets();
    $("datasets-status").textContent = `Deleted dataset ${what}.`; // said once it is gone
  } catch (err) {
    $("datasets-status").textContent = "";
    showError(box, err, `Deleting dataset ${what} refused`);
  }
}
