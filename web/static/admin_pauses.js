// The admin page's pause reasons: each one productive or not; add, remove. The server
// checks everything (web.pause_reasons) and says why it refuses.
"use strict";
(() => {
  const status = (text) => sb.say("admin-status", text);
  const guard = (fn) => async (...args) => {
    try { await fn(...args); } catch (e) { status(e.message); }
  };

  const loadReasons = guard(async () => {
    const data = await (await fetch("/api/admin/pause-reasons")).json();
    const body = document.querySelector("#pause-reasons tbody");
    body.replaceChildren();
    for (const reason of data.pause_reasons) {
      const tr = document.createElement("tr");
      tr.dataset.reason = reason.name;
      for (const text of [reason.name, reason.productive ? "Productive" : "Not productive"]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      const remove = Object.assign(document.createElement("button"),
        { type: "button", textContent: "Remove", className: "remove" });
      remove.addEventListener("click", guard(async () => {
        if (!confirm(`Remove pause reason ${reason.name}? Agents away for it keep it.`)) return;
        await sb.send("POST", `/api/admin/pause-reasons/${reason.id}/remove`, {});
        status(`Pause reason ${reason.name} removed.`);
        loadReasons();
      }));
      const td = document.createElement("td");
      td.appendChild(remove);
      tr.appendChild(td);
      body.appendChild(tr);
    }
  });

  document.getElementById("new-pause-reason").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const added = await sb.send("POST", "/api/admin/pause-reasons", {
      name: form.name.value, productive: form.productive.value === "true",
    });
    status(`Pause reason ${added.pause_reason.name} added.`);
    form.reset();
    loadReasons();
  }));

  loadReasons();
})();
