// The agent's open line, for the Desk's softphone (softphone.js, loaded before this).
//
// On duty, the tab asks the server for its line (POST /api/line, through the desk's
// requestLine hook): the PBX calls this phone once, _onSession answers it by itself, and
// the call stays up for the shift, parked between callers. An Accept then moves it into
// the caller's bridge with no new INVITE here. A line lost (a reload, a network blip,
// the PBX's media timeout) is asked for again by itself, with a growing pause that only
// a line carrying audio resets: a network that passes SIP and drops the media answers
// every line and loses each one, and the pause must grow through that too. The server
// keeps its own count of such lines and says when to ask again (503 line_backoff).
"use strict";

(function () {
  const Softphone = window.Softphone;
  if (!Softphone) return;
  const { EXPECT_WINDOW_MS, MIC_CONSTRAINTS, stopStream } = Softphone.shared;
  // A lost line is asked for again after this long, doubling up to the maximum: a PBX
  // that refuses for a while is not hammered, a blip is over in a second.
  const LINE_RETRY_MS = 1000;
  const LINE_RETRY_MAX_MS = 15000;

  Object.defineProperties(Softphone.prototype, {
    // The line is idle and up: an Accept needs nothing more from this tab.
    lineReady: {
      get() {
        return this.lineMode && this.lineState === "open" && !this.lineOnCall;
      },
    },
    lineWanted: {
      get() {
        return this.lineMode && this.onDuty;
      },
    },
  });

  Object.assign(Softphone.prototype, {
    // The desk says whether it wants a line (on duty) ...
    wantLine(onDuty) {
      if (onDuty === this.onDuty) return;
      this.onDuty = onDuty;
      if (this.lineWanted) {
        this._lineNeeded();
      } else {
        clearTimeout(this._lineTimer);
        this.expectingLine = null;
        // The server hangs the line up when the agent goes off duty; off duty some other
        // way (an admin disabled them), an idle line is hung up here.
        if (this.session && this.session.isLine && !this.lineOnCall) this.session.terminate();
        if (!this.session) this._setLine("off");
      }
    },

    // ... and whether the server has put the line into a call (or taken it back).
    setLineOnCall(onCall) {
      if (!this.session || !this.session.isLine) return;
      this.lineOnCall = onCall;
      // A caller must hear the agent: whatever the last call left muted is undone.
      if (onCall) this.setMuted(false);
      this._setLine("open");
    },

    async _lineNeeded() {
      // Not while a call is expected here (a call-back rings this phone).
      const expected = this.expecting && Date.now() <= this.expecting.until;
      if (!this.lineWanted || this.session || this.expectingLine || expected) return;
      if (this.state !== "registered") return; // asked again once it registers
      clearTimeout(this._lineTimer);
      this._setLine(this.lineState === "down" ? "down" : "opening");
      const mic = navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
      mic.catch(() => undefined);
      this.expectingLine = { until: Date.now() + EXPECT_WINDOW_MS, mic };
      const reply = await this.hooks.requestLine();
      if (reply.ok) {
        // The PBX's call follows and _onSession answers it; one that never comes (the
        // PBX could not reach this tab) is asked for again.
        this._lineTimer = setTimeout(() => {
          if (!this.expectingLine) return;
          this.expectingLine = null;
          this._setLine("down");
          this._lineLater();
        }, EXPECT_WINDOW_MS);
        return;
      }
      this.expectingLine = null;
      mic.then((stream) => stopStream(stream), () => undefined);
      if (reply.status === 409 && reply.body.error === "line_refused") {
        // Turned off on the server (or the phone cannot be called): Accept rings.
        this.lineMode = false;
        this._setLine("off");
        return;
      }
      this._setLine("down");
      if (reply.status === 503 && reply.body.error === "line_backoff") {
        // The server's turn for this agent's next line: asked for no sooner.
        this._lineLater(1000 * Number(reply.body.retry_after_s || 1));
        return;
      }
      this._lineLater();
    },

    // The desk is served by another server than the one that opened this line: its node
    // died and the edge moved the desk to a node that is up (or the server restarted).
    // An idle line may then hang from a PBX that is gone, and nothing tells this tab: the
    // cluster's SIP edge hangs such lines up on its side, but its BYE cannot reach a
    // browser (its contact is an address on a WebSocket the edge cannot resolve). So an
    // idle line is hung up here and asked for again, from the server serving the desk
    // now (which replaces a line it still has). A line on a call is the caller's.
    renewIdleLine() {
      if (this.session && this.session.isLine && !this.lineOnCall) this.session.terminate();
    },

    // The line carries audio (softphone.js's _lineUp): the next loss is a blip again.
    _lineOpened() {
      this._lineRetryMs = LINE_RETRY_MS;
    },

    _lineLater(afterMs) {
      if (!this.lineWanted) return;
      clearTimeout(this._lineTimer);
      const pause = afterMs || this._lineRetryMs || LINE_RETRY_MS;
      this._lineTimer = setTimeout(() => this._lineNeeded(), pause);
      if (!afterMs) {
        this._lineRetryMs = Math.min((this._lineRetryMs || LINE_RETRY_MS) * 2, LINE_RETRY_MAX_MS);
      }
      // The desk says when: an agent who sees "next try in 30 s" knows it is the network.
      this._setLine(this.lineState, Math.ceil(pause / 1000));
    },

    // retryS: the line is down and asked for again in that many seconds.
    _setLine(lineState, retryS = 0) {
      this.lineState = lineState;
      if (this.hooks.onLine) this.hooks.onLine(lineState, retryS);
    },
  });
})();
