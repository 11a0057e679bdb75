// heygemd dashboard: live updates over Server-Sent Events, the upload form, the job buttons. No framework.
"use strict";

const AUDIO = ["wav", "mp3", "m4a", "aac", "flac", "ogg", "opus", "wma"];
const PRESENTER = ["mp4", "mov", "mkv", "webm", "avi", "m4v", "mpg", "mpeg", "3gp", "jpg", "jpeg", "png", "bmp", "webp"];
const FINISHED = ["done", "partial", "failed", "cancelled"];

function ext(name) { const i = name.lastIndexOf("."); return i < 0 ? "" : name.slice(i + 1).toLowerCase(); }

function setBar(container, fraction) {
  const bar = container && container.querySelector(".bar");
  if (!bar) return;
  const pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 1000) / 10;
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  bar.querySelector("span").style.width = pct + "%";
}

function setBadge(container, state) {
  const badge = container && container.querySelector(".badge");
  if (!badge) return;
  badge.className = "badge " + state;
  badge.textContent = state;
}

function counts(job) {
  const done = job.videos.filter(v => v.state === "done").length;
  const failed = job.videos.filter(v => v.state === "failed").length;
  return [done, failed, job.videos.length];
}

function field(root, name) { return root.querySelector('[data-field="' + name + '"]'); }

function updateMachine(m) {
  const root = document.querySelector("[data-live-machine]");
  if (!root) return;
  field(root, "engine").textContent = m.engine;
  const busy = field(root, "busy");
  busy.className = "state " + (m.busy ? "busy" : "idle");
  busy.textContent = m.busy ? "Busy: rendering " + m.current : "Idle";
  field(root, "queued").textContent = m.queued + " waiting in the inbox";
}

function listen(url, onJob, onRemoved) {
  const source = new EventSource(url);
  source.addEventListener("machine", e => updateMachine(JSON.parse(e.data)));
  source.addEventListener("job", e => onJob(JSON.parse(e.data)));
  source.addEventListener("removed", e => onRemoved && onRemoved(JSON.parse(e.data).job_id));
  return source;
}

function liveList(table) {
  let reloading = false;
  const reload = () => { if (!reloading) { reloading = true; setTimeout(() => location.reload(), 300); } };
  listen("/api/events", job => {
    const row = [...table.querySelectorAll("tr[data-job]")].find(r => r.dataset.job === job.job_id);
    if (!row) { if (table.dataset.page === "1") reload(); return; }
    setBadge(field(row, "state"), job.state);
    if (FINISHED.includes(job.state)) for (const b of row.querySelectorAll('[data-action="cancel"]')) b.remove();
    setBar(field(row, "progress"), job.progress);
    field(row, "counts").textContent = counts(job).join(" / ");
    field(row, "engine").textContent = job.engine || "-";
  }, id => {
    const row = [...table.querySelectorAll("tr[data-job]")].find(r => r.dataset.job === id);
    if (row) row.remove();
  });
}

function liveJob(root) {
  const id = root.dataset.liveJob;
  const log = document.getElementById("log");
  const summary = document.querySelector(".summary");
  listen("/api/events?job=" + encodeURIComponent(id), job => {
    if (job.job_id !== id) return;
    const [done, failed, total] = counts(job);
    if (String(done) !== root.dataset.done || (FINISHED.includes(job.state) !== FINISHED.includes(root.dataset.state))
        || (job.state !== root.dataset.state && root.dataset.state === "queued")) {
      location.reload();  // a finished video gets its player, a finished job its buttons
      return;
    }
    setBadge(summary, job.state);
    setBar(field(summary, "progress"), job.progress);
    field(summary, "counts").textContent = done + " done, " + failed + " failed, of " + total;
    for (const v of job.videos) {
      const card = [...document.querySelectorAll("article[data-video]")].find(a => a.dataset.video === v.input);
      if (!card) continue;
      setBadge(field(card, "state"), v.state);
      setBar(field(card, "progress"), v.state === "done" ? 1 : v.progress);
      field(card, "frames").textContent = v.frames_done + (v.frames_total === null ? "" : " / " + v.frames_total);
    }
    if (log) fetch(log.dataset.url).then(r => r.ok ? r.text() : null).then(t => { if (t !== null) log.textContent = t; });
  }, () => { location.href = "/"; });
}

function showProblem(box, problem) {
  box.hidden = false;
  box.textContent = "";
  const code = document.createElement("strong");
  code.textContent = problem.code + " ";
  box.append(code, problem.message || "");
  if (problem.hint) { const p = document.createElement("p"); p.className = "hint"; p.textContent = problem.hint; box.append(p); }
}

async function problemOf(response) {
  try { return await response.json(); } catch (e) { return {code: "HTTP_" + response.status, message: response.statusText}; }
}

function jobButtons(onList) {
  const message = document.getElementById("action-message");
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      const del = button.dataset.action === "delete";
      const cancel = button.dataset.action === "cancel";
      if (del && !confirm("Delete this job's outputs and archived inputs?")) return;
      if (cancel && !confirm("Cancel this job? Videos already done are kept; the job can be retried.")) return;
      button.disabled = true;
      const response = await fetch(button.dataset.url, {method: del ? "DELETE" : "POST", credentials: "same-origin"});
      if (response.ok) {
        const body = await response.json();
        if (cancel && body.state === "cancelling") {
          button.textContent = "Cancelling...";
          message.className = "message";
          message.hidden = false;
          message.textContent = "Cancel requested: " + body.job_id + " stops at its next batch of frames.";
        } else if (cancel && onList) {
          location.reload();
        } else {
          location.href = del ? "/" : "/jobs/" + encodeURIComponent(body.job_id);
        }
      } else {
        button.disabled = false;
        message.className = "message error";
        showProblem(message, await problemOf(response));
      }
    });
  }
}

function uploadForm(form) {
  const audio = document.getElementById("audio");
  const videos = document.getElementById("videos");
  const drop = document.getElementById("drop");
  const chosen = document.getElementById("chosen");
  const errorBox = document.getElementById("upload-error");
  let audioFile = null;
  let videoFiles = [];

  function show() {
    chosen.textContent = "";
    for (const [label, f] of [...(audioFile ? [["audio", audioFile]] : []), ...videoFiles.map(f => ["presenter", f])]) {
      const li = document.createElement("li");
      li.textContent = label + ": " + f.name + " (" + (f.size / 1048576).toFixed(1) + " MiB)";
      chosen.append(li);
    }
  }
  function add(files) {
    for (const f of files) {
      if (AUDIO.includes(ext(f.name))) audioFile = f;
      else if (PRESENTER.includes(ext(f.name))) videoFiles.push(f);
    }
    show();
  }
  audio.addEventListener("change", () => { audioFile = audio.files[0] || null; show(); });
  videos.addEventListener("change", () => { videoFiles = [...videos.files]; show(); });
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); add(e.dataTransfer.files); });

  form.addEventListener("submit", e => {
    e.preventDefault();
    errorBox.hidden = true;
    if (!audioFile || !videoFiles.length) {
      showProblem(errorBox, {code: "BAD_UPLOAD", message: "Choose one audio and at least one video or photo."});
      return;
    }
    const data = new FormData();
    data.append("audio", audioFile, audioFile.name);
    for (const f of videoFiles) data.append("videos", f, f.name);
    for (const name of ["name", "engine", "loop_mode", "crf"]) {
      const value = document.getElementById(name).value.trim();
      if (value) data.append(name, value);
    }
    const progress = document.getElementById("upload-progress");
    const text = document.getElementById("upload-text");
    progress.hidden = false;
    document.getElementById("submit").disabled = true;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/jobs");
    xhr.upload.addEventListener("progress", ev => {
      if (!ev.lengthComputable) return;
      setBar(progress, ev.loaded / ev.total);
      text.textContent = "Uploading: " + (ev.loaded / 1048576).toFixed(1) + " of " + (ev.total / 1048576).toFixed(1) + " MiB";
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = {code: "HTTP_" + xhr.status, message: xhr.statusText}; }
      if (xhr.status === 201) { setBar(progress, 1); location.href = "/jobs/" + encodeURIComponent(body.job_id); return; }
      document.getElementById("submit").disabled = false;
      progress.hidden = true;
      showProblem(errorBox, body);
    });
    xhr.addEventListener("error", () => {
      document.getElementById("submit").disabled = false;
      showProblem(errorBox, {code: "NETWORK", message: "The upload was interrupted.", hint: "Check the connection and try again."});
    });
    xhr.send(data);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.querySelector("[data-live-list]");
  const job = document.querySelector("[data-live-job]");
  const form = document.getElementById("upload");
  if (list) { liveList(list); jobButtons(true); }
  else if (job) { liveJob(job); jobButtons(false); }
  else if (document.querySelector("[data-live-machine]") && !document.querySelector("form.login")) {
    listen("/api/events?job=", () => {});
  }
  if (form) uploadForm(form);
});
