// The admin page's queues: each one's strategy, members with their levels, the assistants
// and topics routed to it, its timings and its figures; add, save, remove. The server
// checks everything (web.queues) and says why it refuses.
"use strict";
(() => {
  const status = (text) => sb.say("admin-status", text);
  const guard = (fn) => async (...args) => {
    try { await fn(...args); } catch (e) { status(e.message); }
  };
  const field = (props) => Object.assign(document.createElement("input"), props);
  const cell = (tr, node) => {
    const td = document.createElement("td");
    if (typeof node === "string") td.textContent = node; else td.appendChild(node);
    tr.appendChild(td);
  };
  const button = (text, className, onClick) => {
    const b = Object.assign(document.createElement("button"), { type: "button", textContent: text, className });
    b.addEventListener("click", guard(onClick));
    return b;
  };
  const figures = (s) => `${s.answered}/${s.entered} answered` +
    (s.service_level === null ? "" : `, ${Math.round(s.service_level * 100)}% within service level`) +
    `, ${s.no_answers} no-answers, ${s.waiting} waiting`;

  const loadQueues = guard(async () => {
    const data = await (await fetch("/api/admin/queues")).json();
    const body = document.querySelector("#queues tbody");
    body.replaceChildren();
    for (const q of data.queues) {
      const tr = document.createElement("tr");
      tr.dataset.queue = q.name;
      const strategy = document.createElement("select");
      for (const value of data.strategies)
        strategy.appendChild(new Option(value.replace(/_/g, " "), value, false, value === q.strategy));
      const members = field({ value: q.members.map((m) => `${m.login}:${m.level}`).join(" "), size: 18, className: "members" });
      const assistants = field({ value: q.assistants.join(" "), size: 12, className: "assistants" });
      const topics = field({ value: q.topics.join(" "), size: 12, className: "topics" });
      const numbers = ["ring_s", "max_wait_s", "service_level_s", "no_answer_limit"].map(
        (key) => field({ type: "number", value: q[key], min: key === "no_answer_limit" ? 0 : 1, className: key, style: "width: 5em" }));
      // Its own wrap-up limit after a call; empty: the site's setting applies.
      const wrapUp = field({ type: "number", value: q.wrap_up_s ?? "", min: 0, max: 600, placeholder: "default",
        className: "wrap_up_s", style: "width: 5em" });
      wrapUp.setAttribute("aria-label", `${q.name}: wrap-up seconds`);
      // Its agents pick a disposition before they are available again.
      const required = field({ type: "checkbox", checked: q.disposition_required, className: "disposition_required" });
      required.setAttribute("aria-label", `${q.name}: disposition required`);
      // Business hours and holidays one a line, as on an assistant (web.queues checks).
      const hours = Object.assign(document.createElement("textarea"),
        { value: [...q.hours, ...q.holidays].join("\n"), className: "hours", rows: 2,
          placeholder: "mon-fri 09:00-17:00\n2026-12-25" });
      cell(tr, q.name);
      for (const node of [strategy, members, assistants, topics, ...numbers, wrapUp, required, hours]) cell(tr, node);
      cell(tr, figures(q.stats));
      const actions = document.createElement("span");
      actions.append(button("Save", "save", async () => {
        const [ring, wait, level, away] = numbers.map((n) => Number(n.value));
        const lines = hours.value.split("\n").map((l) => l.trim()).filter(Boolean);
        const isDate = (l) => /^\d{4}-\d{2}-\d{2}$/.test(l);
        await sb.send("POST", `/api/admin/queues/${q.id}`, {
          strategy: strategy.value, members: members.value, assistants: assistants.value,
          topics: topics.value, ring_s: ring, max_wait_s: wait, service_level_s: level,
          no_answer_limit: away, disposition_required: required.checked,
          wrap_up_s: wrapUp.value.trim() === "" ? "" : Number(wrapUp.value),
          hours: lines.filter((l) => !isDate(l)), holidays: lines.filter(isDate),
        });
        status(`Queue ${q.name} saved.`);
        loadQueues();
      }), " ", button("Remove", "remove", async () => {
        if (!confirm(`Remove queue ${q.name}? Its cards go to every available agent; its figures stay.`)) return;
        await sb.send("POST", `/api/admin/queues/${q.id}/remove`, {});
        status(`Queue ${q.name} removed.`);
        loadQueues();
      }));
      cell(tr, actions);
      body.appendChild(tr);
    }
  });

  document.getElementById("new-queue").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    await sb.send("POST", "/api/admin/queues", {
      name: form.name.value, strategy: form.strategy.value, members: form.members.value,
      assistants: form.assistants.value, topics: form.topics.value,
    });
    status(`Queue ${form.name.value} added.`);
    form.reset();
    loadQueues();
  }));

  loadQueues();
})();
