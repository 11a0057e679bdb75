// heygemd dashboard: live updates over Server-Sent Events, the upload form, the job buttons. No framework.
"use strict";

const FINISHED = ["done", "partial", "failed", "cancelled"];

function ext(name) { const i = name.lastIndexOf("."); return i < 0 ? "" : name.slice(i).toLowerCase(); }

function setBar(container, fraction, state) {
  const bar = container && container.querySelector(".bar");
  if (!bar) return;
  const f = Math.max(0, Math.min(1, fraction || 0));
  bar.setAttribute("aria-valuenow", String(Math.round(f * 100)));  // as videoProgress's words round it
  bar.querySelector("span").style.width = Math.round(f * 1000) / 10 + "%";
  if (state) bar.className = "bar " + state;
}

// A video's bar and the words under it, from the one number `progress` (pages.py: video_progress).
function videoProgress(v) {
  if (v.state === "done") return [1, ""];
  if (v.state === "pending") return [0, "waiting"];
  if (v.state === "not_started") return [0, "not started: the job failed"];
  if (v.state !== "processing") return [v.progress, ""];
  const stage = v.frames_total === null ? "finding the face" : "lip-syncing";
  return [v.progress, Math.round(v.progress * 100) + "% · " + stage];
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
  const warning = document.getElementById("no-renderer");
  if (warning) warning.hidden = m.workers > 0;
  const intake = field(root, "intake");
  intake.className = "intake" + (m.waits_for ? " held" : "");
  intake.textContent = m.waits_for ? "Not taking jobs: " + m.waits_for : "Taking jobs";
  const toggle = root.querySelector("[data-intake]");
  if (toggle && toggle.dataset.intake !== (m.paused ? "resume" : "pause")) location.reload();
}

// An admin's Pause / Resume of the intake (header), an editor's priority of a waiting job (job page).
function machineButtons() {
  const toggle = document.querySelector("[data-intake]");
  if (toggle) toggle.addEventListener("click", async () => {
    toggle.disabled = true;
    const response = await fetch(toggle.dataset.url, {method: "POST", credentials: "same-origin"});
    if (response.ok) location.reload();
    else { toggle.disabled = false; alert((await problemOf(response)).message); }
  });
  const priority = document.getElementById("priority");
  if (priority && priority.dataset.url) priority.addEventListener("change", async () => {
    priority.disabled = true;
    const response = await fetch(priority.dataset.url, {
      method: "PUT", credentials: "same-origin", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({priority: Number(priority.value)}),
    });
    priority.disabled = false;
    const message = document.getElementById("action-message");
    message.hidden = false;
    if (response.ok) { message.className = "message"; message.textContent = "Priority changed."; }
    else { message.className = "message error"; showProblem(message, await problemOf(response)); }
  });
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
    if (FINISHED.includes(job.state) && !FINISHED.includes(row.dataset.state)) { reload(); return; }  // with its reason
    setBadge(field(row, "state"), job.state);
    setBar(field(row, "progress"), job.progress, job.state);
    const cell = field(row, "counts");
    cell.textContent = counts(job).join(" / ");
    if (job.videos_to_review) {
      const review = document.createElement("span");
      review.className = "review";
      review.title = "the quality check flagged these videos for a look";
      review.textContent = " " + job.videos_to_review + " to review";
      cell.append(review);
    }
    field(row, "engine").textContent = job.engine || "-";
    if (row.dataset.state === "queued" && job.state !== "queued") reload();  // its waiting reason goes
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
    setBar(field(summary, "progress"), job.progress, job.state);
    field(summary, "counts").textContent = done + " done, " + failed + " failed, of " + total;
    for (const v of job.videos) {
      const card = [...document.querySelectorAll("article[data-video]")].find(a => a.dataset.video === v.input);
      if (!card) continue;
      const [fraction, words] = videoProgress(v);
      setBadge(field(card, "state"), v.state);
      setBar(field(card, "progress"), fraction, v.state);
      field(card, "progress-text").textContent = words;
      field(card, "frames").textContent = v.frames_total === null ? "-" : v.frames_total;
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

function mib(bytes) { return (bytes / 1048576).toFixed(1) + " MiB"; }

function tickedPresenters(form) {
  return [...form.querySelectorAll('#library input[name="presenters"]:checked')].map(box => box.value);
}

// What is wrong with the chosen files and options, in the words of the form (null: ready to upload). The server
// checks the same again; its lists and limits come with the page (new.html), so they are written once.
function formProblem(form, audioFile, videoFiles) {
  const d = form.dataset;
  const audioTypes = d.audioSuffixes.split(" ");
  const presenterTypes = d.presenterSuffixes.split(" ");
  if (!audioFile) return {message: "Choose the audio: the speech the presenters will say.",
                          hint: "An audio file (" + audioTypes.join(" ") + "); a video's sound track works too."};
  if (!audioTypes.includes(ext(audioFile.name))) return {message: "“" + audioFile.name + "” is not an audio file or a video.",
                          hint: "Choose a file ending in " + audioTypes.join(" ") + "."};
  if (!videoFiles.length && !tickedPresenters(form).length) {
    return {message: "Choose at least one presenter: a video or a photo of the face"
      + (form.querySelector("#library") ? ", or tick one from the library." : ".")};
  }
  const odd = videoFiles.find(f => !presenterTypes.includes(ext(f.name)));
  if (odd) return {message: "“" + odd.name + "” is not a video or a photo.",
                   hint: "Presenters are files ending in " + presenterTypes.join(" ") + "."};
  const files = [audioFile, ...videoFiles];
  if (files.length > Number(d.maxFiles)) return {message: "That is " + files.length + " files; this server takes at most "
      + d.maxFiles + " in one job, the audio included.", hint: "Choose fewer presenters, or split them over several jobs."};
  const big = files.find(f => f.size > Number(d.maxFileBytes));
  if (big) return {message: "“" + big.name + "” is " + mib(big.size) + "; this server takes at most " + mib(Number(d.maxFileBytes))
      + " per file.", hint: "Export it smaller (a lower resolution or bitrate), or ask whoever runs heygemd to raise the limit."};
  const total = files.reduce((sum, f) => sum + f.size, 0);
  if (total > Number(d.maxTotalBytes)) return {message: "The files add up to " + mib(total) + "; this server takes at most "
      + mib(Number(d.maxTotalBytes)) + " in one job.", hint: "Choose fewer or smaller files, or split them over several jobs."};
  const crf = document.getElementById("crf");
  const value = crf.value.trim();
  if (crf.validity.badInput || (value && !(/^[0-9]+$/.test(value) && Number(value) <= 51))) {
    return {message: "Quality (CRF) must be a whole number from 0 to 51" + (value ? ", not " + value : "") + ".",
            hint: "Lower means better quality and larger files; leave it empty for the daemon's setting."};
  }
  const steps = document.getElementById("latentsync_steps");
  const stepsValue = steps.value.trim();
  if (steps.validity.badInput || (stepsValue && !(/^[0-9]+$/.test(stepsValue) && Number(stepsValue) >= 1))) {
    return {message: "LatentSync steps must be a whole number, 1 or more" + (stepsValue ? ", not " + stepsValue : "") + ".",
            hint: "More steps give finer pictures and take longer; leave it empty for the daemon's setting."};
  }
  const guidance = document.getElementById("latentsync_guidance");
  const guidanceValue = guidance.value.trim();
  if (guidance.validity.badInput || (guidanceValue && !(Number.isFinite(Number(guidanceValue)) && Number(guidanceValue) >= 0))) {
    return {message: "LatentSync guidance must be a number, 0 or more" + (guidanceValue ? ", not " + guidanceValue : "") + ".",
            hint: "Above 1 the audio is followed more closely (1.5 is LatentSync's own); leave it empty for the daemon's setting."};
  }
  const gpu = document.getElementById("gpu_class");
  if (gpu && gpu.value && !/^[a-z0-9][a-z0-9_-]*$/.test(gpu.value)) {
    return {message: "GPU class “" + gpu.value + "” is not a class name.",
            hint: "Lower-case letters, digits, - and _, as a worker's [queue] gpu_class; leave it empty for any worker."};
  }
  return null;
}

// A refused upload in words for people: the server's message and hint, without its code; a lost session says so.
function uploadProblem(status, body) {
  if (status === 401) return {message: "You are logged out: the session ended.", hint: "Reload the page, log in, and upload the files again."};
  if (body && body.message) return {message: body.message, hint: body.hint};
  return {message: "The server refused the upload (HTTP " + status + ").", hint: "Try again; if it keeps failing, look at the server's log."};
}

function showFormProblem(box, problem) {
  box.hidden = false;
  box.textContent = problem.message;
  if (problem.hint) { const p = document.createElement("p"); p.className = "hint"; p.textContent = problem.hint; box.append(p); }
}

function uploadForm(form) {
  const audio = document.getElementById("audio");
  const videos = document.getElementById("videos");
  const drop = document.getElementById("drop");
  const chosen = document.getElementById("chosen");
  const errorBox = document.getElementById("upload-error");
  const audioTypes = form.dataset.audioSuffixes.split(" ");
  const presenterTypes = form.dataset.presenterSuffixes.split(" ");
  let audioFile = null;
  let videoFiles = [];
  let leftOut = [];

  function show() {
    chosen.textContent = "";
    for (const [label, f] of [...(audioFile ? [["audio", audioFile]] : []), ...videoFiles.map(f => ["presenter", f])]) {
      const li = document.createElement("li");
      li.textContent = label + ": " + f.name + " (" + mib(f.size) + ")";
      chosen.append(li);
    }
    for (const f of leftOut) {
      const li = document.createElement("li");
      li.className = "left-out";
      li.textContent = "left out: " + f.name + " (not an audio, a video or a photo)";
      chosen.append(li);
    }
  }
  function add(files) {
    leftOut = [];
    for (const f of files) {
      const suffix = ext(f.name);
      if (audioTypes.includes(suffix) && !presenterTypes.includes(suffix)) audioFile = f;
      else if (presenterTypes.includes(suffix)) videoFiles.push(f);
      else leftOut.push(f);
    }
    show();
  }
  audio.addEventListener("change", () => { audioFile = audio.files[0] || null; leftOut = []; show(); });
  videos.addEventListener("change", () => { videoFiles = [...videos.files]; leftOut = []; show(); });
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); add(e.dataTransfer.files); });

  form.addEventListener("submit", e => {
    e.preventDefault();
    errorBox.hidden = true;
    const problem = formProblem(form, audioFile, videoFiles);
    if (problem) { showFormProblem(errorBox, problem); return; }
    const data = new FormData();
    data.append("audio", audioFile, audioFile.name);
    for (const f of videoFiles) data.append("videos", f, f.name);
    for (const name of tickedPresenters(form)) data.append("presenters", name);
    for (const input of form.querySelectorAll(".options [name]")) {
      const value = input.value.trim();
      if (value) data.append(input.name, value);
    }
    upload("/api/jobs", data, errorBox, {
      progress: document.getElementById("upload-progress"),
      text: document.getElementById("upload-text"),
      submit: document.getElementById("submit"),
    }, body => { location.href = "/jobs/" + encodeURIComponent(body.job_id); });
  });
}

// The presenter library (presenters.html): the words under a preparing presenter's bar (pages.py: presenter_stage).
const PRESENTER_STAGES = {waiting: "waiting", queued: "queued: prepared when no job is rendering",
  detecting: "finding the face", preparing: "preparing the engines", poster: "making the poster"};

function presenterStage(p) {
  let words = PRESENTER_STAGES[p.stage] || "";
  if (["detecting", "preparing", "poster"].includes(p.stage)) words = Math.round(p.progress * 100) + "% · " + words;
  return p.waiting_for ? words + ": " + p.waiting_for : words;
}

// Follow the library: a preparing presenter's bar and words move; a presenter added, removed or changing state
// brings the page again (with its poster, its facts or its error).
function livePresenters(root) {
  const cards = () => [...root.querySelectorAll("article[data-presenter]")];
  async function look() {
    let body = null;
    try { const r = await fetch("/api/presenters", {credentials: "same-origin"}); if (r.ok) body = await r.json(); } catch (e) { body = null; }
    if (body) {
      const shown = cards().map(c => c.dataset.presenter + ":" + c.dataset.state).sort().join(",");
      const now = body.presenters.map(p => p.name + ":" + p.state).sort().join(",");
      if (shown !== now) { location.reload(); return; }
      for (const p of body.presenters) {
        const card = cards().find(c => c.dataset.presenter === p.name);
        if (!card || p.state !== "preparing") continue;
        setBar(field(card, "progress"), p.progress, "processing");
        field(card, "stage").textContent = presenterStage(p);
      }
    }
    setTimeout(look, 1000);
  }
  setTimeout(look, 1000);
  for (const figure of root.querySelectorAll("figure[data-preview]")) {
    figure.addEventListener("click", () => {
      if (figure.querySelector("video") || !figure.querySelector("img")) return;
      const still = figure.dataset.still === "true";
      const media = document.createElement(still ? "img" : "video");
      media.src = figure.dataset.preview;
      if (!still) { media.controls = true; media.autoplay = true; media.muted = true; media.loop = true; }
      figure.textContent = "";
      figure.append(media);
    });
  }
  const message = document.getElementById("action-message");
  for (const button of root.querySelectorAll('[data-action="delete-presenter"]')) {
    button.addEventListener("click", async () => {
      if (!confirm("Remove this presenter from the library? Jobs already rendered keep their videos.")) return;
      button.disabled = true;
      const response = await fetch(button.dataset.url, {method: "DELETE", credentials: "same-origin"});
      if (response.ok) { location.reload(); return; }
      button.disabled = false;
      message.className = "message error";
      showProblem(message, await problemOf(response));
    });
  }
}

function presenterForm(form) {
  const input = document.getElementById("presenter-file");
  const drop = document.getElementById("presenter-drop");
  const chosen = document.getElementById("presenter-chosen");
  const errorBox = document.getElementById("presenter-error");
  const types = form.dataset.suffixes.split(" ");
  let file = null;
  function pick(f) {
    file = f || null;
    chosen.textContent = file ? file.name + " (" + mib(file.size) + ")" : "";
    const name = document.getElementById("presenter-name");
    if (file && !name.value) name.placeholder = file.name.replace(/\.[^.]*$/, "");
  }
  input.addEventListener("change", () => pick(input.files[0]));
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); pick(e.dataTransfer.files[0]); });
  form.addEventListener("submit", e => {
    e.preventDefault();
    errorBox.hidden = true;
    if (!file) { showFormProblem(errorBox, {message: "Choose the presenter's video or photo."}); return; }
    if (!types.includes(ext(file.name))) {
      showFormProblem(errorBox, {message: "“" + file.name + "” is not a video or a photo.", hint: "Choose a file ending in " + types.join(" ") + "."});
      return;
    }
    if (file.size > Number(form.dataset.maxFileBytes)) {
      showFormProblem(errorBox, {message: "“" + file.name + "” is " + mib(file.size) + "; this server takes at most "
        + mib(Number(form.dataset.maxFileBytes)) + " per file.", hint: "Export it smaller, or ask whoever runs heygemd to raise the limit."});
      return;
    }
    const data = new FormData();
    data.append("video", file, file.name);
    for (const field of form.querySelectorAll(".options [name]")) {
      const value = field.value.trim();
      if (value) data.append(field.name, value);
    }
    upload("/api/presenters", data, errorBox, {
      progress: document.getElementById("presenter-progress"),
      text: document.getElementById("presenter-progress-text"),
      submit: document.getElementById("presenter-submit"),
    }, () => location.reload());
  });
}

// One upload with its progress bar (a new job, a new presenter): `done(body)` once the server answers 201,
// else the server's problem (or the interruption) in `errorBox` and the form ready again.
function upload(url, data, errorBox, {progress, text, submit}, done) {
  progress.hidden = false;
  submit.disabled = true;
  const failed = problem => {
    submit.disabled = false;
    progress.hidden = true;
    showFormProblem(errorBox, problem);
  };
  const xhr = new XMLHttpRequest();
  xhr.open("POST", url);
  xhr.upload.addEventListener("progress", ev => {
    if (!ev.lengthComputable) return;
    setBar(progress, ev.loaded / ev.total);
    text.textContent = "Uploading: " + mib(ev.loaded) + " of " + mib(ev.total);
  });
  xhr.addEventListener("load", () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
    if (xhr.status === 201 && body) { setBar(progress, 1); done(body); return; }
    failed(uploadProblem(xhr.status, body));
  });
  xhr.addEventListener("error", () => failed({message: "The upload was interrupted.", hint: "Check the connection and try again."}));
  xhr.send(data);
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.querySelector("[data-live-list]");
  const job = document.querySelector("[data-live-job]");
  const form = document.getElementById("upload");
  const library = document.querySelector("[data-live-presenters]");
  const addPresenter = document.getElementById("add-presenter");
  if (list) { liveList(list); jobButtons(true); }
  else if (job) { liveJob(job); jobButtons(false); }
  else if (document.querySelector("[data-live-machine]") && !document.querySelector("form.login")) {
    listen("/api/events?job=", () => {});
  }
  if (form) uploadForm(form);
  machineButtons();
  if (library) livePresenters(library);
  if (addPresenter) presenterForm(addPresenter);
});
