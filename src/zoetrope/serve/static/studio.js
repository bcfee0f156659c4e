// zoetrope studio: the page's behaviour. Talks to the JSON routes of zoetrope/serve/app.py and
// polls the jobs this page queued (every POLL_MS) until each is done, failed or cancelled.
// Text from the server or the user is only ever set as textContent, never parsed as HTML.
"use strict";

const POLL_MS = 250;  // a DiT step of the bundled model takes ~0.1-1 s on a CPU
const SETTINGS = ["num_frames", "height", "width", "steps", "guidance", "seed"];
const $ = (id) => document.getElementById(id);
let vocabulary = [];
const mine = new Map();  // job id -> last view, for the jobs this page queued

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const value = await response.json();
  if (!response.ok) throw new Error(value.error || response.statusText);
  return value;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

// -- the form --------------------------------------------------------------------------------

async function loadModel() {
  const info = await api("GET", "/api/model");
  for (const key of SETTINGS) if (key in info) $(key).value = info[key];
  vocabulary = info.vocabulary;
  $("model-line").textContent = `default ${info.num_frames} frames of ${info.height}x` +
    `${info.width} at ${info.fps} fps, ${info.steps} steps, guidance ${info.guidance}; ` +
    `${vocabulary.length} words known`;
  for (const [frames, height, width] of info.sizes) {
    const chip = el("button", { type: "button", class: "chip" },
                    `${frames} × ${height}x${width}`);
    chip.addEventListener("click", () => {
      $("num_frames").value = frames; $("height").value = height; $("width").value = width;
    });
    $("sizes").append(chip);
  }
}

// Suggest the model's words that start with the word being typed; Tab or a click takes one.
function suggest() {
  const box = $("prompt");
  const match = box.value.slice(0, box.selectionEnd).match(/[a-z]+$/i);
  const part = match ? match[0].toLowerCase() : "";
  const words = part ? vocabulary.filter((w) => w.startsWith(part) && w !== part).slice(0, 8)
                     : [];
  $("suggest").replaceChildren(...words.map((word) => {
    const chip = el("button", { type: "button", class: "chip" }, word);
    chip.addEventListener("click", () => complete(word, part.length));
    return chip;
  }));
}

function complete(word, typed) {
  const box = $("prompt");
  const end = box.selectionEnd;
  box.value = box.value.slice(0, end - typed) + word + " " + box.value.slice(end);
  box.focus();
  box.selectionEnd = box.selectionStart = end - typed + word.length + 1;
  suggest();
}

function readForm() {
  const body = { prompt: $("prompt").value };
  for (const key of SETTINGS) if ($(key).value !== "") body[key] = Number($(key).value);
  return body;
}

async function generate(event) {
  event.preventDefault();
  showError("");
  try {
    const job = await api("POST", "/api/jobs", readForm());
    mine.set(job.id, job);
    renderQueue();
    poll();
  } catch (error) {
    showError(error.message);
  }
}

// -- queue and progress ----------------------------------------------------------------------

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  while ([...mine.values()].some((j) => j.state === "queued" || j.state === "running")) {
    for (const [id, old] of mine) {
      if (old.state !== "queued" && old.state !== "running") continue;
      const job = await api("GET", `/api/jobs/${id}`).catch(() => ({ ...old, state: "failed",
        error: "the server stopped answering" }));
      mine.set(id, job);
      if (job.state === "done") { showResult(job); loadGallery(); }
      if (job.state === "failed") showError(job.error);
    }
    renderQueue();
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  polling = false;
}

function renderQueue() {
  const active = [...mine.values()].filter((j) => j.state === "queued" || j.state === "running");
  if (!active.length) {
    $("queue").replaceChildren(el("li", { class: "empty" }, "nothing running"));
    return;
  }
  $("queue").replaceChildren(...active.map((job) => {
    const status = job.state === "queued" ? `waiting: position ${job.position} in the queue`
      : `step ${job.step} of ${job.total || "?"}`;
    const cancel = el("button", { type: "button", class: "cancel" }, "Cancel");
    cancel.addEventListener("click", async () => {
      mine.set(job.id, await api("DELETE", `/api/jobs/${job.id}`));
      renderQueue();
    });
    const bar = el("progress", { max: job.total || 1, value: job.step });
    return el("li", { "data-job": job.id, "data-state": job.state },
              el("div", { class: "row" }, el("span", {}, job.request.prompt), cancel),
              bar, el("div", { class: "status" }, status));
  }));
}

// -- result, verdict, gallery ----------------------------------------------------------------

function showResult(job) {
  const video = $("result-video");
  video.src = `/files/${job.files.webm}`;
  video.dataset.frames = job.frames;
  video.dataset.job = job.id;
  const r = job.request;
  $("result-caption").textContent = `"${r.prompt}": ${job.frames} frames of ${r.height}x` +
    `${r.width}, seed ${r.seed}, ${r.steps} steps, guidance ${r.guidance}, ${job.seconds} s`;
  $("downloads").replaceChildren(...Object.entries(job.files).map(([ext, name]) =>
    el("a", { href: `/files/${name}`, download: `zoetrope-seed${r.seed}.${ext}` },
       `download .${ext}`)));
  $("player").hidden = false;
  $("placeholder").hidden = true;
  showVerdict(job);
}

function showVerdict(job) {
  const box = $("verdict");
  box.hidden = false;
  const v = job.verdict;
  if (!v) {
    box.replaceChildren(el("h2", {}, "Critic"), el("p", { class: "note" }, job.critic_note));
    return;
  }
  const badge = el("span", { class: `badge ${v.passed ? "pass" : "fail"}` },
                   v.passed ? "PASS" : "FAIL");
  const rows = [];
  for (const o of v.objects) {
    rows.push(el("tr", {}, el("th", { colspan: 3 }, o.target)),
              el("tr", {}, el("th", {}, ""), el("th", {}, "asked"), el("th", {}, "seen")));
    for (const name of ["color", "shape", "direction"]) {
      const a = o[name];
      const mark = a.ok === null ? "n/a" : a.ok ? "ok" : "wrong";
      rows.push(el("tr", { class: mark === "wrong" ? "wrong" : "" }, el("td", {}, name),
                   el("td", {}, a.expected),
                   el("td", { class: mark === "ok" ? "ok" : "" }, `${a.observed} (${mark})`)));
    }
  }
  const bad = Object.entries(v.errors).filter(([, frames]) => frames.length);
  const errors = bad.length ? el("ul", { class: "errors" }, ...bad.map(([kind, frames]) =>
    el("li", { class: "wrong" },
       `${kind.replaceAll("_", " ")}: frame${frames.length > 1 ? "s" : ""} ${frames.join(", ")}`)))
    : el("p", { class: "ok" }, "no physics errors");
  box.replaceChildren(el("h2", {}, "Critic: asked vs seen"), badge,
                      el("div", { class: "verdict-body" },
                         el("div", {}, el("table", {}, ...rows), errors), trackPicture(v)));
}

// The tracked centre of each object, frame by frame, over the clip's frame; frames with an
// error are drawn red and named in their tooltip.
function trackPicture(v) {
  const [, height, width] = v.size;
  const picture = svg("svg", { class: "track", viewBox: `0 0 ${width} ${height}`,
                               "aria-label": "the clip's track" });
  const colours = ["#5aa9ff", "#ffd166", "#c77dff"];
  v.objects.forEach((o, i) => {
    const points = o.centers.map((c, t) => c && [c[0], c[1], t]).filter(Boolean);
    picture.append(svg("polyline", { points: points.map((p) => `${p[0]},${p[1]}`).join(" "),
      fill: "none", stroke: colours[i % 3], "stroke-width": Math.max(width, height) / 120 }));
    for (const [x, y, t] of points) {
      const kinds = Object.entries(o.errors).filter(([, f]) => f.includes(t)).map(([k]) => k);
      const dot = svg("circle", { cx: x, cy: y, fill: kinds.length ? "#ff6b6b" : colours[i % 3],
                                  r: Math.max(width, height) / (kinds.length ? 40 : 80) });
      const title = svg("title");
      title.textContent = `frame ${t}` + (kinds.length ? `: ${kinds.join(", ")}` : "");
      dot.append(title);
      picture.append(dot);
    }
  });
  return el("figure", {}, picture,
            el("figcaption", { class: "meta" }, "track: one dot a frame, red where an error is"));
}

async function loadGallery() {
  const { jobs } = await api("GET", "/api/jobs");
  $("gallery").replaceChildren(...jobs.filter((j) => j.state === "done").map((job) => {
    const v = job.verdict;
    const card = el("div", { class: "card", "data-job": job.id },
      el("video", { src: `/files/${job.files.webm}`, autoplay: "", loop: "", muted: "",
                    playsinline: "" }),
      el("div", {}, job.request.prompt),
      el("div", { class: "meta" }, `seed ${job.request.seed} · ` +
         (v ? (v.passed ? "pass" : "fail") : "no verdict")));
    card.querySelector("video").muted = true;
    card.addEventListener("click", () => showResult(job));
    return card;
  }));
}

$("form").addEventListener("submit", generate);
$("prompt").addEventListener("input", suggest);
$("prompt").addEventListener("keydown", (event) => {
  const first = $("suggest").querySelector(".chip");
  if (event.key === "Tab" && first) { event.preventDefault(); first.click(); }
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("generate").click(); }
});
loadModel().catch((error) => showError(`cannot read the model's settings: ${error.message}`));
loadGallery().catch(() => {});
