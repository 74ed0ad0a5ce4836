// Shared by the after-call, supervisor and admin pages: JSON requests with the CSRF token.
"use strict";
window.sb = {
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },
  async send(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": window.sb.csrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      throw new Error(data.reason || `request failed (${response.status})`);
    }
    return data;
  },
  say(id, text) {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  },
};
