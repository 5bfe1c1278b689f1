// What both console pages share: where the session API key is kept, and
// the REST call that sends it, only ever in the X-Session-API-Key header.
"use strict";

const KEY_STORE = "agent-server.session_api_key";

// apiCall sends method path (with body as JSON) with key and returns the
// decoded answer; a refusal throws an Error with its status and detail.
async function apiCall(key, method, path, body) {
  const headers = { "X-Session-API-Key": key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
  if (!resp.ok) {
    const err = new Error((data && data.detail) || resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}
