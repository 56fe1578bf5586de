// The playground's training options beyond the tutorial: labeled pairs for a classifier,
// the stopping budgets and the learning-rate schedule. Each budget or schedule field is
// sent only when the user set it, so the service's defaults hold for the rest.
"use strict";

// Fields sent only when set (empty: left to the service), and the schedule each needs.
const BUDGET_FIELDS = ["max_steps", "max_seconds", "early_stopping_patience"];
const SCHEDULE_FIELDS = ["warmup_steps", "min_learning_rate", "plateau_patience"];

// "Nakamura,Japanese": the last comma splits, so an input may hold commas, a label not.
function parseLabeledPairs(source) {
  const pairs = [];
  const problems = [];
  source.split("\n").forEach((raw, index) => {
    const line = raw.replace(/\r$/, "");
    if (!line.trim()) return;
    const comma = line.lastIndexOf(",");
    if (comma <= 0 || comma === line.length - 1) {
      problems.push([`line ${index + 1}`, "write each labeled pair as input,label"]);
      return;
    }
    pairs.push({ input: line.slice(0, comma), label: line.slice(comma + 1).trim() });
  });
  return { pairs, problems };
}

// The budgets and schedule the user set, as hyperparameters (numberField reads a number
// input and reports what is not one).
function stoppingAndSchedule(problems) {
  const chosen = {};
  const schedule = $("lr_schedule").value;
  if (changed("lr_schedule")) chosen.lr_schedule = schedule;
  for (const id of [...BUDGET_FIELDS, ...SCHEDULE_FIELDS]) {
    const value = numberField(id, problems);
    if (value !== undefined) chosen[id] = value;
  }
  return chosen;
}

// A schedule's own fields are enabled (and so sent) only with that schedule chosen.
function syncScheduleFields() {
  const schedule = $("lr_schedule").value;
  for (const input of document.querySelectorAll("[data-schedule]")) {
    input.disabled = input.dataset.schedule !== schedule;
  }
}
