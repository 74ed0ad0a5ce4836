// The recording page: the waveform (peaks computed on the server) drawn on a canvas over
// the call's parts (the AI's, a person's), with the playback position; a click on the
// waveform, a part's mark or a transcript line plays from there.
"use strict";
(() => {
  const section = document.querySelector(".recording");
  if (!section) return;
  const canvas = document.getElementById("waveform");
  const player = document.getElementById("player");
  const ctx = canvas.getContext("2d");
  const parts = [...document.querySelectorAll("#parts .part")];
  const lines = [...document.querySelectorAll("#lines li")];
  const BAND = { ai: "#e3eaf2", person: "#e3f4e6" };
  let waveform = null;

  function duration() {
    return waveform ? waveform.duration_s : (Number.isFinite(player.duration) ? player.duration : 0);
  }

  function draw() {
    if (!waveform) return;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio;
    const height = canvas.clientHeight * ratio;
    canvas.width = width;
    canvas.height = height;
    const total = duration();
    // Who had the caller when, behind the waveform.
    for (const part of parts) {
      const start = Number(part.dataset.start) / total;
      const end = Math.min(1, Number(part.dataset.end) / total);
      ctx.fillStyle = BAND[part.dataset.who] || "#fff";
      ctx.fillRect(start * width, 0, Math.max(1, (end - start) * width), height);
    }
    const peaks = waveform.peaks;
    const mid = height / 2;
    const played = total ? player.currentTime / total : 0;
    for (let x = 0; x < width; x += 1) {
      const [lo, hi] = peaks[Math.floor((x / width) * peaks.length)] || [0, 0];
      ctx.fillStyle = x / width < played ? "#1565c0" : "#90a4ae";
      const top = mid - hi * mid;
      ctx.fillRect(x, top, 1, Math.max(1, (hi - lo) * mid));
    }
  }

  function placeMarks() {
    const total = duration();
    if (!total) return;
    // Each mark spans its part: a short part's words are cut, its title says them.
    for (const part of parts) {
      const left = Math.min(100, (100 * Number(part.dataset.start)) / total);
      const right = Math.min(100, (100 * Number(part.dataset.end)) / total);
      part.style.left = `${left}%`;
      part.style.width = `${Math.max(0, right - left)}%`;
    }
  }

  // The line being said at the playback position is highlighted.
  function follow() {
    let current = null;
    for (const line of lines) {
      if (Number(line.querySelector("button").dataset.at) <= player.currentTime + 0.05) current = line;
    }
    for (const line of lines) line.setAttribute("aria-current", String(line === current));
  }

  function playFrom(seconds) {
    player.currentTime = seconds;
    player.play().catch(() => {});  // refused without a gesture: the position still moves
    draw();
    follow();
  }

  async function load() {
    const response = await fetch(`/api/calls/${section.dataset.call}/peaks`,
                                 { credentials: "same-origin" });
    if (!response.ok) {
      sb.say("waveform-status", "No waveform for this recording.");
      return;
    }
    waveform = await response.json();
    canvas.dataset.buckets = String(waveform.buckets);
    sb.say("waveform-status", `${waveform.duration_s.toFixed(1)} s`);
    placeMarks();
    draw();
  }

  canvas.addEventListener("click", (ev) => {
    if (!waveform) return;
    const rect = canvas.getBoundingClientRect();
    playFrom(((ev.clientX - rect.left) / rect.width) * waveform.duration_s);
  });
  for (const button of document.querySelectorAll("#parts button, #lines button")) {
    button.addEventListener("click", () => playFrom(Number(button.dataset.at)));
  }
  player.addEventListener("timeupdate", () => { draw(); follow(); });
  player.addEventListener("loadedmetadata", placeMarks);
  window.addEventListener("resize", draw);
  load();
})();
