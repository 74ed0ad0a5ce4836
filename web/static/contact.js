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
    // A browser phone lives in the Desk tab: that tab must pick up the call-back (it
    // refuses calls nobody asked for), or the server moves its idle open line into the
    // call-back (no call rings). A desk phone just rings.
    const phone = await window.Softphone.readyForOwnCall(true);
    if (phone.problem) {
      sb.say("contact-status", phone.problem);
      return;
    }
    try {
      await sb.send("POST", `${base}/call-back`, {});
    } catch (error) {
      if (phone.browser) window.Softphone.disarmPhoneTab();
      throw error;
    }
    sb.say("contact-status", phone.browser
      ? "The call starts in your Desk tab; the caller is dialled when it connects."
      : "Your phone rings; the caller is dialled when you answer.");
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
