// medclip serve: the page over the JSON API (/api/...). No framework, no CDN; every value from the API is placed
// with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = ["k", "modality", "label"];
let grounding = null; // the checkpoint's heat-map method (/api/info), null when it has none

class Unauthorised extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    showLogin();
    throw new Unauthorised("a token is required");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function showLogin() {
  $("app").hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

function setStatus(text) { $("status").textContent = text; }
function setError(text) { $("error").textContent = text || ""; }

function fillSelect(select, values, current) {
  for (const [value, count] of Object.entries(values)) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = `${value.replaceAll("_", " ")} (${count})`;
    select.appendChild(option);
  }
  if (current !== undefined) select.value = current;
  select.closest("label").hidden = Object.keys(values).length === 0;
}

function setSelect(select, value) {
  // A deep link may ask for a k the menu does not list (?k=8): add it rather than silently showing another.
  if (![...select.options].some((o) => o.value === value)) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = value;
    select.appendChild(option);
  }
  select.value = value;
}

function filterParams() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = $(name).value;
    if (value) params.set(name, value);
  }
  return params;
}

function card(result, phrase) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.caseId = result.study_id;
  node.dataset.rank = result.rank;
  node.querySelector(".thumb").src = result.thumbnail;
  node.querySelector(".rank").textContent = `#${result.rank}`;
  node.querySelector(".score").textContent = result.score.toFixed(3);
  node.querySelector(".split").textContent = result.split || "";
  node.querySelector(".modality").textContent = result.modality || "";
  node.querySelector(".study").textContent = `study ${result.study_id}`;
  node.querySelector(".impression").textContent = result.impression || result.snippet || "(no report text)";
  const labels = node.querySelector(".labels");
  for (const label of result.labels || []) {
    const chip = document.createElement("span");
    chip.textContent = label.replaceAll("_", " ");
    labels.appendChild(chip);
  }
  node.querySelector(".more").addEventListener("click", () => {
    const params = filterParams();
    params.set("similar", result.study_id);
    navigate(params);
  });
  if (phrase && grounding) {
    // "Where?": the description's heat map on this case, fetched on the first click (the server caches it).
    node.classList.add("groundable");
    const where = node.querySelector(".where");
    where.hidden = false;
    const toggle = () => toggleWhere(node, result, phrase);
    where.addEventListener("click", toggle);
    node.querySelector(".thumb").addEventListener("click", toggle);
    node.querySelector(".heat").addEventListener("click", toggle);
  }
  return node;
}

function toggleWhere(node, result, phrase) {
  const thumb = node.querySelector(".thumb");
  const heat = node.querySelector(".heat");
  const button = node.querySelector(".where");
  if (button.disabled) return;
  if (!heat.getAttribute("src")) {
    heat.addEventListener("error", () => {
      heat.hidden = true;
      thumb.hidden = false;
      button.disabled = true;
      button.setAttribute("aria-pressed", "false");
      button.textContent = "no heat map";
    }, { once: true });
    heat.src = `/api/heatmap/${result.entry}?q=${encodeURIComponent(phrase)}`;
  }
  const show = heat.hidden;
  heat.hidden = !show;
  thumb.hidden = show;
  button.setAttribute("aria-pressed", String(show));
  button.textContent = show ? "Image" : "Where?";
}

function showResults(title, results, phrase = null) {
  const box = $("results");
  box.replaceChildren(...results.map((result) => card(result, phrase)));
  $("results-title").textContent = title;
  $("results-title").hidden = false;
  setStatus(results.length ? "" : "no cases match");
}

function showScreening(answer) {
  const body = $("screening").querySelector("tbody");
  const maps = new Map((answer.heatmaps || []).map((m) => [m.finding, m]));
  const rows = answer.screening.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.finding = row.finding;
    const finding = document.createElement("td");
    finding.textContent = row.finding.replaceAll("_", " ");
    const score = document.createElement("td");
    score.className = "score";
    score.textContent = row.score.toFixed(3);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(row.score * 80)}px`;
    score.appendChild(bar);
    tr.append(finding, score, whereCell(maps.get(row.finding)), promptList(row.positive_prompts),
      promptList(row.negative_prompts));
    return tr;
  });
  body.replaceChildren(...rows);
  $("screening-prompts").textContent = `prompt set ${answer.prompts}, ${answer.zero_shot_mode}`;
  $("screening-section").hidden = false;
}

function whereCell(map) {
  // A top finding's heat map on the upload: a data: URL in the answer, so the server keeps nothing of the upload.
  const td = document.createElement("td");
  td.className = "where";
  if (!map || !map.overlay.startsWith("data:image/png;base64,")) return td;
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.className = "heat";
  img.src = map.overlay;
  img.alt = `where “${map.phrase}” lands on the uploaded image`;
  const caption = document.createElement("figcaption");
  caption.className = "muted";
  caption.textContent = map.phrase;
  figure.append(img, caption);
  td.appendChild(figure);
  return td;
}

function promptList(prompts) {
  const td = document.createElement("td");
  const ul = document.createElement("ul");
  for (const prompt of prompts) {
    const li = document.createElement("li");
    li.textContent = prompt;
    ul.appendChild(li);
  }
  td.appendChild(ul);
  return td;
}

async function run(params) {
  setError("");
  const q = params.get("q");
  const similar = params.get("similar");
  for (const name of FILTERS) if (params.has(name)) setSelect($(name), params.get(name));
  const query = filterParams();
  try {
    if (similar) {
      setStatus("searching ...");
      $("screening-section").hidden = true;
      const answer = await api(`/api/similar/${encodeURIComponent(similar)}?${query}`);
      showResults(`Cases like ${similar}`, answer.results);
    } else if (q) {
      $("q").value = q;
      query.set("q", q);
      setStatus("searching ...");
      $("screening-section").hidden = true;
      const answer = await api(`/api/search?${query}`);
      showResults(`Cases for “${q}”`, answer.results, q);
    }
  } catch (e) {
    if (!(e instanceof Unauthorised)) { setStatus(""); setError(e.message); }
  }
}

function navigate(params) {
  history.pushState(null, "", `/?${params}`);
  run(params);
}

async function screen(event) {
  event.preventDefault();
  const files = $("upload").files;
  if (!files.length) { setError("choose a study to upload"); return; }
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  setError("");
  setStatus("screening ...");
  try {
    const answer = await api(`/api/screen?${filterParams()}`, { method: "POST", body: form });
    showScreening(answer);
    showResults(`Cases like the uploaded study`, answer.results);
  } catch (e) {
    if (!(e instanceof Unauthorised)) { setStatus(""); setError(e.message); }
  }
}

async function start() {
  let info;
  try {
    info = await api("/api/info");
  } catch (e) {
    if (!(e instanceof Unauthorised)) setError(e.message);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  grounding = info.grounding || null;
  const params = new URLSearchParams(location.search);
  fillSelect($("modality"), info.modalities, params.get("modality") || "");
  fillSelect($("label"), info.labels, params.get("label") || "");
  $("index-info").textContent =
    `${info.index.n} images · ${info.index.kind}${info.index.compression !== "none" ? " " + info.index.compression : ""}` +
    ` · checkpoint ${info.checkpoint} · screening: ${info.findings.length} findings (${info.prompts})`;
  if (info.input === "volume") $("upload").setAttribute("accept", ".dcm,.dicom,.zip,.nii,.gz");
  document.body.dataset.ready = "1";
  await run(params);
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) { setError("type a description"); return; }
  const params = filterParams();
  params.set("q", q);
  navigate(params);
});
$("upload-form").addEventListener("submit", screen);
$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const response = await fetch("/api/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  $("token").value = "";
  if (response.ok) start(); else $("login-error").textContent = "wrong token";
});
window.addEventListener("popstate", () => run(new URLSearchParams(location.search)));
start();
