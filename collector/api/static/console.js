// collector console: live updates over GET /execution/stream (server-sent events). Pages work without it.
"use strict";

function pct(progress) {
  if (!progress) return 0;
  if (progress.percent != null) return Number(progress.percent);
  return progress.total ? (100 * progress.done) / progress.total : 0;
}

function streamUrl(ids) {
  return "/execution/stream?" + ids.map((id) => "job_id=" + encodeURIComponent(id)).join("&");
}

function followJob(section) {
  const id = section.dataset.job;
  const source = new EventSource(streamUrl([id]));
  const status = document.getElementById("status");
  source.addEventListener("progress", (msg) => {
    const p = JSON.parse(msg.data).progress;
    document.getElementById("progress").value = pct(p);
    document.getElementById("percent").textContent = pct(p).toFixed(1) + "%";
    document.getElementById("progress-text").textContent =
      (p.done ?? "") + (p.total ? "/" + p.total : "") + (p.message ? " · " + p.message : "");
    document.getElementById("eta").textContent = p.eta_s != null ? "ETA " + Math.round(p.eta_s) + " s" : "";
  });
  source.addEventListener("status", (msg) => {
    const data = JSON.parse(msg.data);
    const changed = status.textContent !== data.status;
    status.textContent = data.status;
    status.className = "status " + data.status;
    if (changed && data.status !== "started" && data.status !== "queued") {
      source.close();
      window.location.reload();  // an end, a wait: the page shows what it offers now
    }
  });
  source.addEventListener("event", (msg) => {
    const e = JSON.parse(msg.data);
    const list = document.getElementById("events");
    if (list.querySelector('[data-id="' + e.id + '"]')) return;
    const item = document.createElement("li");
    item.dataset.id = e.id;
    const when = document.createElement("time");
    when.textContent = e.at;
    const kind = document.createElement("b");
    kind.textContent = e.type;
    item.append(when, " ", kind, " " + (e.message || e.reason || ""));
    list.append(item);
  });
  source.addEventListener("end", (msg) => {
    if (JSON.parse(msg.data).reason === "ended") source.close();
  });
}

function followList(table) {
  const ids = table.dataset.live ? table.dataset.live.split(",") : [];
  if (!ids.length) return;
  const source = new EventSource(streamUrl(ids));
  const row = (id) => table.querySelector('tr[data-job="' + id + '"]');
  source.addEventListener("progress", (msg) => {
    const data = JSON.parse(msg.data);
    const tr = row(data.job_id);
    if (!tr) return;
    tr.querySelector('[data-field="progress"]').value = pct(data.progress);
    tr.querySelector('[data-field="percent"]').textContent = pct(data.progress).toFixed(1) + "%";
  });
  source.addEventListener("status", (msg) => {
    const data = JSON.parse(msg.data);
    const tr = row(data.job_id);
    if (!tr) return;
    const cell = tr.querySelector('[data-field="status"]');
    cell.textContent = data.status;
    cell.className = "status " + data.status;
  });
  source.addEventListener("end", (msg) => {
    if (JSON.parse(msg.data).reason === "ended") source.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const job = document.getElementById("job");
  if (job && job.dataset.ended === "no") followJob(job);
  const jobs = document.getElementById("jobs");
  if (jobs) followList(jobs);
});
