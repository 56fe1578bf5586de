// Where a running job stands within its epoch (the SSE "progress" events), and how a
// finished job's version ended: its stop reason and best epoch (GET /models/{name}/versions/{n}).
"use strict";

const STOP_REASONS = {
  completed: "all epochs done",
  max_steps: "max steps reached",
  max_seconds: "max seconds reached",
  early_stopping: "early stopping (validation loss stopped improving)",
};

const decimals = (x, n) => (x === null || x === undefined ? "–" : Number(x).toFixed(n));

function facts(list, pairs) {
  list.replaceChildren(
    ...pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]),
  );
  list.hidden = false;
}

// p: a StepProgress (README: step_progress); bits/char only for text.
function showStepProgress(p) {
  const pairs = [
    ["epoch", `${p.epoch}, ${Math.round(p.epoch_fraction * 100)}% done`],
    ["step", String(p.step)],
    ["loss", decimals(p.loss, 4)],
  ];
  if (p.bits_per_char !== null && p.bits_per_char !== undefined) {
    pairs.push(["bits/char", decimals(p.bits_per_char, 3)]);
  }
  pairs.push(["lr", Number(p.learning_rate).toPrecision(3)]);
  pairs.push(["chars/s", Math.round(p.chars_per_second).toLocaleString()]);
  facts($("step-progress"), pairs);
}

function hideStepProgress() {
  $("step-progress").hidden = true;
  $("train-outcome").hidden = true;
}

function stopReasonText(reason) {
  return reason ? STOP_REASONS[reason] || reason : "–";
}

// "Stopped: early stopping (…). Best epoch 7 of 9: validation loss 0.52, 0.75 bits/char."
async function showOutcome(job) {
  const path = `/models/${encodeURIComponent(job.model_name)}/versions/${job.version}`;
  const outcome = $("train-outcome");
  try {
    const version = await api("GET", path);
    const best = version.best_epoch ? `Best epoch ${version.best_epoch} of ${version.epochs}` : "";
    const val = version.validation;
    const scores = val
      ? `: validation loss ${decimals(val.loss, 4)}` +
        (val.bits_per_char !== null ? `, ${decimals(val.bits_per_char, 3)} bits/char` : "")
      : "";
    const bestText = best ? ` ${best}${scores}.` : "";
    outcome.textContent = `Stopped: ${stopReasonText(version.stop_reason)}.${bestText}`;
    outcome.hidden = false;
  } catch {
    outcome.hidden = true; // a version deleted at once: nothing to tell
  }
}
