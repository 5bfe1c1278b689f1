// agent-server web console. Plain script, no build step. The session API
// key lives in sessionStorage and travels only in the X-Session-API-Key
// header (REST) and in a subprotocol entry (WebSocket), never in a URL.
"use strict";

const PROTOCOL = "agent-server.v1";
const TOKEN_PREFIX = "base64url.bearer.agent-server.";
const FATAL_CLOSES = new Set([4001, 4003, 4004]); // do not reconnect

const $ = (id) => document.getElementById(id);

let key = sessionStorage.getItem(KEY_STORE);
let current = null; // the open conversation's stream

// base64url without padding of the key's UTF-8 bytes.
function b64url(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function api(method, path, body) {
  return apiCall(key, method, path, body);
}

function showApp(on) {
  $("login").hidden = on;
  $("app").hidden = !on;
  $("logout").hidden = !on;
  $("who").textContent = on ? "key set for this tab" : "";
}

async function login() {
  const candidate = $("key").value;
  if (!candidate) return;
  key = candidate;
  try {
    await api("GET", "/api/conversations/count");
  } catch (e) {
    key = null;
    $("login-error").textContent = e.status === 401 ? "That key was refused." : "Login failed: " + e.message;
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  $("key").value = "";
  $("login-error").textContent = "";
  showApp(true);
  refresh();
}

function logout() {
  if (current) current.stop();
  sessionStorage.removeItem(KEY_STORE);
  key = null;
  showApp(false);
}

async function refresh() {
  $("list-error").textContent = "";
  try {
    const page = await api("GET", "/api/conversations/search?limit=100");
    const list = $("conversations");
    list.replaceChildren();
    for (const c of page.items || []) {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      li.textContent = c.id.slice(0, 8) + " · " + (c.execution_status || "");
      li.title = c.id;
      if (current && current.id === c.id) li.classList.add("open");
      li.addEventListener("click", () => openConversation(c.id));
      list.append(li);
    }
  } catch (e) {
    $("list-error").textContent = "Could not list conversations: " + e.message;
  }
}

async function create() {
  try {
    const c = await api("POST", "/api/conversations", { agent: { kind: "console" } });
    await refresh();
    openConversation(c.id);
  } catch (e) {
    $("list-error").textContent = "Could not create a conversation: " + e.message;
  }
}

function setState(state, info) {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = state;
  if (info !== undefined) $("close-info").textContent = info;
}

// Stream is one conversation's live event stream. It reconnects with
// after_id (the last logged event it showed) and drops any event it has
// already shown, so a resume never duplicates.
class Stream {
  constructor(id) {
    this.id = id;
    this.seen = new Set();
    this.lastId = null;
    this.ws = null;
    this.stopped = false;
    this.backoff = 250;
    this.reconnects = 0;
    this.lastClose = "";
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const q = this.lastId ? "after_id=" + encodeURIComponent(this.lastId) : "resend_all=true";
    return scheme + location.host + "/sockets/events/" + this.id + "?" + q;
  }

  connect() {
    setState(this.reconnects ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url(), [PROTOCOL, TOKEN_PREFIX + b64url(key)]);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 250;
      setState("open", this.lastClose ? "Resumed after: " + this.lastClose : "");
      $("message").disabled = false;
      $("send").disabled = false;
    };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = (ev) => {
      $("message").disabled = true;
      $("send").disabled = true;
      const info = "Closed " + ev.code + (ev.reason ? " \u2013 " + ev.reason : "");
      this.lastClose = info;
      if (this.stopped || this.ws !== ws) return;
      if (FATAL_CLOSES.has(ev.code)) {
        setState("closed", info);
        return;
      }
      setState("reconnecting", info + "; reconnecting\u2026");
      this.reconnects++;
      $("state").dataset.reconnects = String(this.reconnects);
      setTimeout(() => { if (!this.stopped) this.connect(); }, this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }

  receive(data) {
    let e;
    try { e = JSON.parse(data); } catch (_) { return; }
    if (e.kind === "ConversationStateUpdateEvent" && e.key === "full_state") {
      const v = e.value || {};
      const snap = $("snapshot");
      snap.textContent = "full_state: " + (v.execution_status || "received");
      snap.dataset.count = String(Number(snap.dataset.count || 0) + 1);
      return;
    }
    if (e.kind !== "ServerErrorEvent") {
      if (this.seen.has(e.id)) return; // already shown before a resume
      this.seen.add(e.id);
      this.lastId = e.id;
    }
    $("events").append(renderEvent(e));
    $("events").lastElementChild.scrollIntoView({ block: "end" });
  }

  send(text) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ role: "user", content: text }));
    }
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000, "closed by the console");
  }
}

function renderEvent(e) {
  const li = document.createElement("li");
  li.dataset.id = e.id || "";
  li.dataset.kind = e.kind || "";
  const source = document.createElement("span");
  source.className = "source";
  source.textContent = e.source || "";
  const kind = document.createElement("span");
  kind.className = "kind";
  kind.textContent = e.kind || "";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = eventText(e);
  li.append(source, kind, body);
  return li;
}

function eventText(e) {
  if (e.kind === "MessageEvent" && e.llm_message && Array.isArray(e.llm_message.content)) {
    return e.llm_message.content.map((p) => p.text || "").join(" ");
  }
  if (e.kind === "ServerErrorEvent") return (e.code || "") + ": " + (e.detail || "");
  const rest = Object.assign({}, e);
  for (const k of ["id", "timestamp", "source", "kind"]) delete rest[k];
  const s = JSON.stringify(rest);
  return s.length > 200 ? s.slice(0, 200) + "\u2026" : s;
}

function openConversation(id) {
  if (current) current.stop();
  $("events").replaceChildren();
  $("snapshot").textContent = "";
  $("snapshot").dataset.count = "0";
  $("title").textContent = id;
  for (const li of $("conversations").children) li.classList.toggle("open", li.dataset.id === id);
  current = new Stream(id);
  current.connect();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-button").addEventListener("click", login);
  $("key").addEventListener("keydown", (ev) => { if (ev.key === "Enter") login(); });
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", refresh);
  $("create").addEventListener("click", create);
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("message").value.trim();
    if (!text || !current) return;
    current.send(text);
    $("message").value = "";
  });
  if (key) {
    showApp(true);
    refresh();
  }
});
