// The agent desk: duty and presence in the top bar, handoff cards from the live socket.
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

  const state = { seq: null, epoch: null, cards: new Map(), me: null, clockOffsetMs: 0 };

  function say(text) {
    notice.textContent = text || "";
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

  function showMe(me) {
    if (!me) return;
    state.me = me;
    dutyBox.checked = me.on_duty;
    presenceSelect.value = me.presence;
    document.body.dataset.onDuty = me.on_duty ? "yes" : "no";
  }

  dutyBox.addEventListener("change", async () => {
    const wanted = dutyBox.checked;
    dutyBox.disabled = true;
    const result = await post("/api/duty", { on_duty: wanted });
    dutyBox.disabled = false;
    if (result.ok) {
      showMe(result.body.me);
      say("");
    } else {
      dutyBox.checked = !wanted;
      say(result.body.reason || "Could not change duty.");
    }
  });

  presenceSelect.addEventListener("change", async () => {
    const result = await post("/api/presence", { presence: presenceSelect.value });
    if (result.ok) showMe(result.body.me);
    else say(result.body.reason || "Could not change presence.");
  });

  // ---- cards --------------------------------------------------------------------------

  function waitingText(since) {
    const seconds = Math.max(0, Math.floor((Date.now() + state.clockOffsetMs - since) / 1000));
    const minutes = Math.floor(seconds / 60);
    return minutes > 0 ? `waiting ${minutes} min ${seconds % 60} s` : `waiting ${seconds} s`;
  }

  function cardElement(card) {
    const item = el("li", "card");
    item.dataset.handoffId = String(card.handoff_id);
    item.dataset.urgent = card.priority >= 5 ? "yes" : "no";
    const head = el("div", "head");
    head.appendChild(el("span", "caller", card.caller_name || card.caller_number));
    if (card.caller_name) head.appendChild(el("span", "number", card.caller_number));
    const waiting = el("span", "waiting", "");
    waiting.dataset.since = String(Date.parse(card.waiting_since));
    waiting.textContent = waitingText(Number(waiting.dataset.since));
    head.appendChild(waiting);
    item.appendChild(head);
    const why = card.topic ? `${card.reason} · ${card.topic}` : card.reason;
    item.appendChild(el("div", "reason", card.priority > 0 ? `${why} · priority ${card.priority}` : why));
    if (card.summary) item.appendChild(el("p", "summary", card.summary));
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
    const result = await post(`/api/handoffs/${handoffId}/accept`, {});
    if (result.ok) {
      status.textContent = "Connecting you to the caller…";
      return;
    }
    status.textContent = result.body.reason || "Could not accept this call.";
    button.disabled = result.status === 409 && result.body.error === "already_taken";
  }

  function byUrgency(a, b) {
    return (b.priority - a.priority)
      || (Date.parse(a.waiting_since) - Date.parse(b.waiting_since))
      || (a.handoff_id - b.handoff_id);
  }

  function renderCards() {
    const ordered = Array.from(state.cards.values()).sort(byUrgency);
    const existing = new Map();
    for (const node of Array.from(cardList.children)) existing.set(node.dataset.handoffId, node);
    // Keep the nodes of cards still on offer, so an agent's half-finished click and its
    // status line survive other cards arriving.
    const keep = new Set(ordered.map((card) => String(card.handoff_id)));
    for (const [id, node] of existing) if (!keep.has(id)) node.remove();
    for (const card of ordered) {
      const node = existing.get(String(card.handoff_id)) || cardElement(card);
      cardList.appendChild(node);
    }
    noCards.hidden = ordered.length > 0;
  }

  setInterval(() => {
    for (const node of cardList.querySelectorAll(".waiting")) {
      node.textContent = waitingText(Number(node.dataset.since));
    }
  }, 1000);

  // ---- the live socket ----------------------------------------------------------------

  const ops = {
    card_added(message) {
      state.cards.set(message.card.handoff_id, message.card);
    },
    card_removed(message) {
      state.cards.delete(message.handoff_id);
      if (message.taken_by && state.me && message.taken_by.id !== state.me.id) {
        say(`${message.taken_by.display_name} took a call.`);
      }
    },
    agent_changed(message) {
      if (state.me && message.agent.id === state.me.id) showMe(message.agent);
    },
  };

  function onMessage(message) {
    if (message.type === "snapshot") {
      state.seq = message.seq;
      state.epoch = message.epoch;
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
      onMessage(message);
      document.body.dataset.live = "yes";
    });
    socket.addEventListener("close", (event) => {
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
})();
