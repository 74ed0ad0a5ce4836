// The contact page: follow-up flag, resolve by hand, notes, call back.
"use strict";
(() => {
  const section = document.querySelector(".contact");
  if (!section) return;
  const number = section.dataset.number;
  const base = `/api/contacts/${encodeURIComponent(number)}`;
  const showState = (c) => {
    const state = document.getElementById("conversation-state");
    state.dataset.resolved = c.resolved ? "yes" : "no";
    state.textContent = c.resolved ? "resolved" : "open";
    document.getElementById("follow-up").checked = c.follow_up;
  };
  const act = async (fn) => {
    try { await fn(); } catch (e) { sb.say("contact-status", e.message); }
  };
  document.getElementById("follow-up").addEventListener("change", (ev) => act(async () => {
    showState(await sb.send("POST", `${base}/follow-up`, { follow_up: ev.target.checked }));
  }));
  document.getElementById("resolve").addEventListener("click", () => act(async () => {
    showState(await sb.send("POST", `${base}/resolve`, {}));
    sb.say("contact-status", "Marked resolved.");
  }));
  document.getElementById("call-back").addEventListener("click", () => act(async () => {
    await sb.send("POST", `${base}/call-back`, {});
    sb.say("contact-status", "Your phone rings; the caller is dialled when you answer.");
  }));
  document.getElementById("contact-note").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = ev.target;
    act(async () => {
      await sb.send("POST", `${base}/notes`, { text: form.text.value });
      window.location.reload();
    });
  });
})();
