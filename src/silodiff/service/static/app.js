// silodiff web page: plain JS, no build step. The key stays in this tab (sessionStorage) and is sent
// only as the X-API-Key header.
"use strict";

const COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const $ = (id) => document.getElementById(id);
let compartments = [];

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function detailText(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return `HTTP ${status}`;
}

async function api(path, options = {}) {
  const headers = { "X-API-Key": $("key").value.trim(), ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`${response.status}: ${detailText(body, response.status)}`);
  return body;
}

function colour(name) {
  return COLOURS[compartments.findIndex((c) => c.name === name) % COLOURS.length];
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function connect() {
  showError("");
  sessionStorage.setItem("silodiff-key", $("key").value.trim());
  try {
    const me = await api("/v1/me");
    $("whoami").textContent = `key ${me.name}${me.admin ? " (admin)" : ""} · sources: ${me.sources.join(", ")}`;
    compartments = (await api("/v1/compartments")).compartments;
    renderChoices();
    $("user").hidden = false;
    $("admin").hidden = !me.admin;
    if (me.admin) await refreshAdmin();
  } catch (err) {
    $("user").hidden = true;
    $("admin").hidden = true;
    $("whoami").textContent = "";
    showError(err.message);
  }
}

function checkbox(name, value, text, enabled) {
  const label = document.createElement("label");
  const input = document.createElement("input");
  Object.assign(input, { type: "checkbox", name, value, checked: enabled, disabled: !enabled });
  label.append(input, ` ${text}`);
  return label;
}

function renderChoices() {
  const boxes = $("compartments");
  boxes.replaceChildren();
  const labels = new Set();
  for (const c of compartments) {
    Object.keys(c.labels).forEach((y) => labels.add(Number(y)));
    boxes.append(checkbox("compartment", c.name, `${c.name} (${c.n})`, c.trained));
  }
  const labelBoxes = $("labels");
  labelBoxes.replaceChildren();
  for (const y of [...labels].sort((a, b) => a - b)) {
    labelBoxes.append(checkbox("label", String(y), String(y), true));
  }
  $("legend").replaceChildren(...compartments.map((c) => {
    const s = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour(c.name);
    s.append(swatch, c.name);
    return s;
  }));
}

function checked(name) {
  return [...document.querySelectorAll(`input[name=${name}]:checked`)].map((e) => e.value);
}

async function generate() {
  showError("");
  $("status").textContent = "generating…";
  const body = {
    n: Number($("n").value), steps: Number($("steps").value), seed: Number($("seed").value),
    sampler: $("sampler").value, router: $("router").value,
    compartments: checked("compartment"), labels: checked("label").map(Number),
  };
  if (!body.labels.length) delete body.labels;
  try {
    const out = await api("/v1/generate", { method: "POST", body: JSON.stringify(body) });
    renderImages(out);
    $("status").textContent = `${out.images.length} images in ${out.seconds} s · router ${out.router}`;
    if (!$("admin").hidden) await refreshAdmin();
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
  }
}

function renderImages(out) {
  $("results").replaceChildren(...out.images.map((im) => {
    const card = document.createElement("div");
    card.className = "card";
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${im.png}`;
    img.alt = `label ${im.label}`;
    const bar = document.createElement("div");
    bar.className = "bar";
    for (const [name, w] of Object.entries(im.weights)) {
      const seg = document.createElement("div");
      seg.className = "seg";
      seg.dataset.compartment = name;
      seg.style.width = `${(100 * w).toFixed(2)}%`;
      seg.style.background = colour(name);
      seg.title = `${name}: ${w.toFixed(3)}`;
      bar.append(seg);
    }
    const caption = document.createElement("div");
    const top = Object.entries(im.weights).sort((a, b) => b[1] - a[1])[0];
    caption.textContent = `label ${im.label} · ${top[0]} ${top[1].toFixed(2)}`;
    card.append(img, bar, caption);
    return card;
  }));
}

async function refreshAdmin() {
  try {
    const body = $("admin-compartments").tBodies[0];
    body.replaceChildren();
    for (const c of compartments) {
      const row = body.insertRow();
      cell(row, c.name); cell(row, c.status); cell(row, c.n); cell(row, c.sources.join(", "));
      cell(row, c.artifact ? c.artifact.slice(0, 12) : "—");
    }
    const events = (await api("/v1/events?limit=30")).events.reverse();
    const tbody = $("events").tBodies[0];
    tbody.replaceChildren();
    for (const e of events) {
      const row = tbody.insertRow();
      row.dataset.kind = e.kind;
      cell(row, e.seq); cell(row, e.ts.replace("T", " ").slice(0, 23)); cell(row, e.kind); cell(row, e.payload.key || "");
      const { key, ...rest } = e.payload;
      cell(row, JSON.stringify(rest).slice(0, 240), "details");
    }
  } catch (err) {
    showError(err.message);
  }
}

$("connect").addEventListener("click", connect);
$("key").addEventListener("keydown", (e) => { if (e.key === "Enter") connect(); });
$("generate").addEventListener("click", generate);
$("refresh-events").addEventListener("click", refreshAdmin);
const saved = sessionStorage.getItem("silodiff-key");
if (saved) { $("key").value = saved; connect(); }
