// The agent's browser softphone: JsSIP registered to Asterisk over SIP-over-WebSocket.
//
// Calls reach it only as the second half of an agent's own click: Accept on a card (the
// controller dials the agent's endpoint the moment the accept wins) or Call back on a
// contact page (which asks this tab to expect the call). The phone answers an INVITE
// only while it expects one and refuses any other with 486 Busy.
// Only one tab of an agent holds the phone (a Web Lock, released by the browser when
// the tab dies); another tab says so and can move the phone to itself.
//
// The open line (when the server gives one): on duty, the tab asks the PBX to call it
// once and answers by itself; that call stays up for the shift, parked between callers,
// and an Accept moves it into the caller's bridge with no new INVITE here. A line lost
// (a reload, a network blip, the PBX's media timeout) is asked for again by itself.
"use strict";

(function () {
  const LOCK_NAME = "switchboard-softphone";
  const CHANNEL_NAME = "switchboard-softphone";
  // An Accept's INVITE follows within a second or two; a phone armed longer than this
  // was armed for a call that never came (the card was taken, the caller hung up).
  const EXPECT_WINDOW_MS = 30000;
  // The microphone as a headset call wants it: the browser's echo canceller, noise
  // suppressor and gain control all on.
  const MIC_CONSTRAINTS = {
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    video: false,
  };
  // On a LAN or loopback there is nothing for STUN/TURN to find, and JsSIP waits for ICE
  // gathering to finish before it answers: with servers listed that wait is seconds.
  const PC_CONFIG = { iceServers: [] };
  // JsSIP sends the 200 OK when ICE gathering completes, and Chromium finishes gathering
  // only ~120 ms after its host candidates are known (it also tries TCP and IPv6 paths
  // Asterisk will not use). The host candidates of all interfaces arrive within a few ms
  // of each other: answer this long after the first one, with what is there.
  const ICE_SETTLE_MS = 10;
  // The BYE of a tab closing mid-call says the phone is going away (RFC 3326 Reason,
  // Q.850 27 "destination out of order"): the PBX tells the controller, which gives the
  // caller back to the AI and offers the call again. A BYE without it (or with 16,
  // normal clearing) is the agent hanging up: the call ends, as with End call.
  const PAGE_CLOSED_REASON = 'Reason: Q.850;cause=27;text="Desk page closed"';

  class Softphone {
    constructor(hooks) {
      // onState(state, text), onCall(session), onCallEnded(cause); for the open line
      // onLine(state, retryS) and requestLine() (the desk's POST /api/line: { ok, status, body }).
      this.hooks = hooks;
      this.state = "starting";
      this.reason = "";
      this.ua = null;
      this.session = null;
      this.config = null;
      this.expecting = null; // { until, mic: Promise<MediaStream> }
      // When each step of the last accepted call happened (ms since the Accept click):
      // where an Accept's time goes, for the agent's diagnostics and the benchmark.
      this.marks = {};
      this._clickedAt = 0;
      this.localStream = null;
      this.remoteAudio = new Audio();
      this.remoteAudio.autoplay = true;
      this.releaseLock = null;
      this._socketUp = false; // the SIP WebSocket, as JsSIP last said
      // The open line: whether this server gives one, whether the desk wants it (on
      // duty), its state ("off", "opening", "open", "down") and whether a caller is on
      // it now (the desk says: the server moved it into a call).
      this.lineMode = false;
      this.onDuty = false;
      this.lineState = "off";
      this.lineOnCall = false;
      this._lineRetryMs = 0;
      this._lineTimer = null;
      // INVITEs that reached this phone: an Accept on an open line brings none.
      this.invites = 0;
      this.channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL_NAME) : null;
      if (this.channel) this.channel.onmessage = (event) => this._onTabMessage(event.data);
      // A tab closed (or reloaded) mid-call hangs up on its way out: the caller is back
      // with the AI at once instead of after the PBX's media timeout (a crashed browser
      // or a dead network still ends that way).
      window.addEventListener("pagehide", () => {
        if (this.session && !this.session.isEnded()) {
          this.session.terminate({ extraHeaders: [PAGE_CLOSED_REASON] });
        }
      });
      // Leaving the Desk (a click on History, a reload) would drop the caller: the
      // browser asks first while a call is up.
      window.addEventListener("beforeunload", (event) => {
        if (this.onCall) event.preventDefault();
      });
    }

    // ---- start-up and the one-tab lock ------------------------------------------------

    async start() {
      let config;
      try {
        config = await this._fetchConfig();
      } catch (error) {
        this._set("error", String(error.message || error));
        setTimeout(() => this.start(), 5000);
        return;
      }
      if (config === null) return; // no softphone here: state already says why
      this.config = config;
      this.lineMode = Boolean(config.open_line);
      if (this.lineMode) this._setLine(this.onDuty ? "down" : "off");
      // The DTLS certificate, made once: otherwise every answer waits for a new key pair.
      this.certificates = await makeCertificates();
      if (!window.JsSIP) {
        this._set("error", "The softphone is not installed on this server (run its set-up).");
        return;
      }
      if (!navigator.locks) {
        await this._register(); // no Web Locks: every tab registers, the last one wins
        return;
      }
      navigator.locks.request(LOCK_NAME, { ifAvailable: true }, (lock) => {
        if (!lock) {
          this._set("elsewhere", "The phone is in another tab.");
          return undefined;
        }
        return this._holdLock();
      });
    }

    _holdLock() {
      // Holding the lock is a promise that stays pending while this tab has the phone.
      return new Promise((release) => {
        this.releaseLock = release;
        this._register();
      });
    }

    // The button on a tab without the phone: ask the holder to let go, then take it.
    takeHere() {
      if (!navigator.locks || this.state !== "elsewhere") return;
      this._set("moving", "Moving the phone to this tab…");
      if (this.channel) this.channel.postMessage({ type: "take" });
      navigator.locks.request(LOCK_NAME, () => this._holdLock());
    }

    _onTabMessage(message) {
      if (message && message.type === "arm") {
        // Another page of this agent starts a call that will ring this phone (a
        // call-back from the contact page): answer it as an Accept's call is answered.
        if (!this.releaseLock || this.state !== "registered") return; // not the phone tab
        if (this.lineReady && message.line) {
          // Supervision or a call-back takes the idle open line itself: no call will
          // ring here.
          this.lineOnCall = true;
          this.hooks.onCall(this.session);
          this.channel.postMessage({ type: "armed", id: message.id });
          return;
        }
        if (this.lineReady) {
          // A call that rings the phone itself: the idle line makes way for it, and is
          // asked for again once that call is over.
          this.session.terminate({ extraHeaders: [PAGE_CLOSED_REASON] });
        }
        if (this.session) {
          this.channel.postMessage({ type: "busy", id: message.id });
          return;
        }
        this.expect();
        this.channel.postMessage({ type: "armed", id: message.id });
        return;
      }
      if (message && message.type === "disarm") {
        if (this.releaseLock && !this.session) this.unexpect();
        if (this.releaseLock && this.session && this.session.isLine && this.lineOnCall) {
          // The supervision that was to take the line did not start.
          this.lineOnCall = false;
          this.hooks.onCallEnded("Canceled");
        }
        if (this.releaseLock) this._lineNeeded();
        return;
      }
      if (!message || message.type !== "take" || !this.releaseLock) return;
      if (this.onCall) {
        // Never drop a caller mid-sentence because another tab was opened.
        this.channel.postMessage({ type: "busy" });
        return;
      }
      // An idle open line goes with the phone: the other tab asks for its own.
      if (this.session) this.session.terminate({ extraHeaders: [PAGE_CLOSED_REASON] });
      this._stopUa();
      const release = this.releaseLock;
      this.releaseLock = null;
      this._set("elsewhere", "The phone moved to another tab.");
      release();
    }

    async _fetchConfig() {
      const response = await fetch("/api/softphone", { credentials: "same-origin" });
      if (response.status === 401) {
        window.location.assign("/login");
        return null;
      }
      const body = await response.json().catch(() => ({}));
      if (response.status === 404 || (response.status === 409 && body.error === "desk_phone")) {
        // Nothing to register: duty does not depend on a browser phone.
        this._set("none", body.reason || "");
        return null;
      }
      if (!response.ok) throw new Error(body.reason || `the phone settings failed (${response.status})`);
      return body;
    }

    // ---- registration -----------------------------------------------------------------

    _register() {
      const config = this.config;
      window.JsSIP.debug.disable("JsSIP:*");
      const socket = new window.JsSIP.WebSocketInterface(config.websocket_url);
      const ua = new window.JsSIP.UA({
        sockets: [socket],
        uri: config.sip_uri,
        authorization_user: config.sip_user,
        password: config.password,
        display_name: config.display_name,
        register: true,
        register_expires: 120,
        session_timers: false,
        connection_recovery_min_interval: 1,
        connection_recovery_max_interval: 10,
      });
      this.ua = ua;
      this._set("registering", "Connecting the phone…");
      ua.on("registered", () => {
        this._set("registered", "Phone ready");
        this._rejoinCall();
        this._lineNeeded();
      });
      ua.on("connected", () => {
        if (this.ua === ua) this._socketUp = true;
      });
      ua.on("unregistered", () => {
        // A dropped socket takes the registration with it (JsSIP says so right after
        // "disconnected"): the phone is reconnecting, and registers once it is back.
        if (this.ua === ua && this._socketUp) {
          this._set("unregistered", "The phone is not registered.");
        }
      });
      ua.on("registrationFailed", (event) => {
        this._set("error", `The phone could not register (${event.cause}).`);
      });
      ua.on("disconnected", () => {
        if (this.ua !== ua) return;
        // A network blip, not a fault to fix: a call in progress keeps its media (which
        // never used this socket) and JsSIP connects and registers again by itself.
        this._lostSignalling = true;
        this._socketUp = false;
        this._set("reconnecting", "The phone lost its connection; reconnecting…");
      });
      ua.on("newRTCSession", (event) => this._onSession(event));
      ua.start();
    }

    _stopUa() {
      const ua = this.ua;
      this.ua = null;
      if (ua) ua.stop();
    }

    // A call outlives a dropped SIP WebSocket (its media never used it), but the PBX
    // would send the call's BYE down the old, closed socket: an in-dialog re-INVITE over
    // the new one tells it where this phone is now. Only the agent's own leg is touched.
    _rejoinCall() {
      const session = this.session;
      if (!session || !session.isEstablished() || !this._lostSignalling) return;
      this._lostSignalling = false;
      session.renegotiate();
    }

    // ---- calls ------------------------------------------------------------------------

    // Called when the agent clicks Accept, before the request goes out: the INVITE can
    // overtake the HTTP answer, because the controller dials before it replies. With
    // the open line up no INVITE comes: the line moves into the call.
    expect() {
      this._clickedAt = performance.now();
      // Wall-clock time of the click, so a measurement outside the page (the caller's
      // side, on the same machine) can start from the agent's click itself.
      this.marks = { clicked_at_epoch_ms: performance.timeOrigin + this._clickedAt };
      if (this.lineReady) return;
      const mic = navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
      mic.catch(() => undefined); // judged when the call arrives
      this.expecting = { until: Date.now() + EXPECT_WINDOW_MS, mic };
    }

    // The Accept failed: no call is coming.
    unexpect() {
      const expecting = this.expecting;
      this.expecting = null;
      if (expecting) expecting.mic.then((stream) => stopStream(stream), () => undefined);
    }

    async _onSession(event) {
      const session = event.session;
      if (event.originator !== "remote") return;
      this.invites += 1;
      const line = this.expectingLine;
      const expecting = line || this.expecting;
      if (this.session || !expecting || Date.now() > expecting.until) {
        // Not the call an Accept asked for: a stray or malicious INVITE never reaches
        // the agent's ears (and a second call never interrupts the first).
        session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
        return;
      }
      if (line) {
        this.expectingLine = null;
        session.isLine = true;
      } else {
        this.expecting = null;
      }
      this.session = session;
      this.mark("invite");
      session.on("peerconnection", (pcEvent) => this._attachRemote(pcEvent.peerconnection));
      let settle = null;
      session.on("icecandidate", (candidateEvent) => {
        this.mark("first_candidate", true);
        if (settle === null) settle = setTimeout(candidateEvent.ready, ICE_SETTLE_MS);
      });
      session.on("accepted", () => this.mark("answer_sent"));
      session.on("confirmed", () => this.mark("ack"));
      if (line) {
        // Open once media flows, not at the SIP answer alone: a network that passes the
        // signalling but drops UDP (ICE and DTLS never get through) leaves a line that
        // would take the next caller into silence until the PBX's media timeout.
        session.on("confirmed", () => this._lineUp(session));
        session.on("peerconnection", (pcEvent) => pcEvent.peerconnection.addEventListener(
          "connectionstatechange", () => this._lineUp(session)));
      } else {
        session.on("confirmed", () => this.hooks.onCall(session));
      }
      session.on("ended", (e) => this._ended(session, e.cause));
      session.on("failed", (e) => this._ended(session, e.cause));
      let stream;
      try {
        stream = await expecting.mic;
      } catch (error) {
        session.terminate({ status_code: 480, reason_phrase: "Microphone Unavailable" });
        this._set("error", `The microphone is not available: ${error.message || error.name}.`);
        return;
      }
      this.localStream = stream;
      this.mark("microphone");
      const pcConfig = { ...PC_CONFIG };
      if (this.certificates) pcConfig.certificates = this.certificates;
      session.answer({ mediaStream: stream, pcConfig });
    }

    _lineUp(session) {
      const pc = session.connection;
      if (this.session === session && session.isEstablished() && pc
          && pc.connectionState === "connected" && this.lineState !== "open") {
        this._lineOpened();
        this._setLine("open");
      }
    }

    mark(step, firstOnly) {
      if (firstOnly && step in this.marks) return;
      this.marks[step] = Math.round((performance.now() - this._clickedAt) * 10) / 10;
    }

    // When the first audio packet left (diagnostics: WebRTC says nothing by itself).
    async _markFirstPacket(pc) {
      const until = performance.now() + 2000;
      while (performance.now() < until && pc.connectionState === "connected") {
        const report = await pc.getStats();
        let sent = 0;
        report.forEach((e) => { if (e.type === "outbound-rtp") sent += e.packetsSent || 0; });
        if (sent > 0) {
          this.mark("first_packet_sent", true);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }

    _attachRemote(pc) {
      pc.addEventListener("iceconnectionstatechange", () => {
        if (pc.iceConnectionState === "connected") this.mark("ice_connected", true);
      });
      pc.addEventListener("connectionstatechange", () => {
        // "connected" here means ICE and the DTLS handshake are done: media can flow.
        if (pc.connectionState === "connected") {
          this.mark("dtls_connected", true);
          this._markFirstPacket(pc);
        }
      });
      pc.addEventListener("track", (trackEvent) => {
        this.remoteAudio.srcObject = trackEvent.streams[0] || new MediaStream([trackEvent.track]);
        this.remoteAudio.play().catch(() => undefined);
      });
    }

    _ended(session, cause) {
      if (this.session !== session) return;
      this.session = null;
      stopStream(this.localStream);
      this.localStream = null;
      this.remoteAudio.srcObject = null;
      if (session.isLine) {
        const onCall = this.lineOnCall;
        this.lineOnCall = false;
        this._setLine(this.lineWanted ? "down" : "off");
        if (onCall) this.hooks.onCallEnded(cause);
        this._lineLater();
        return;
      }
      this.hooks.onCallEnded(cause);
      this._lineNeeded(); // a call-back that borrowed the phone gives the line back
    }

    // A caller is on the phone now: a ringing call, or the open line moved into a call.
    get onCall() {
      if (!this.session || this.session.isEnded()) return false;
      return !this.session.isLine || this.lineOnCall;
    }

    // ---- the open line (openline.js adds the rest; pages without it have none) ---------

    get lineReady() {
      return false;
    }

    renewIdleLine() {}

    get lineWanted() {
      return false;
    }

    _lineNeeded() {}

    _lineLater() {}

    _lineOpened() {}

    _setLine(lineState) {
      this.lineState = lineState;
    }

    // Mute keeps the call and the RTP stream (the caller's line stays up); only the
    // microphone's samples stop, so the caller hears silence.
    setMuted(muted) {
      if (!this.localStream) return;
      for (const track of this.localStream.getAudioTracks()) track.enabled = !muted;
    }

    get muted() {
      return !!this.localStream && this.localStream.getAudioTracks().every((t) => !t.enabled);
    }

    // What the browser receives and sends, for the agent's own diagnostics and tests.
    async stats() {
      const pc = this.session && this.session.connection;
      if (!pc) return null;
      const report = await pc.getStats();
      const out = { inbound: null, outbound: null, ice: null };
      report.forEach((entry) => {
        if (entry.type === "inbound-rtp" && entry.kind === "audio") {
          out.inbound = { packets: entry.packetsReceived, energy: entry.totalAudioEnergy || 0 };
        } else if (entry.type === "outbound-rtp" && entry.kind === "audio") {
          out.outbound = { packets: entry.packetsSent };
        } else if (entry.type === "transport") {
          out.ice = { dtls: entry.dtlsState, ice: entry.iceState };
        }
      });
      return out;
    }

    // ---- before going on duty ---------------------------------------------------------

    // null when this desk can take calls; otherwise what the agent must fix, plainly.
    async readyForDuty() {
      if (this.state === "none") return null;
      if (this.state === "elsewhere" || this.state === "moving") {
        return "The phone is open in another tab: go on duty there, or move the phone here.";
      }
      try {
        stopStream(await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS));
      } catch (error) {
        if (error && error.name === "NotAllowedError") {
          return "The browser blocks the microphone: allow it for this site, then try again.";
        }
        return `No microphone could be opened (${(error && error.name) || error}).`;
      }
      if (this.state !== "registered") {
        return `The phone is not ready: ${this.reason || this.state}`;
      }
      return null;
    }

    _set(state, reason) {
      this.state = state;
      this.reason = reason || "";
      this.hooks.onState(state, this.reason);
    }
  }

  async function makeCertificates() {
    try {
      return [await RTCPeerConnection.generateCertificate({ name: "ECDSA", namedCurve: "P-256" })];
    } catch (error) {
      return null; // the browser makes one per call instead
    }
  }

  function stopStream(stream) {
    if (stream) for (const track of stream.getTracks()) track.stop();
  }

  // For pages without the phone (the contact page's call-back): ask the tab holding this
  // agent's phone to answer the call about to ring it. Resolves "armed", "busy" (that
  // phone is on a call) or "none" (no tab holds a registered phone).
  Softphone.armPhoneTab = function armPhoneTab(timeoutMs = 700, line = false) {
    if (!("BroadcastChannel" in window)) return Promise.resolve("none");
    const channel = new BroadcastChannel(CHANNEL_NAME);
    const id = Math.random().toString(36).slice(2);
    return new Promise((resolve) => {
      const done = (answer) => {
        clearTimeout(timer);
        channel.close();
        resolve(answer);
      };
      const timer = setTimeout(() => done("none"), timeoutMs);
      channel.onmessage = (event) => {
        const message = event.data || {};
        if (message.id === id && (message.type === "armed" || message.type === "busy")) {
          done(message.type);
        }
      };
      channel.postMessage({ type: "arm", id, line });
    });
  };

  // For a page that starts a call to the agent's own phone (a call-back, supervision):
  // a desk phone just rings; a browser phone's tab is asked to answer it. `line`: the
  // server takes the agent's open line for it if there is one (supervision does).
  // Resolves { browser, problem }: `problem` says why the call must not be started.
  Softphone.readyForOwnCall = async function readyForOwnCall(line = false) {
    const browser = (await fetch("/api/softphone", { credentials: "same-origin" })).ok;
    if (!browser) return { browser, problem: null };
    const phone = await Softphone.armPhoneTab(700, line);
    if (phone === "none") {
      return { browser, problem: "Your browser phone is in the Desk: open the Desk in another tab first." };
    }
    if (phone === "busy") {
      return { browser, problem: "Your phone is on a call: try again when it has ended." };
    }
    return { browser, problem: null };
  };

  Softphone.disarmPhoneTab = function disarmPhoneTab() {
    if (!("BroadcastChannel" in window)) return;
    const channel = new BroadcastChannel(CHANNEL_NAME);
    channel.postMessage({ type: "disarm" });
    channel.close();
  };

  // What openline.js shares with this file.
  Softphone.shared = { EXPECT_WINDOW_MS, MIC_CONSTRAINTS, stopStream };
  window.Softphone = Softphone;
})();
