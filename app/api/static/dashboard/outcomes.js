// How each job ended or stands: a running job's step progress (its step_progress field),
// a finished job's stop reason and best epoch (from the version it made, read once with
// GET /models/{name}/versions/{n}: a version never changes).
"use strict";

const madeVersions = new Map(); // "name/version" -> the version, or null when it was deleted

const versionKey = (job) => `${job.model_name}/${job.version}`;

// Reads the versions of these jobs not read yet.
async function syncVersions(jobs) {
  const missing = jobs.filter((job) => job.version && !madeVersions.has(versionKey(job)));
  await Promise.all(
    missing.map(async (job) => {
      const path = `/models/${encodeURIComponent(job.model_name)}/versions/${job.version}`;
      try {
        madeVersions.set(versionKey(job), await api("GET", path));
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404) throw err;
        madeVersions.set(versionKey(job), null);
      }
    }),
  );
}

// "step 120, 45% of epoch 4, 2.31 bits/char" while it runs; "max steps, best epoch 7" after.
function outcomeOf(job) {
  const step = job.step_progress;
  if (job.status === "running" && step) {
    const share = `${Math.round(step.epoch_fraction * 100)}% of epoch ${step.epoch}`;
    const bpc = step.bits_per_char === null ? "" : `, ${step.bits_per_char.toFixed(2)} bits/char`;
    return `step ${step.step}, ${share}${bpc}`;
  }
  const version = job.version ? madeVersions.get(versionKey(job)) : null;
  if (!version || !version.stop_reason) return dash;
  const best = version.best_epoch ? `, best epoch ${version.best_epoch}` : "";
  return `${version.stop_reason.replace("_", " ")}${best}`;
}
