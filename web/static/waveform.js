// The recording page: the waveform (peaks computed on the server) drawn on a canvas,
// with the playback position; a click seeks.
"use strict";
(() => {
  const section = document.querySelector(".recording");
  if (!section) return;
  const canvas = document.getElementById("waveform");
  const player = document.getElementById("player");
  const ctx = canvas.getContext("2d");
  let waveform = null;

  function draw() {
    if (!waveform) return;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio;
    const height = canvas.clientHeight * ratio;
    canvas.width = width;
    canvas.height = height;
    const peaks = waveform.peaks;
    const mid = height / 2;
    const played = waveform.duration_s ? player.currentTime / waveform.duration_s : 0;
    for (let x = 0; x < width; x += 1) {
      const [lo, hi] = peaks[Math.floor((x / width) * peaks.length)] || [0, 0];
      ctx.fillStyle = x / width < played ? "#1565c0" : "#90a4ae";
      const top = mid - hi * mid;
      ctx.fillRect(x, top, 1, Math.max(1, (hi - lo) * mid));
    }
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
    draw();
  }

  canvas.addEventListener("click", (ev) => {
    if (!waveform) return;
    const rect = canvas.getBoundingClientRect();
    player.currentTime = ((ev.clientX - rect.left) / rect.width) * waveform.duration_s;
    draw();
  });
  player.addEventListener("timeupdate", draw);
  window.addEventListener("resize", draw);
  load();
})();
