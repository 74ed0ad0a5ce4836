// The agent desk: duty and presence in the top bar, handoff cards from the live socket.
// Loaded on every signed-in page (the top bar is everywhere), so it owns the page's one
// dashboard socket; other page scripts listen for its "switchboard:message" events.
// Everything the server sends is put on the page as text nodes, never as markup: a
// caller's name or an AI summary is data an outsider controls.
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";
  const dutyBox = document.getElementById("duty");
  const presenceSelect = document.getElementById("presence");
  const liveBadge = document.getElementById("live");
  const notice = document.getElementById("notice");
  const cardList = document.getElementById("cards");
  const noCards = document.getElementById("no-cards");
  const busyNote = document.getElementById("busy-note");
  const myState = document.getElementById("my-state");
  const words = window.sbWords;

  const state = {
    seq: null, epoch: null, cards: new Map(), me: null, clockOffsetMs: 0,
    // Handoffs whose Accept this tab has asked for and not yet heard back about.
    accepting: new Set(),
  };

  // Two kinds of notice. A problem (duty refused, an action that failed) stays until the
  // agent acts. News (a colleague took a call, the call ended) is true for a moment only:
  // it gives way to the next card, the next call, or a few seconds, so it is never read
  // as being about the caller now on screen.
  const NEWS_MS = 6000;
  let newsTimer = null;

  function say(text) {
    clearTimeout(newsTimer);
    notice.dataset.kind = text ? "problem" : "";
    notice.textContent = text || "";
  }

  function tell(news) {
    say(news);
    notice.dataset.kind = "news";
    newsTimer = setTimeout(clearNews, NEWS_MS);
  }

  function clearNews() {
    if (notice.dataset.kind === "news") say("");
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let payload = {};
    try {
      payload = await response.json();
    } catch (_error) {
      payload = {};
    }
    if (response.status === 401) {
      window.location.assign("/login");
    }
    return { ok: response.ok, status: response.status, body: payload };
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.appendChild(document.createTextNode(String(text)));
    return node;
  }

  // ---- duty and presence --------------------------------------------------------------

  // On duty but away (set by hand, or by the server when the phone stayed unregistered):
  // no card reaches this desk, which an agent back at it may not guess.
  const awayNote = "You are away: no calls reach you. Choose “available” to take calls.";

  function showMe(me) {
    if (!me) return;
    state.me = me;
    // Someone who takes no calls has no duty switch or presence menu (base.html).
    // While a duty change is on its way (the box disabled), the box keeps the agent's
    // click: a state pushed meanwhile (a colleague's card, a presence change) still
    // reads the old duty, and the answer to the change sets the box right.
    if (dutyBox && !dutyBox.disabled) dutyBox.checked = me.on_duty;
    if (presenceSelect) presenceSelect.value = menuValue(me);
    document.body.dataset.onDuty = me.on_duty ? "yes" : "no";
    const wasState = document.body.dataset.agentState;
    document.body.dataset.agentState = me.state;
    if (me.state !== wasState) offerDisposition();
    if (me.on_duty && me.presence === "away") say(awayNote);
    else if (notice.textContent === awayNote) say("");
    showState();
    if (phone) {
      phone.wantLine(me.on_duty);
      lineOnCall(me.busy);
    }
    if (cardList) renderCards();
  }

  // The answer to the agent's own duty or presence change comes over HTTP, the states
  // pushed meanwhile over the socket: a push can overtake the answer (the server setting
  // wrap-up just after the agent went on duty), and the answer must not put back the
  // older state. It is shown unless the state shown is of a later presence change.
  function showAnswer(me) {
    const shown = state.me;
    if (me && shown && me.id === shown.id && me.presence_since && shown.presence_since
        && Date.parse(me.presence_since) < Date.parse(shown.presence_since)) {
      showMe(shown); // the duty box, enabled again, follows what is shown
      return;
    }
    showMe(me);
  }

  // ---- disposition at wrap-up -----------------------------------------------------------

  // After a call, in wrap-up, the agent says how it ended; a queue that requires it
  // keeps them from "available" until they do (the server refuses and says why).
  const dispositionForm = document.getElementById("disposition-form");
  let pendingCall = null;

  async function offerDisposition() {
    if (!dispositionForm) return;
    let data = null;
    try {
      const response = await fetch("/api/dispositions", { credentials: "same-origin" });
      if (response.ok) data = await response.json();
    } catch (_error) {
      data = null;
    }
    const me = state.me;
    pendingCall = data && data.pending && data.dispositions.length && me && me.state === "wrap_up"
      ? data.pending.call_id : null;
    dispositionForm.hidden = !pendingCall;
    if (!pendingCall) return;
    document.getElementById("disposition-caller").textContent = data.pending.caller;
    document.getElementById("disposition-choice").replaceChildren(...data.dispositions.map(
      (d) => new Option(d.name, String(d.id))));
  }

  if (dispositionForm) dispositionForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!pendingCall) return;
    const chosen = Number(document.getElementById("disposition-choice").value);
    const result = await post(`/api/calls/${encodeURIComponent(pendingCall)}/disposition`,
      { disposition_id: chosen });
    if (!result.ok) {
      say(result.body.reason || "Could not save the disposition.");
      return;
    }
    dispositionForm.hidden = true;
    pendingCall = null;
    tell("Disposition saved.");
  });

  // The menu's entry for the agent's presence: away with the reason they chose when this
  // page offers it (a reason removed since, or a page without reasons, shows plain away).
  function menuValue(me) {
    if (me.presence !== "away" || !me.pause_reason || !presenceSelect) return me.presence;
    const option = Array.from(presenceSelect.options).find((o) => o.dataset.reason === me.pause_reason);
    return option ? option.value : me.presence;
  }

  // Seconds left of a wrap-up the controller timed after the agent's call; null for one
  // the agent chose (it lasts until they choose again).
  function wrapUpLeft() {
    const me = state.me;
    if (!me || me.state !== "wrap_up" || !me.wrap_up_until) return null;
    return Math.max(0, (Date.parse(me.wrap_up_until) - Date.now() - state.clockOffsetMs) / 1000);
  }

  // Beside the presence menu, what the menu cannot say: on a call (the presence stays
  // what the agent comes back to), or how long the wrap-up still runs.
  function showState() {
    if (!myState || !state.me) return;
    const left = wrapUpLeft();
    let text = "";
    if (state.me.state === "on_call") text = words.say("agent_states", "on_call");
    else if (left !== null) text = `${words.say("agent_states", "wrap_up")}: ${words.clock(left)} left`;
    else if (state.me.state === "away" && state.me.pause_reason) text = pauseText(state.me);
    myState.textContent = text;
    myState.hidden = !text;
    myState.dataset.state = state.me.state;
  }

  // How long the agent has been away for their reason, as the Admin page's table says it.
  function pauseText(me) {
    const since = me.presence_since ? Date.parse(me.presence_since) : NaN;
    const took = Number.isNaN(since) ? ""
      : ` · ${words.clock((Date.now() + state.clockOffsetMs - since) / 1000)}`;
    return `${words.say("agent_states", "away")}: ${me.pause_reason}${took}`;
  }

  // An agent on a call, with one being put through, or in wrap-up is not offered cards
  // (the server refuses their Accept too): a second call would ring their phone's
  // second line while they talk to the first caller.
  function whyNoCards() {
    const me = state.me;
    if (!me) return "";
    if (me.busy) return "You are on a call: callers waiting for a person show here when it is over.";
    if (phone && phone.lineWanted && phone.lineState !== "open") {
      // A card taken now would have no line to move into the call.
      return "Your line is opening: callers waiting for a person show here once it is up.";
    }
    if (me.on_duty && me.presence === "wrap_up") {
      const left = wrapUpLeft();
      const ends = left === null ? "when you choose “available”"
        : `in ${words.clock(left)}, or when you choose “available”`;
      return `Wrap-up: callers waiting for a person show here ${ends}.`;
    }
    return "";
  }

  if (dutyBox) dutyBox.addEventListener("change", async () => {
    const wanted = dutyBox.checked;
    dutyBox.disabled = true;
    if (wanted && phone) {
      // A card accepted on a desk whose phone cannot ring is a caller left waiting:
      // check the microphone and the registration first, and say what is wrong.
      const problem = await phone.readyForDuty();
      if (problem) {
        dutyBox.disabled = false;
        dutyBox.checked = false;
        say(problem);
        return;
      }
    }
    const result = await post("/api/duty", { on_duty: wanted });
    dutyBox.disabled = false;
    if (result.ok) {
      showAnswer(result.body.me);
      say("");
    } else {
      dutyBox.checked = !wanted;
      say(result.body.reason || "Could not change duty.");
    }
  });

  // "offline" in the menu is going off duty; off duty, the other choices are refused
  // (going on duty is where the phone is checked) and the menu goes back to offline.
  if (presenceSelect) presenceSelect.addEventListener("change", async () => {
    const option = presenceSelect.selectedOptions[0];
    const reason = option && option.dataset.reasonId;
    const result = await post("/api/presence", reason
      ? { presence: "away", pause_reason_id: Number(reason) }
      : { presence: presenceSelect.value });
    if (result.ok) {
      showAnswer(result.body.me);
    } else {
      if (state.me) presenceSelect.value = menuValue(state.me);
      say(result.body.reason || "Could not change presence.");
    }
  });

  // ---- the softphone ------------------------------------------------------------------

  const phoneStatus = document.getElementById("phone-status");
  const phoneTake = document.getElementById("phone-take");

  // While this tab holds the phone, leaving it would take the phone away (no more
  // calls, or the one going on dropped): the other pages open in a new tab instead.
  function keepThisTab(holdsPhone) {
    for (const link of document.querySelectorAll('header.topbar nav a:not([href="/"])')) {
      if (holdsPhone) {
        link.target = "_blank";
        link.rel = "noopener";
        link.title = "Opens in a new tab: your phone stays in this one";
      } else {
        link.removeAttribute("target");
        link.removeAttribute("title");
      }
    }
  }

  function showPhone(phoneState, reason) {
    if (!phoneStatus) return;
    keepThisTab(phoneState === "registered");
    phoneStatus.dataset.state = phoneState;
    phoneStatus.textContent = words.has("phone_states", phoneState)
      ? words.say("phone_states", phoneState) : `Phone: ${reason || phoneState}`;
    phoneTake.hidden = phoneState !== "elsewhere";
    document.body.dataset.phone = phoneState;
  }

  // The open line's state, next to the phone's: the agent sees that calls can reach them.
  const lineStatus = document.getElementById("line-status");

  // retryS: down, and asked for again in that many seconds (longer after each line that
  // carried no audio: the network between this desk and the PBX drops the media).
  function showLine(lineState, retryS = 0) {
    if (lineStatus) {
      lineStatus.hidden = lineState === "off";
      lineStatus.dataset.state = lineState === "open" ? "registered" : lineState === "down" ? "error" : lineState;
      lineStatus.dataset.line = lineState;
      const waiting = lineState === "down" && retryS > 0;
      lineStatus.dataset.retryS = waiting ? String(retryS) : "";
      lineStatus.textContent = waiting
        ? words.say("line_states", "down_retry").replace("{s}", String(retryS))
        : words.has("line_states", lineState) ? words.say("line_states", lineState) : "";
    }
    document.body.dataset.line = lineState;
    if (cardList) renderCards();
  }

  // With an open line no call rings this tab: the server moving the line into a caller's
  // bridge (or back) shows as the agent becoming busy (or free).
  function lineOnCall(busy) {
    if (!phone || !phone.session || !phone.session.isLine || busy === phone.lineOnCall) return;
    phone.setLineOnCall(busy);
    if (busy) callPanel.open(phone.session);
    else callPanel.close("Bye");
  }

  const phone = window.Softphone && phoneStatus
    ? new window.Softphone({
      onState: showPhone,
      onCall: (session) => callPanel.open(session),
      onCallEnded: (cause) => callPanel.close(cause),
      onLine: showLine,
      requestLine: () => post("/api/line", {}).catch(() => ({ ok: false, status: 0, body: {} })),
    })
    : null;
  // Tests and the agent's own diagnostics reach the phone here.
  window.switchboardPhone = phone;
  if (phoneTake && phone) phoneTake.addEventListener("click", () => phone.takeHere());

  // ---- the call panel -----------------------------------------------------------------

  const callPanel = (function () {
    const section = document.getElementById("call");
    if (!section) return { open() {}, close() {}, changed() {}, colleaguesChanged() {} };
    const $ = (id) => document.getElementById(id);
    // On the agent's own panel, the agent's lines are theirs.
    const speaker = (code) => (code === "agent" ? "You" : words.say("speakers", code));
    const NO_COLLEAGUE = "No colleague is available to take a transfer.";
    let current = null; // the call as /api/calls/current last said
    let timer = null;
    let poll = null;
    let startedAt = 0;

    function clock() {
      const seconds = Math.max(0, Math.floor((Date.now() + state.clockOffsetMs - startedAt) / 1000));
      const s = String(seconds % 60).padStart(2, "0");
      $("call-timer").textContent = `${Math.floor(seconds / 60)}:${s}`;
    }

    function fill(call) {
      if (current === null) setCallButtons(true);
      current = call;
      section.dataset.callId = call.call_id;
      $("call-caller").textContent = call.caller_name || call.caller_number;
      $("call-number").textContent = call.caller_name ? call.caller_number : "";
      $("call-summary").textContent = call.note ? `${call.summary} · Note: ${call.note}` : call.summary;
      if (call.connected_at) startedAt = Date.parse(call.connected_at);
      const transcript = $("call-transcript");
      $("call-no-transcript").hidden = call.transcript.length > 0;
      transcript.replaceChildren(...call.transcript.map((line) => {
        const item = el("li", "line");
        item.appendChild(el("span", "speaker", speaker(line.speaker)));
        item.appendChild(document.createTextNode(line.text));
        return item;
      }));
      $("call-notes").replaceChildren(...call.notes.map((note) => {
        const item = el("li", "note", note.text);
        if (note.author) item.appendChild(el("span", "author", note.author));
        return item;
      }));
      // A supervisor listening in leaves the call; it goes on without them.
      const supervising = Boolean(call.supervising);
      $("call-role").textContent = supervising ? `Supervising (${call.supervising})` : "On the call with";
      $("call-end").textContent = supervising ? "Leave" : "End call";
      // A call-back is the agent's own call: no AI to return to, nobody to hand it to.
      const notMine = supervising || call.direction === "outbound";
      $("call-return").hidden = notMine;
      $("transfer-title").hidden = notMine;
      $("transfer-form").hidden = notMine;
      $("transfer-status").hidden = notMine;
      const select = $("transfer-to");
      const chosen = select.value;
      select.replaceChildren(...call.colleagues.map((agent) => {
        const option = el("option", "", agent.display_name);
        option.value = String(agent.id);
        return option;
      }));
      if (chosen) select.value = chosen;
      const transferButton = $("transfer-form").querySelector("button");
      transferButton.disabled = call.colleagues.length === 0 || call.transfer !== null;
      if (call.transfer) {
        $("transfer-status").textContent =
          `Transferring to ${call.transfer.to} (${words.say("handoff_states", call.transfer.state)})…`;
      } else if (call.colleagues.length === 0) {
        $("transfer-status").textContent = NO_COLLEAGUE;
      } else if ($("transfer-status").dataset.pending === "yes") {
        $("transfer-status").textContent = "The transfer was not taken; the call is still yours.";
        $("transfer-status").dataset.pending = "no";
      } else if ($("transfer-status").textContent === NO_COLLEAGUE) {
        $("transfer-status").textContent = ""; // a colleague came on duty meanwhile
      }
    }

    let retry = null;

    async function refresh() {
      clearTimeout(retry);
      let body = null;
      try {
        const response = await fetch("/api/calls/current", { credentials: "same-origin" });
        if (response.ok) body = await response.json();
      } catch (_error) {
        body = null;
      }
      if (body && body.call) {
        fill(body.call);
      } else if (body && current && current.supervising && phone && phone.session
                 && phone.session.isLine && phone.lineOnCall) {
        // Supervising on the open line: no call ends here when the supervisor leaves,
        // the line just goes back to its holding bridge.
        phone.setLineOnCall(false);
        close("Bye");
      } else if (!section.hidden && !current) {
        // On a call the server did not show us yet (or could not answer): the panel
        // would otherwise stay blank until the slow poll; ask again shortly.
        retry = setTimeout(refresh, 1000);
      }
    }

    function open(_session) {
      startedAt = Date.now() - state.clockOffsetMs;
      section.hidden = false;
      document.body.dataset.inCall = "yes";
      $("call-mute").setAttribute("aria-pressed", "false");
      $("call-mute").textContent = "Mute";
      $("transfer-status").textContent = "";
      $("call-role").textContent = "On the call with";
      $("call-end").textContent = "End call";
      for (const button of section.querySelectorAll("button")) button.disabled = false;
      // End and Return act on the call the server names: until /api/calls/current has
      // said which (a moment after the phone connects), a click would do nothing.
      setCallButtons(current !== null);
      clock();
      timer = setInterval(clock, 1000);
      // The panel follows the call: the transcript grows while the AI part is read,
      // notes come from colleagues, a transfer changes state.
      refresh();
      // Changes are pushed (call_changed); this slow poll only covers what a push
      // cannot say (a controller restarted meanwhile).
      poll = setInterval(refresh, 10000);
      for (const node of cardList.querySelectorAll(".status")) node.textContent = "";
      clearNews(); // what happened before this call is not about this caller
    }

    function changed(callId) {
      // A panel not filled yet takes any change on its agent's calls as its cue.
      if (current ? current.call_id === callId : !section.hidden) refresh();
    }

    function colleaguesChanged() {
      if (!section.hidden) refresh(); // whom the call can be transferred to
    }

    function close(cause) {
      clearInterval(timer);
      clearInterval(poll);
      clearTimeout(retry);
      section.hidden = true;
      delete section.dataset.callId;
      document.body.dataset.inCall = "no";
      current = null;
      tell(cause && cause !== "Terminated" && cause !== "Bye" ? `The call ended (${cause}).` : "The call ended.");
    }

    function setCallButtons(enabled) {
      $("call-end").disabled = !enabled;
      $("call-return").disabled = !enabled;
    }

    async function act(path, body, button) {
      if (!current) return null;
      button.disabled = true;
      const result = await post(`/api/calls/${encodeURIComponent(current.call_id)}/${path}`, body);
      button.disabled = false;
      if (!result.ok) say(result.body.reason || "That did not work.");
      return result;
    }

    $("call-mute").addEventListener("click", () => {
      const muted = !phone.muted;
      phone.setMuted(muted);
      $("call-mute").setAttribute("aria-pressed", muted ? "true" : "false");
      $("call-mute").textContent = muted ? "Unmute" : "Mute";
    });
    $("call-end").addEventListener("click", async () => {
      if (current && current.supervising) {
        const button = $("call-end");
        button.disabled = true;
        const left = await post(`/api/supervisor/calls/${encodeURIComponent(current.call_id)}/stop`, {});
        button.disabled = false;
        if (!left.ok) say(left.body.reason || "That did not work.");
        return;
      }
      act("end", {}, $("call-end"));
    });
    $("call-return").addEventListener("click", () => act("return-to-ai", {}, $("call-return")));
    $("note-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = $("note-text").value.trim();
      if (!text) return;
      const result = await act("notes", { text }, $("note-form").querySelector("button"));
      if (result && result.ok) {
        $("note-text").value = "";
        refresh();
      }
    });
    $("transfer-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const to = Number($("transfer-to").value);
      if (!to) return;
      const result = await act("transfer", { to_agent_id: to, note: $("transfer-note").value },
        $("transfer-form").querySelector("button"));
      if (result && result.ok) {
        $("transfer-note").value = "";
        $("transfer-status").dataset.pending = "yes";
        refresh();
      }
    });

    return { open, close, changed, colleaguesChanged };
  })();

  // ---- cards --------------------------------------------------------------------------

  function waitingText(since) {
    const seconds = Math.max(0, Math.floor((Date.now() + state.clockOffsetMs - since) / 1000));
    const minutes = Math.floor(seconds / 60);
    return minutes > 0 ? `waiting ${minutes} min ${seconds % 60} s` : `waiting ${seconds} s`;
  }

  function cardElement(card) {
    const item = el("li", "card");
    item.dataset.handoffId = String(card.handoff_id);
    item.dataset.urgent = card.urgency !== "normal" ? "yes" : "no";
    item.dataset.urgency = card.urgency;
    const head = el("div", "head");
    // "Emergency", "Urgent": a normal card says nothing about its urgency.
    if (card.urgency !== "normal") head.appendChild(el("span", "badge", words.say("urgencies", card.urgency)));
    head.appendChild(el("span", "caller", card.caller_name || card.caller_number));
    if (card.caller_name) head.appendChild(el("span", "number", card.caller_number));
    const waiting = el("span", "waiting", "");
    waiting.dataset.since = String(Date.parse(card.waiting_since));
    waiting.textContent = waitingText(Number(waiting.dataset.since));
    head.appendChild(waiting);
    item.appendChild(head);
    item.appendChild(el("div", "reason", card.why));
    if (card.summary) item.appendChild(el("p", "summary", card.summary));
    if (card.targeted && card.note) item.appendChild(el("p", "note", `Note: ${card.note}`));
    const accept = el("button", "accept", "Accept");
    accept.type = "button";
    const status = el("p", "status", "");
    accept.addEventListener("click", () => acceptCard(card.handoff_id, accept, status));
    item.appendChild(accept);
    item.appendChild(status);
    return item;
  }

  async function acceptCard(handoffId, button, status) {
    button.disabled = true;
    status.textContent = "Accepting…";
    // Armed before the request: the controller rings this phone before it replies.
    if (phone) phone.expect();
    state.accepting.add(handoffId);
    const asked = ask({ type: "accept", handoff_id: handoffId },
      `/api/handoffs/${handoffId}/accept`);
    if (phone) phone.mark("accept_sent"); // on the socket (or the POST under way)
    const result = await asked;
    state.accepting.delete(handoffId);
    if (phone) phone.mark("accept_replied");
    if (result.ok) {
      status.textContent = "Connecting you to the caller…";
      return;
    }
    // No answer (the socket dropped): the Accept may have won, so the phone still takes
    // the call if it comes within its window.
    if (phone && result.status !== 0) phone.unexpect();
    status.textContent = result.body.reason || "Could not accept this call.";
    button.disabled = result.status === 409 && result.body.error === "already_taken";
    if (button.disabled) lose(handoffId);
  }

  // A card this tab was accepting when a colleague won it stays a moment, saying who took
  // it, so the agent sees why their click came to nothing; then it goes. (The winner's
  // card_removed usually overtakes the refusal of this tab's Accept.)
  const LOST_MS = 5000;
  const lostCards = new Set(); // handoff ids (as in data-handoff-id) still shown as lost

  function lose(handoffId, line) {
    const id = String(handoffId);
    state.cards.delete(handoffId); // taken: no longer on offer, whatever comes next
    const node = cardList && cardList.querySelector(`li.card[data-handoff-id="${id}"]`);
    if (!node) return;
    node.dataset.lost = "yes";
    node.querySelector("button.accept").disabled = true;
    if (line) node.querySelector(".status").textContent = line;
    if (lostCards.has(id)) return;
    lostCards.add(id);
    setTimeout(() => {
      lostCards.delete(id);
      node.remove();
      renderCards();
    }, LOST_MS);
  }

  function byUrgency(a, b) {
    return (b.priority - a.priority)
      || (Date.parse(a.waiting_since) - Date.parse(b.waiting_since))
      || (a.handoff_id - b.handoff_id);
  }

  function renderCards() {
    const busy = whyNoCards();
    busyNote.textContent = busy;
    busyNote.hidden = !busy;
    cardList.hidden = Boolean(busy);
    const ordered = Array.from(state.cards.values()).sort(byUrgency);
    const existing = new Map();
    for (const node of Array.from(cardList.children)) existing.set(node.dataset.handoffId, node);
    // Keep the nodes of cards still on offer, so an agent's half-finished click and its
    // status line survive other cards arriving.
    const keep = new Set(ordered.map((card) => String(card.handoff_id)));
    for (const [id, node] of existing) if (!keep.has(id) && !lostCards.has(id)) node.remove();
    for (const card of ordered) {
      const node = existing.get(String(card.handoff_id)) || cardElement(card);
      cardList.appendChild(node);
    }
    noCards.hidden = ordered.length + lostCards.size > 0 || Boolean(busy);
    showEmergencies(ordered.filter((card) => card.urgency === "emergency"));
  }

  // An emergency card is announced above everything else (and to screen readers), and
  // the tab's title says so when the agent is looking at another window.
  const emergencyBanner = document.getElementById("emergency");
  const plainTitle = document.title;

  function showEmergencies(cards) {
    if (!emergencyBanner) return;
    const names = cards.map((card) => card.caller_name || card.caller_number);
    const text = names.length === 0 ? ""
      : `Emergency: ${names.join(", ")} ${names.length === 1 ? "is" : "are"} waiting for a person.`;
    if (emergencyBanner.textContent !== text) emergencyBanner.textContent = text;
    emergencyBanner.hidden = names.length === 0;
    document.title = names.length === 0 ? plainTitle : `(!) Emergency · ${plainTitle}`;
  }

  setInterval(() => {
    showState();
    if (!cardList) return;
    for (const node of cardList.querySelectorAll(".waiting")) {
      node.textContent = waitingText(Number(node.dataset.since));
    }
    if (wrapUpLeft() !== null) renderCards(); // the busy note counts down too
  }, 1000);

  // ---- the live socket ----------------------------------------------------------------

  const ops = {
    card_added(message) {
      state.cards.set(message.card.handoff_id, message.card);
      clearNews(); // a new caller is waiting: older news is not about them
    },
    card_removed(message) {
      state.cards.delete(message.handoff_id);
      if (!message.taken_by || !state.me || message.taken_by.id === state.me.id) return;
      const who = message.taken_by.display_name;
      if (state.accepting.has(message.handoff_id)) {
        lose(message.handoff_id, `${who} already took this call`); // as the refusal says it
      } else if (!lostCards.has(String(message.handoff_id))) {
        tell(`${who} took a call.`);
      }
    },
    agent_changed(message) {
      if (state.me && message.agent.id === state.me.id) showMe(message.agent);
    },
    call_changed(message) {
      callPanel.changed(message.call_id);
    },
    colleagues_changed() {
      callPanel.colleaguesChanged();
    },
  };

  function onMessage(message) {
    if (message.type === "snapshot") {
      // Another server than the last (a new epoch): the open line may hang from a PBX
      // that is gone (openline.js).
      const moved = state.epoch !== null && message.epoch !== state.epoch;
      state.seq = message.seq;
      state.epoch = message.epoch;
      if (moved && phone) phone.renewIdleLine();
      state.clockOffsetMs = Date.parse(message.server_time) - Date.now();
      state.cards = new Map(message.cards.map((card) => [card.handoff_id, card]));
      showMe(message.me);
    } else if (message.type === "resumed") {
      state.seq = Math.max(state.seq, 0);
    } else if (message.type === "delta") {
      if (state.seq !== null && message.seq <= state.seq) return;
      state.seq = message.seq;
      const apply = ops[message.op];
      if (apply) apply(message);
    }
    if (cardList) renderCards();
    window.dispatchEvent(new CustomEvent("switchboard:message", { detail: message }));
  }

  // Accept is asked over the open socket: it was signed in at its handshake, so the click
  // reaches the call controller without a cookie, a CSRF token or a session read on the
  // way. While the socket is reconnecting the same request goes as a POST.
  let liveSocket = null;
  const waiting = new Map();
  let nextRef = 1;

  function ask(request, url) {
    if (!liveSocket || liveSocket.readyState !== WebSocket.OPEN) return post(url, {});
    const ref = nextRef++;
    return new Promise((resolve) => {
      waiting.set(ref, resolve);
      liveSocket.send(JSON.stringify({ ...request, ref }));
    });
  }

  function answered(reply) {
    const resolve = waiting.get(reply.ref);
    if (!resolve) return;
    waiting.delete(reply.ref);
    resolve({ ok: reply.status < 300, status: reply.status, body: reply.body || {} });
  }

  function unanswered() {
    for (const resolve of waiting.values()) {
      resolve({
        ok: false, status: 0,
        body: { reason: "The connection dropped before the server answered. If your phone rings, the call is yours." },
      });
    }
    waiting.clear();
  }

  let backoffMs = 500;

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    let url = `${scheme}://${window.location.host}/ws`;
    if (state.seq !== null) {
      url += `?since=${encodeURIComponent(state.seq)}&epoch=${encodeURIComponent(state.epoch)}`;
    }
    const socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      liveSocket = socket;
      backoffMs = 500;
      liveBadge.dataset.state = "live";
      liveBadge.textContent = "live";
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_error) {
        return;
      }
      if (message.type === "reply") {
        answered(message);
        return;
      }
      onMessage(message);
      document.body.dataset.live = "yes";
    });
    socket.addEventListener("close", (event) => {
      if (liveSocket === socket) liveSocket = null;
      unanswered();
      document.body.dataset.live = "no";
      if (event.code === 4401) {
        window.location.assign("/login");
        return;
      }
      liveBadge.dataset.state = "reconnecting";
      liveBadge.textContent = "reconnecting";
      setTimeout(connect, backoffMs);
      backoffMs = Math.min(backoffMs * 2, 10000);
    });
  }

  connect();
  if (phone) phone.start();
})();
