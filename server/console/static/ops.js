// agent-server operations view. Plain script, no build step, strict CSP:
// no inline style or script. It polls GET /api/operations, the server's own
// figures sampled in process (never /metrics), with the session API key in
// the X-Session-API-Key header only. A credential limited to some
// conversations gets 403: fleet figures are not one conversation's.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fde", "#c2410c", "#15803d", "#9333ea", "#b91c1c", "#0e7490", "#a16207", "#4b5563"];

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem(KEY_STORE);
let timer = null;

function showOps(on) {
  $("login").hidden = on;
  $("ops").hidden = !on;
  $("logout").hidden = !on;
  $("who").textContent = on ? "key set for this tab" : "";
}

function fetchView() {
  return apiCall(key, "GET", "/api/operations");
}

async function login() {
  const candidate = $("key").value;
  if (!candidate) return;
  key = candidate;
  try {
    render(await fetchView());
  } catch (e) {
    key = null;
    $("login-error").textContent = e.status === 401 ? "That key was refused."
      : e.status === 403 ? "This credential is limited to some conversations; the operations view needs one that is not."
      : "Login failed: " + e.message;
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  $("key").value = "";
  $("login-error").textContent = "";
  showOps(true);
  poll();
}

function logout() {
  clearTimeout(timer);
  sessionStorage.removeItem(KEY_STORE);
  key = null;
  showOps(false);
}

async function poll() {
  clearTimeout(timer);
  try {
    render(await fetchView());
    $("ops-error").textContent = "";
  } catch (e) {
    $("ops-error").textContent = e.status === 403
      ? "Forbidden: this credential is limited to some conversations."
      : "Could not read the figures: " + e.message;
    if (e.status === 401 || e.status === 403) return;
  }
  timer = setTimeout(poll, POLL_MS);
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const v = seconds * 1000;
  return (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms";
}

function duration(s) {
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function render(v) {
  $("sockets").textContent = String(v.sockets);
  $("running").textContent = String(v.conversations.running);
  $("passivated").textContent = String(v.conversations.passivated);
  $("commit").textContent = ms(v.store.commit_p99_seconds) + " · " + v.store.driver;
  $("version").textContent = v.version + " · " + duration(v.uptime_seconds);
  $("no-metrics").hidden = v.metrics;

  const failing = (v.plugins || []).filter((p) => p.failing);
  const alert = $("alert");
  alert.hidden = failing.length === 0;
  alert.textContent = failing.length === 0 ? "" : "Failing: " + failing.map((p) =>
    p.name + " (" + (p.state !== "ready" ? p.state : p.errors_last_minute + " errors in the last minute") + ")").join(", ");

  const body = $("plugins").tBodies[0];
  body.replaceChildren();
  for (const p of v.plugins || []) {
    const tr = document.createElement("tr");
    tr.dataset.plugin = p.name;
    tr.dataset.state = p.state;
    if (p.failing) tr.className = "failing";
    const procs = p.processes > 1 ? " (" + p.processes_up + "/" + p.processes + ")" : "";
    tr.append(cell(p.name), cell(p.state + procs, "state state-" + p.state), cell(p.version || "–"), cell(String(p.restarts)),
      cell(String(p.decisions.allow)), cell(String(p.decisions.deny)), cell(String(p.decisions.error)),
      cell(String(p.errors_last_minute)), cell(ms(p.p99_seconds)), cell(p.last_error || "", "last-error"));
    body.append(tr);
  }

  const s = v.series;
  const names = (v.plugins || []).map((p) => p.name);
  chart("plugin-errors", s.time, names.map((n) => ({ name: n, values: s.plugin_errors[n] || [] })));
  chart("decisions", s.time, [
    { name: "allowed", values: s.allowed, color: "#15803d" },
    { name: "denied", values: s.denied, color: "#a16207" },
    { name: "errors", values: s.errors, color: "#b91c1c" },
  ]);
  chart("plugin-p99", s.time, names.map((n) => ({ name: n, values: (s.plugin_p99_seconds[n] || []).map((x) => x === null ? null : x * 1000) })));
  chart("load", s.time, [
    { name: "sockets", values: s.sockets, color: "#2f6fde" },
    { name: "conversations", values: s.conversations, color: "#9333ea" },
  ]);
  chart("commit", s.time, [{ name: "commit p99", values: (s.commit_p99_seconds || []).map((x) => x === null ? null : x * 1000), color: "#0e7490" }]);

  const nodes = v.nodes || [];
  $("cluster").hidden = nodes.length === 0;
  const nb = $("nodes").tBodies[0];
  nb.replaceChildren();
  for (const n of nodes) {
    const tr = document.createElement("tr");
    tr.append(cell(n.id + (n.self ? " (this node)" : "")), cell(n.address));
    nb.append(tr);
  }
}

// chart draws lines of values against times (unix ms) in an SVG, with
// presentation attributes only (the CSP allows no inline style).
function chart(id, times, lines) {
  const svg = $("chart-" + id);
  svg.replaceChildren();
  const W = 400, H = 140, L = 34, B = 16, T = 6;
  let max = 0;
  for (const l of lines) for (const x of l.values) if (x !== null && x > max) max = x;
  if (max === 0) max = 1;
  const n = times.length;
  const x = (i) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - 4));
  const y = (val) => T + (1 - val / max) * (H - T - B);
  const line = (x1, y1, x2, y2) => {
    const e = document.createElementNS(SVG, "line");
    e.setAttribute("x1", x1); e.setAttribute("y1", y1); e.setAttribute("x2", x2); e.setAttribute("y2", y2);
    e.setAttribute("stroke", "#d8dce3");
    svg.append(e);
  };
  const label = (tx, ty, text, anchor) => {
    const e = document.createElementNS(SVG, "text");
    e.setAttribute("x", tx); e.setAttribute("y", ty); e.setAttribute("font-size", "9"); e.setAttribute("fill", "#5a6478");
    if (anchor) e.setAttribute("text-anchor", anchor);
    e.textContent = text;
    svg.append(e);
  };
  line(L, T, L, H - B);
  line(L, H - B, W, H - B);
  label(L - 3, T + 8, max >= 10 ? max.toFixed(0) : max.toPrecision(2), "end");
  label(L - 3, H - B, "0", "end");
  if (n > 1) {
    label(L, H - 3, "-" + Math.round((times[n - 1] - times[0]) / 1000) + " s");
    label(W - 4, H - 3, "now", "end");
  }
  const legend = $("legend-" + id);
  legend.replaceChildren();
  lines.forEach((l, k) => {
    const color = l.color || COLORS[k % COLORS.length];
    const pts = [];
    l.values.forEach((val, i) => { if (val !== null) pts.push(x(i).toFixed(1) + "," + y(val).toFixed(1)); });
    const pl = document.createElementNS(SVG, "polyline");
    pl.setAttribute("points", pts.join(" "));
    pl.setAttribute("fill", "none");
    pl.setAttribute("stroke", color);
    pl.setAttribute("stroke-width", "1.6");
    pl.dataset.series = l.name;
    svg.append(pl);
    const item = document.createElement("span");
    item.className = "item";
    const swatch = document.createElementNS(SVG, "svg");
    swatch.setAttribute("width", "10"); swatch.setAttribute("height", "10");
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("width", "10"); r.setAttribute("height", "10"); r.setAttribute("fill", color);
    swatch.append(r);
    item.append(swatch, document.createTextNode(" " + l.name));
    legend.append(item);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-button").addEventListener("click", login);
  $("key").addEventListener("keydown", (ev) => { if (ev.key === "Enter") login(); });
  $("logout").addEventListener("click", logout);
  if (key) {
    showOps(true);
    poll();
  }
});
