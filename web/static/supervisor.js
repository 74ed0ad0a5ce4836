// The supervisor board: the queues' wallboard, the callers waiting for a person, and
// every live call, with its transcript as it is said and listen / whisper / barge /
// take over (the server dials the supervisor's phone). Lists are re-read when the
// page's dashboard socket (desk.js) says a card, a call or an agent changed, or has just
// (re)connected; a slow poll covers the rest. Transcript lines come on the socket as
// they are said (transcript_line) and are added to the calls whose transcript is open.
"use strict";
(() => {
  const body = document.querySelector("#live-calls tbody");
  if (!body) return;
  const waitingBody = document.querySelector("#waiting tbody");
  const wallboard = document.getElementById("wallboard");
  const MODES = [["listen", "Listen"], ["whisper", "Whisper"], ["barge", "Barge"],
                 ["take_over", "Take over"]];
  const COLUMNS = 7;
  const busy = new Set();
  const words = window.sbWords;
  // Open transcripts by call id; kept across re-reads of the list, so a supervisor
  // reading one does not lose it when another call starts or ends.
  const open = new Map();

  // A clock that counts up from a moment (a call's answer, a caller's first request);
  // tick() keeps every one of them current between two reads.
  function clock(since) {
    const span = Object.assign(document.createElement("span"), { className: "clock" });
    span.dataset.since = since;
    span.textContent = words.clock((Date.now() - Date.parse(since)) / 1000);
    return span;
  }
  function tick() {
    const now = Date.now();
    for (const span of document.querySelectorAll(".board [data-since]")) {
      span.textContent = words.clock((now - Date.parse(span.dataset.since)) / 1000);
    }
  }

  function cell(content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content;
    return td;
  }

  // Why a button is greyed out, said on hover (title) and to screen readers
  // (aria-describedby): a button that does nothing without saying why looks broken.
  function whyNot(call, mode) {
    if (busy.has(call.id)) return "Your last request on this call is still under way.";
    // A call-back is the agent's own call: not supervised through the call bridge.
    if (call.direction === "outbound") return "A call-back is the agent's own call: it cannot be supervised.";
    if (mode === "whisper" && !call.agent) return "Whisper speaks to the agent only, and this call is with the AI.";
    return "";
  }

  function row(call) {
    const tr = document.createElement("tr");
    tr.dataset.call = call.id;
    if (call.supervising) tr.dataset.supervising = call.supervising;
    const about = [call.assistant, call.topic_name].filter(Boolean).join(" · ");
    for (const content of [
      call.caller_name ? `${call.caller_name} (${call.caller_number})` : call.caller_number,
      (call.agent ? call.agent.display_name : `AI${call.assistant ? ` (${call.assistant})` : ""}`)
        + (call.direction === "outbound" ? " · call-back" : ""),
      words.say("call_states", call.state)
        + (call.supervising ? ` · you: ${words.say("modes", call.supervising)}` : ""),
      call.answered_when,
      clock(call.answered_at),
      about,
    ]) tr.appendChild(cell(content));
    tr.children[2].dataset.state = call.state;
    const actions = document.createElement("td");
    const reading = Object.assign(document.createElement("button"),
      { type: "button", textContent: "Transcript", className: "transcript-toggle" });
    reading.setAttribute("aria-expanded", String(open.has(call.id)));
    reading.addEventListener("click", () => toggle(call.id));
    actions.appendChild(reading);
    for (const [mode, label] of MODES) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.dataset.mode = mode;
      const why = whyNot(call, mode);
      button.disabled = Boolean(why);
      if (why) {
        const said = Object.assign(document.createElement("span"),
          { id: `why-${call.id}-${mode}`, className: "why", textContent: why, hidden: true });
        button.title = why;
        button.setAttribute("aria-describedby", said.id);
        actions.appendChild(said);
      }
      button.addEventListener("click", () => act(call.id, mode));
      actions.appendChild(button);
    }
    if (call.supervising) {
      const stop = document.createElement("button");
      stop.type = "button";
      stop.textContent = "Stop";
      stop.addEventListener("click", () => act(call.id, "stop"));
      actions.appendChild(stop);
    }
    tr.appendChild(actions);
    return tr;
  }

  // ---- transcripts -------------------------------------------------------------------

  // One line said once: the same line can come both in the read and on the socket (it
  // was said while the transcript was being read).
  const keyOf = (line) => `${Date.parse(line.at)}|${line.speaker}|${line.text}`;

  function addLine(entry, line) {
    const key = keyOf(line);
    if (entry.seen.has(key)) return;
    entry.seen.add(key);
    const li = document.createElement("li");
    li.dataset.speaker = line.speaker;
    li.append(Object.assign(document.createElement("span"),
      { className: "speaker", textContent: words.say("speakers", line.speaker) }),
      document.createTextNode(line.text));
    const list = entry.list;
    // Follow the conversation unless the supervisor scrolled up to read an earlier part.
    const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.appendChild(li);
    if (atEnd) list.scrollTop = list.scrollHeight;
  }

  function transcriptRow(callId, entry) {
    const tr = document.createElement("tr");
    tr.className = "transcript-row";
    tr.dataset.transcriptOf = callId;
    const td = document.createElement("td");
    td.colSpan = COLUMNS;
    td.appendChild(entry.list);
    tr.appendChild(td);
    return tr;
  }

  async function load(callId, entry) {
    try {
      const response = await fetch(`/api/supervisor/calls/${callId}/transcript`,
                                   { credentials: "same-origin" });
      if (!response.ok) return;
      const { lines } = await response.json();
      // Lines said during the read came on the socket and are shown already; the read
      // goes before them, and a line in both is shown once.
      const early = [...entry.pending];
      entry.list.replaceChildren();
      entry.seen.clear();
      for (const line of [...lines, ...early]) addLine(entry, line);
    } catch (e) {
      /* the next snapshot reads it again */
    } finally {
      entry.pending = [];
      entry.loading = false;
      entry.list.setAttribute("aria-busy", "false");
    }
  }

  function toggle(callId) {
    const tr = body.querySelector(`tr[data-call="${callId}"]`);
    if (open.has(callId)) {
      open.delete(callId);
      body.querySelector(`tr[data-transcript-of="${callId}"]`)?.remove();
      tr?.querySelector(".transcript-toggle")?.setAttribute("aria-expanded", "false");
      return;
    }
    const list = Object.assign(document.createElement("ol"), { className: "transcript" });
    list.setAttribute("aria-label", "Transcript");
    list.setAttribute("aria-busy", "true");
    const entry = { list, seen: new Set(), pending: [], loading: true };
    open.set(callId, entry);
    if (tr) {
      tr.after(transcriptRow(callId, entry));
      tr.querySelector(".transcript-toggle")?.setAttribute("aria-expanded", "true");
    }
    load(callId, entry);
  }

  function said(line) {
    const entry = open.get(line.call_id);
    if (!entry) return;
    if (entry.loading) entry.pending.push(line);
    addLine(entry, line);
  }

  // ---- the floor -----------------------------------------------------------------------

  function waitingRow(card) {
    const tr = document.createElement("tr");
    tr.dataset.handoff = card.handoff_id;
    tr.dataset.urgency = card.urgency;
    for (const content of [
      card.caller_name ? `${card.caller_name} (${card.caller_number})` : card.caller_number,
      card.why,
      // A card's badge says nothing for a normal caller; a column of priorities does.
      words.say("urgencies", card.urgency) || "Normal",
      card.queue,
      clock(card.waiting_since),
    ]) tr.appendChild(cell(content));
    return tr;
  }

  function figure(list, label, value, name) {
    const dt = Object.assign(document.createElement("dt"), { textContent: label });
    const dd = document.createElement("dd");
    if (name) dd.dataset.figure = name;
    if (value instanceof Node) dd.appendChild(value);
    else dd.textContent = value;
    list.append(dt, dd);
  }

  function queueBox(queue) {
    const box = Object.assign(document.createElement("article"), { className: "queue" });
    box.dataset.queue = queue.name;
    box.dataset.waiting = queue.waiting ? "yes" : "no";
    box.appendChild(Object.assign(document.createElement("h3"), { textContent: queue.name }));
    const list = Object.assign(document.createElement("dl"), { className: "figures" });
    figure(list, "Waiting", String(queue.waiting), "waiting");
    figure(list, "Longest wait",
      queue.longest_waiting_since ? clock(queue.longest_waiting_since) : "–", "longest");
    for (const state of ["available", "on_call", "wrap_up", "away"]) {
      figure(list, words.say("agent_states", state), String(queue.agents[state] || 0), state);
    }
    figure(list, `Answered in ${queue.service_level_s} s today`,
      queue.service_level === null ? "–" : `${Math.round(queue.service_level * 100)} %`,
      "service_level");
    box.appendChild(list);
    return box;
  }

  async function act(callId, mode) {
    busy.add(callId);
    let armed = false;
    try {
      // A new session rings the supervisor's phone; switching modes does not.
      const row = body.querySelector(`tr[data-call="${callId}"]`);
      const ringing = mode !== "stop" && !(row && row.dataset.supervising);
      if (ringing) {
        // A browser phone lives in the Desk tab, which answers only calls it is told of.
        const phone = await window.Softphone.readyForOwnCall(true);
        if (phone.problem) {
          sb.say("board-status", phone.problem);
          return;
        }
        armed = phone.browser;
      }
      sb.say("board-status", mode === "stop" ? "Stopping…"
        : ringing ? (armed ? "Joining from your Desk tab…" : "Your phone is ringing…") : "Switching…");
      await sb.send("POST", `/api/supervisor/calls/${callId}/${mode}`, {});
      sb.say("board-status", "");
    } catch (e) {
      if (armed) window.Softphone.disarmPhoneTab();
      sb.say("board-status", e.message);
    } finally {
      busy.delete(callId);
      refresh();
    }
  }

  async function read(path) {
    const response = await fetch(path, { credentials: "same-origin" });
    return response.ok ? response.json() : null;
  }

  async function refresh() {
    try {
      const [live, floor] = await Promise.all([read("/api/supervisor/calls"),
                                               read("/api/supervisor/floor")]);
      if (live) {
        const rows = [];
        for (const call of live.calls) {
          rows.push(row(call));
          const entry = open.get(call.id);
          if (entry) rows.push(transcriptRow(call.id, entry));
        }
        // A call that ended takes its open transcript with it.
        const ids = new Set(live.calls.map((call) => call.id));
        for (const id of [...open.keys()]) if (!ids.has(id)) open.delete(id);
        body.replaceChildren(...rows);
        document.getElementById("board-empty").hidden = live.calls.length > 0;
      }
      if (floor) {
        waitingBody.replaceChildren(...floor.waiting.map(waitingRow));
        document.getElementById("waiting-empty").hidden = floor.waiting.length > 0;
        wallboard.replaceChildren(...floor.queues.map(queueBox));
        document.getElementById("wallboard-empty").hidden = floor.queues.length > 0;
      }
    } catch (e) {
      /* the next refresh tries again */
    }
  }
  let pending = null;
  function soon() {
    // Several changes of one moment (a card taken, then the agent connected) make one read.
    if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 100);
  }

  // What makes the floor change: a card (a caller starts or stops waiting), a call, an
  // agent's state (the wallboard counts members by state).
  const FLOOR_OPS = new Set(["board_changed", "card_added", "card_removed", "agent_changed"]);
  window.addEventListener("switchboard:message", (event) => {
    const message = event.detail;
    if (message.type === "delta" && message.op === "transcript_line") {
      said(message);
      return;
    }
    // A snapshot or a resume: the socket was (re)connected, and whatever changed while
    // it was down is read now, open transcripts included.
    if (message.type !== "delta") {
      for (const [callId, entry] of open) { entry.loading = true; load(callId, entry); }
      soon();
    } else if (FLOOR_OPS.has(message.op)) soon();
  });

  refresh();
  setInterval(refresh, 10000);
  setInterval(tick, 1000);
})();
