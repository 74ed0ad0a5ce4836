// The supervisor board: every live call, with listen / whisper / barge / take over
// (the server dials the supervisor's phone). The list is re-read when the page's
// dashboard socket (desk.js) says a call started, changed hands or ended, or has just
// (re)connected; a slow poll covers the rest.
"use strict";
(() => {
  const body = document.querySelector("#live-calls tbody");
  if (!body) return;
  const MODES = [["listen", "Listen"], ["whisper", "Whisper"], ["barge", "Barge"],
                 ["take_over", "Take over"]];
  const busy = new Set();
  const words = window.sbWords;

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
    const cells = [
      call.caller_name ? `${call.caller_name} (${call.caller_number})` : call.caller_number,
      (call.agent ? call.agent.display_name : `AI${call.assistant ? ` (${call.assistant})` : ""}`)
        + (call.direction === "outbound" ? " · call-back" : ""),
      words.say("call_states", call.state)
        + (call.supervising ? ` · you: ${words.say("modes", call.supervising)}` : ""),
      call.answered_when,
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.children[2].dataset.state = call.state;
    const actions = document.createElement("td");
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

  async function act(callId, mode) {
    busy.add(callId);
    let armed = false;
    try {
      // A new session rings the supervisor's phone; switching modes does not.
      const row = body.querySelector(`tr[data-call="${callId}"]`);
      const ringing = mode !== "stop" && !(row && row.dataset.supervising);
      if (ringing) {
        // A browser phone lives in the Desk tab, which answers only calls it is told of.
        const phone = await window.Softphone.readyForOwnCall();
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

  async function refresh() {
    try {
      const response = await fetch("/api/supervisor/calls", { credentials: "same-origin" });
      if (!response.ok) return;
      const { calls } = await response.json();
      body.replaceChildren(...calls.map(row));
      document.getElementById("board-empty").hidden = calls.length > 0;
    } catch (e) {
      /* the next refresh tries again */
    }
  }
  let pending = null;
  function soon() {
    // Several changes of one moment (a card taken, then the agent connected) make one read.
    if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 100);
  }

  window.addEventListener("switchboard:message", (event) => {
    const message = event.detail;
    // A snapshot or a resume: the socket was (re)connected, and whatever changed while
    // it was down is read now.
    if (message.type !== "delta" || message.op === "board_changed") soon();
  });

  refresh();
  setInterval(refresh, 10000);
})();
