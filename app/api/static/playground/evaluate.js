// The playground's "Evaluate": scores the chosen version on its held-out split, on pasted
// data or on an uploaded dataset (POST /models/{name}/versions/{n}/evaluate) and shows nll, bits/char, accuracy and
// what was counted.
"use strict";

function evaluateOn() {
  return document.querySelector('input[name="evaluate_on"]:checked').value;
}

function syncEvaluateForm() {
  $("evaluate-data-field").hidden = evaluateOn() !== "data";
  $("evaluate-dataset-field").hidden = evaluateOn() !== "dataset";
}

// Pasted data as the version's task reads it: text, "input -> target" or "input,label".
function pastedData(task, problems) {
  const source = $("evaluate-data").value;
  if (task === "text") return { text: source };
  const parsed = task === "classify" ? parseLabeledPairs(source) : parsePairs(source);
  problems.push(...parsed.problems);
  if (!parsed.pairs.length) problems.push(["data", "paste one example or more"]);
  return { pairs: parsed.pairs };
}

// The request's body: the held-out split, pasted examples, or an uploaded dataset whole.
function evaluationBody(task, problems) {
  const on = evaluateOn();
  if (on === "validation") return { split: "validation" };
  if (on === "data") return { data: pastedData(task, problems) };
  const dataset = $("evaluate-dataset").value;
  if (!dataset) problems.push(["dataset", "upload a dataset first (Train, Uploaded dataset)"]);
  return { dataset };
}

// The version shown as chosen: "latest" is the newest listed.
function evaluatedVersion() {
  const chosen = $("version-select").value;
  if (chosen) return chosen;
  const first = $("versions").tBodies[0].rows[0];
  return first ? first.dataset.version : "";
}

async function evaluate(event) {
  event.preventDefault();
  const box = $("evaluate-error");
  const output = $("evaluate-output");
  clearError(box);
  const name = $("model-select").value;
  const version = evaluatedVersion();
  const problems = [];
  if (!name || !version) problems.push(["model", "train or pick a model first"]);
  const task = versionTasks.get(version);
  const body = evaluationBody(task, problems);
  if (problems.length) {
    output.hidden = true;
    showError(box, new ApiError(0, problems), "Check the form");
    return;
  }
  const path = `/models/${encodeURIComponent(name)}/versions/${version}/evaluate`;
  $("evaluate-button").disabled = true;
  try {
    showEvaluation(await api("POST", path, body));
  } catch (err) {
    output.hidden = true;
    showError(box, err, "Evaluation refused");
  } finally {
    $("evaluate-button").disabled = false;
  }
}

function showEvaluation(score) {
  const pairs = [
    ["version", `${score.model_name} ${score.version} (${score.source})`],
    ["nll", Number(score.nll).toFixed(4)],
    ["bits/char", Number(score.bits_per_character).toFixed(3)],
    ["char accuracy", percent(score.char_accuracy)],
  ];
  if (score.seq_accuracy !== null && score.seq_accuracy !== undefined) {
    pairs.push(["sequence accuracy", percent(score.seq_accuracy)]);
  }
  pairs.push(["characters", score.characters.toLocaleString()]);
  pairs.push(["sequences", score.sequences.toLocaleString()]);
  facts($("evaluate-output"), pairs);
}
