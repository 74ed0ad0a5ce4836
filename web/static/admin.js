// The admin page: roles, new agents (credentials shown once), disabling people, assistants (numbers,
// engine, handoff rules, restricted topics, tokens shown once, disable and remove), trunks (with
// their status), a test call, blocked SIP addresses, the audit log.
"use strict";
(() => {
  const status = (text) => sb.say("admin-status", text);
  const words = window.sbWords;
  // Examples in the numbering of asterisk.country (web/dashboard/words.py).
  const placeholders = JSON.parse(document.getElementById("people").dataset.placeholders);
  const guard = (fn) => async (...args) => {
    try { await fn(...args); } catch (e) { status(e.message); }
  };

  for (const select of document.querySelectorAll("select.role")) {
    select.addEventListener("change", guard(async () => {
      await sb.send("POST", `/api/admin/agents/${select.dataset.agent}/role`,
                    { role: select.value });
      status("Role changed.");
      loadAudit();
    }));
  }

  // Someone who stops taking calls goes off duty at once and loses their duty switch.
  for (const box of document.querySelectorAll("input.takes-calls")) {
    box.addEventListener("change", guard(async () => {
      try {
        await sb.send("POST", `/api/admin/agents/${box.dataset.agent}/takes-calls`,
                      { takes_calls: box.checked });
      } catch (e) {
        box.checked = !box.checked;
        throw e;
      }
      status(box.checked ? "They take calls now." : "They take no calls now.");
      loadAudit();
    }));
  }

  // Each person's state follows the page's socket (desk.js): the snapshot, then every
  // agent_changed delta (duty, presence, a call taken or over), as the desk sees them.
  // An agent away for a reason reads "Away: Lunch, not productive (12:03)": how long
  // this pause has lasted, counted from the server's presence_since.
  function stateText(cell) {
    const said = words.say("agent_states", cell.dataset.state);
    if (cell.dataset.state === "away" && cell.dataset.reason) {
      const kind = cell.dataset.productive === "true" ? "productive" : "not productive";
      const since = cell.dataset.since ? Date.parse(cell.dataset.since) : NaN;
      const took = Number.isNaN(since) ? "" : ` (${words.clock((Date.now() - since) / 1000)})`;
      return `${said}: ${cell.dataset.reason}, ${kind}${took}`;
    }
    const until = cell.dataset.until ? Date.parse(cell.dataset.until) : NaN;
    if (cell.dataset.state !== "wrap_up" || Number.isNaN(until)) return said;
    return `${said} (${words.clock((until - Date.now()) / 1000)} left)`;
  }
  function keep(cell, key, value) {
    if (value === null || value === undefined) delete cell.dataset[key];
    else cell.dataset[key] = String(value);
  }
  function showAgent(agent) {
    const cell = document.querySelector(`#agents tr[data-agent="${agent.id}"] td.agent-state`);
    if (!cell) return;
    cell.dataset.state = agent.state;
    keep(cell, "until", agent.wrap_up_until);
    keep(cell, "reason", agent.pause_reason);
    keep(cell, "productive", agent.pause_productive);
    keep(cell, "since", agent.presence_since);
    cell.textContent = stateText(cell);
    const box = document.querySelector(`input.takes-calls[data-agent="${agent.id}"]`);
    if (box) box.checked = agent.takes_calls;
    // Renamed by another admin (or the CLI): unless this admin is typing in it.
    const name = document.querySelector(`input.display-name[data-agent="${agent.id}"]`);
    if (name && agent.display_name && document.activeElement !== name) name.value = agent.display_name;
  }
  window.addEventListener("switchboard:message", (event) => {
    const message = event.detail;
    if (message.type === "snapshot") (message.agents || []).forEach(showAgent);
    else if (message.type === "delta" && message.op === "agent_changed") showAgent(message.agent);
  });
  setInterval(() => {
    for (const cell of document.querySelectorAll(
      '#agents td.agent-state[data-until], #agents td.agent-state[data-reason]')) {
      cell.textContent = stateText(cell);
    }
  }, 1000);
  for (const cell of document.querySelectorAll("#agents td.agent-state")) cell.textContent = stateText(cell);

  // Disable ends the person's sessions and their phone's registration at once; remove
  // also drops them from this list (their calls and audit lines stay).
  for (const button of document.querySelectorAll("button.account")) {
    button.addEventListener("click", guard(async () => {
      const action = button.dataset.action;
      if (action === "remove" && !confirm("Remove this person? Their history stays.")) return;
      await sb.send("POST", `/api/admin/agents/${button.dataset.agent}/${action}`, {});
      location.reload();
    }));
  }

  // The login stays (phones and scripts use it); the name is what cards and boards say.
  for (const input of document.querySelectorAll("input.display-name")) {
    input.addEventListener("change", guard(async () => {
      const saved = await sb.send("POST", `/api/admin/agents/${input.dataset.agent}/name`,
                                  { display_name: input.value });
      input.value = saved.agent.display_name;
      loadAudit();
    }));
  }

  // A new password is in one response only; the person's sessions end with it.
  for (const button of document.querySelectorAll("button.new-password")) {
    button.addEventListener("click", guard(async () => {
      const login = button.dataset.login;
      if (!confirm(`A new password for ${login}? They are signed out everywhere.`)) return;
      const made = await sb.send("POST", `/api/admin/agents/${button.dataset.agent}/password`, {});
      const out = document.getElementById("credentials");
      out.hidden = false;
      out.textContent = `New dashboard password for ${made.login}, shown once:\n` +
        `  ${made.one_time_password}\n`;
      loadAudit();
    }));
  }

  document.getElementById("new-agent").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const made = await sb.send("POST", "/api/admin/agents", {
      login: form.login.value, display_name: form.display_name.value,
      role: form.role.value, endpoint_kind: form.endpoint_kind.value,
      takes_calls: form.takes_calls.checked,
    });
    const out = document.getElementById("credentials");
    out.hidden = false;
    out.textContent = `Agent ${made.agent.login} created. Shown once:\n` +
      `  dashboard password  ${made.one_time_password}\n` +
      `  SIP user / password ${made.sip.user} / ${made.sip.password}\n` +
      (made.endpoint_live ? "" : "  (the phone can register after the next restart)\n");
    form.reset();
    loadAudit();
  }));

  function cell(tr, node) {
    const td = document.createElement("td");
    if (typeof node === "string") td.textContent = node; else td.appendChild(node);
    tr.appendChild(td);
  }
  function choice(values, current) {
    const select = document.createElement("select");
    for (const value of values) {
      const option = new Option(words.say("choices", value), value, false, value === current);
      select.appendChild(option);
    }
    return select;
  }

  // A control token is in one response only (the server keeps its hash): show it once.
  function showToken(name, token) {
    const out = document.getElementById("assistant-token");
    out.hidden = false;
    out.textContent = `Control token of ${name}, shown once (the engine sends it as ` +
      `Authorization: Bearer …):\n  ${token}\n`;
  }
  function button(text, onClick) {
    const b = Object.assign(document.createElement("button"), { type: "button", textContent: text });
    b.addEventListener("click", guard(onClick));
    return b;
  }
  const numbersOf = (text) => text.split(/[\s,]+/).filter(Boolean);
  // Restricted topics as the command line writes them, one a line: NAME=phrase, phrase.
  // The server parses and checks the lines (web.assistants.parse_topics).
  const topicsText = (topics) => topics.map((t) => `${t.name}=${t.phrases.join(", ")}`).join("\n");
  const topicLines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);

  document.getElementById("new-assistant").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const made = await sb.send("POST", "/api/admin/assistants", {
      name: form.name.value, numbers: numbersOf(form.numbers.value), engine: form.engine.value,
    });
    if (made.token) showToken(made.assistant.name, made.token);
    status(`${made.assistant.name} created` + (made.live ? "; its numbers answer now." : "."));
    form.reset();
    loadAssistants();
    loadAudit();
  }));

  const loadAssistants = guard(async () => {
    const data = await (await fetch("/api/admin/assistants")).json();
    const body = document.querySelector("#assistants tbody");
    body.replaceChildren();
    for (const a of data.assistants) {
      const tr = document.createElement("tr");
      tr.dataset.assistant = a.name;
      const numbers = Object.assign(document.createElement("input"),
        { value: a.numbers.join(" "), className: "numbers", placeholder: "2100 _21XX" });
      const engine = Object.assign(document.createElement("input"),
        { value: a.engine, className: "engine", placeholder: "builtin or host:port" });
      const level = choice(data.handoff_levels, a.handoff_level);
      const timeout = Object.assign(document.createElement("input"),
        { type: "number", min: 5, max: 600, value: a.accept_timeout_s });
      const kind = choice(data.fallback_kinds, a.fallback_kind);
      const number = Object.assign(document.createElement("input"),
        { type: "tel", value: a.fallback_number, placeholder: placeholders.number });
      const topics = Object.assign(document.createElement("textarea"),
        { value: topicsText(a.restricted_topics), className: "topics", rows: 2,
          placeholder: "billing=billing dispute, refund" });
      // Business hours one span a line ("mon-fri 09:00-17:00"), then holidays, each a
      // YYYY-MM-DD line: the server sorts one from the other and checks them
      // (web.assistants.hours_from). Empty: always open.
      const hours = Object.assign(document.createElement("textarea"),
        { value: [...a.hours, ...a.holidays].join("\n"), className: "hours", rows: 2,
          placeholder: "mon-fri 09:00-17:00\n2026-12-25" });
      // A DTMF menu before the AI: what callers hear, then one key a line
      // (1=assistant:sales, 2=queue:billing); no lines, no menu (web.assistants.menu_from).
      const menuPrompt = Object.assign(document.createElement("input"),
        { value: a.menu_prompt, className: "menu-prompt", placeholder: "Press 1 for sales" });
      const menu = Object.assign(document.createElement("textarea"),
        { value: a.menu.join("\n"), className: "menu", rows: 2,
          placeholder: "1=assistant:sales\n2=queue:billing" });
      // What the caller is told when a person joins, one moment a line:
      // handover=You are now speaking with a person. No line for a moment: silence.
      const said = Object.assign(document.createElement("textarea"),
        { value: Object.entries(a.announcements).map(([m, w]) => `${m}=${w}`).join("\n"),
          className: "announcements", rows: 2,
          placeholder: "handover=You are now speaking with a person." });
      const menuCell = document.createElement("span");
      menuCell.append(menuPrompt, menu);
      const save = Object.assign(document.createElement("button"),
        { type: "button", textContent: "Save" });
      save.addEventListener("click", guard(async () => {
        const lines = topicLines(hours.value);
        const isDate = (l) => /^\d{4}-\d{2}-\d{2}$/.test(l);
        const saved = await sb.send("POST", `/api/admin/assistants/${a.id}`, {
          numbers: numbersOf(numbers.value), engine: engine.value,
          handoff_level: level.value, accept_timeout_s: Number(timeout.value),
          fallback_kind: kind.value, fallback_number: number.value,
          restricted_topics: topicLines(topics.value),
          hours: lines.filter((l) => !isDate(l)), holidays: lines.filter(isDate),
          menu_prompt: menuPrompt.value, menu: topicLines(menu.value),
          announcements: topicLines(said.value),
        });
        if (saved.token) showToken(a.name, saved.token);
        status(`${a.name} saved.`);
        loadAssistants();
        loadAudit();
      }));
      const actions = document.createElement("span");
      actions.append(save, button("New token", async () => {
        if (!confirm(`A new token for ${a.name}? The old one stops working at once.`)) return;
        showToken(a.name, (await sb.send("POST", `/api/admin/assistants/${a.id}/token`, {})).token);
        loadAudit();
      }));
      const change = (action) => async () => {
        if (action === "remove" && !confirm(`Remove ${a.name}? Its calls stay in the history.`)) return;
        await sb.send("POST", `/api/admin/assistants/${a.id}/${action}`, {});
        status(`${a.name} ${action}d.`);
        loadAssistants();
        loadAudit();
      };
      actions.append(a.enabled ? button("Disable", change("disable")) : button("Enable", change("enable")),
                     button("Remove", change("remove")));
      cell(tr, a.name); cell(tr, numbers); cell(tr, engine); cell(tr, level); cell(tr, timeout);
      cell(tr, kind); cell(tr, number); cell(tr, topics); cell(tr, hours);
      cell(tr, menuCell); cell(tr, said);
      cell(tr, a.enabled ? "enabled" : "disabled");
      cell(tr, actions);
      body.appendChild(tr);
    }
  });

  // A trunk's password never comes back from the server: the field stays empty, and an
  // empty field keeps the password there is.
  const field = (props) => Object.assign(document.createElement("input"), props);
  const loadTrunks = guard(async () => {
    const data = await (await fetch("/api/admin/trunks")).json();
    const body = document.querySelector("#trunks tbody");
    body.replaceChildren();
    for (const t of data.trunks) {
      const tr = document.createElement("tr");
      tr.dataset.trunk = t.name;
      const how = t.auth === "register" ? `registers as ${t.username}` : "by address";
      const state = t.status + (t.last_error ? `: ${t.last_error}` : "");
      cell(tr, t.name + (t.read_only ? ` (${t.source})` : ""));
      cell(tr, `${t.host}:${t.port}`); cell(tr, how); cell(tr, state);
      if (t.read_only) {
        for (const text of [t.caller_id, t.codecs.join(","), t.patterns.join(" "),
          t.allow_international ? "allowed" : "no", t.allow_premium ? "allowed" : "no",
          t.enabled ? "yes" : "no", "", ""]) cell(tr, text);
        body.appendChild(tr);
        continue;
      }
      const callerId = field({ value: t.caller_id, size: 14 });
      const codecs = field({ value: t.codecs.join(","), size: 10 });
      const patterns = field({ value: t.patterns.join(" "), size: 24 });
      const intl = field({ type: "checkbox", checked: t.allow_international });
      const premium = field({ type: "checkbox", checked: t.allow_premium });
      const enabled = field({ type: "checkbox", checked: t.enabled });
      const password = field({ type: "password", autocomplete: "new-password",
        placeholder: t.password_set ? "unchanged" : "", disabled: t.auth !== "register" });
      const save = Object.assign(document.createElement("button"),
        { type: "button", textContent: "Save", className: "save" });
      save.addEventListener("click", guard(async () => {
        await sb.send("POST", `/api/admin/trunks/${t.id}`, {
          caller_id: callerId.value, codecs: codecs.value, patterns: patterns.value,
          allow_international: intl.checked, allow_premium: premium.checked,
          enabled: enabled.checked, password: password.value,
        });
        status(`Trunk ${t.name} saved.`);
        loadTrunks(); loadAudit();
      }));
      const remove = Object.assign(document.createElement("button"),
        { type: "button", textContent: "Remove", className: "remove" });
      remove.addEventListener("click", guard(async () => {
        if (!confirm(`Remove trunk ${t.name}? Calls in progress go on.`)) return;
        await sb.send("POST", `/api/admin/trunks/${t.id}/remove`, {});
        loadTrunks(); loadAudit();
      }));
      for (const node of [callerId, codecs, patterns, intl, premium, enabled, password])
        cell(tr, node);
      const actions = document.createElement("span");
      actions.append(save, " ", remove);
      cell(tr, actions);
      body.appendChild(tr);
    }
  });

  document.getElementById("new-trunk").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    await sb.send("POST", "/api/admin/trunks", {
      name: form.name.value, host: form.host.value, port: Number(form.port.value),
      auth: form.auth.value, username: form.username.value, password: form.password.value,
      caller_id: form.caller_id.value, codecs: form.codecs.value,
      patterns: form.patterns.value, allow_international: form.allow_international.checked,
      allow_premium: form.allow_premium.checked,
    });
    status(`Trunk ${form.name.value} added.`);
    form.reset();
    loadTrunks(); loadAudit();
  }));

  // Filtered on the server (person, action, the site's days); a bad filter is refused
  // with its reason, and the lines shown stay those of the last good one.
  const auditFilter = document.getElementById("audit-filter");
  const loadAudit = guard(async () => {
    const query = new URLSearchParams({ limit: "100" });
    for (const [name, value] of new FormData(auditFilter)) if (value) query.set(name, value);
    const response = await fetch(`/api/admin/audit?${query}`);
    const data = await response.json();
    if (!response.ok) throw new Error(data.reason || `the audit log could not be read (${response.status})`);
    const body = document.querySelector("#audit tbody");
    body.replaceChildren();
    for (const e of data.events) {
      const tr = document.createElement("tr");
      tr.dataset.action = e.action;
      const when = Object.assign(document.createElement("time"), { dateTime: e.at, textContent: e.when });
      cell(tr, when); cell(tr, e.said);
      body.appendChild(tr);
    }
  });
  auditFilter.addEventListener("submit", (ev) => {
    ev.preventDefault();
    status("");
    loadAudit();
  });

  const loadBlocks = guard(async () => {
    const data = await (await fetch("/api/admin/sip-blocks")).json();
    const body = document.querySelector("#sip-blocks tbody");
    body.replaceChildren();
    for (const b of data.blocks) {
      const tr = document.createElement("tr");
      const lift = Object.assign(document.createElement("button"),
        { type: "button", textContent: "Lift", className: "lift" });
      lift.addEventListener("click", guard(async () => {
        await sb.send("POST", `/api/admin/sip-blocks/${encodeURIComponent(b.address)}/lift`, {});
        status(`${b.address} may register again.`);
        loadBlocks();
        loadAudit();
      }));
      cell(tr, b.address); cell(tr, String(b.failures));
      cell(tr, b.blocked_when); cell(tr, b.until_when); cell(tr, lift);
      body.appendChild(tr);
    }
  });

  document.getElementById("test-call").addEventListener("click", guard(async () => {
    const placed = await sb.send("POST", "/api/admin/test-call", {});
    status(`The test caller is calling ${placed.calling}: after the greeting it presses 0 ` +
      "for a person, and its card goes to the agents on duty (go on duty on the Desk to take it).");
    loadAudit();
  }));

  loadAssistants();
  loadTrunks();
  loadBlocks();
  loadAudit();
})();
