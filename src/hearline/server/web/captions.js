/* Hearline caption overlay (/captions).
 *
 * Query: ?source=mic opens its own /asr session from this browser's microphone; otherwise the page follows
 * the server's live captions feed (SSE `events`, filled while the server captures audio: POST /start).
 * ?lines=N keeps the last N lines (default 3), ?transparent=1 for OBS browser sources, ?language=xx for
 * the mic session, ?token=... when the server has an API key.  Relative URLs only.
 */
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const maxLines = Math.max(1, Math.min(20, parseInt(params.get("lines") || "3", 10) || 3));
  const transparent = ["1", "true", "yes"].includes((params.get("transparent") || "").toLowerCase());
  const source = (params.get("source") || "events").toLowerCase();
  const token = params.get("token") || "";
  const box = document.getElementById("captions");
  const status = document.getElementById("status");
  const startButton = document.getElementById("start");
  const RETRY_MS = [500, 1000, 2000, 4000, 5000];

  if (transparent) {
    document.body.classList.add("transparent");
    document.documentElement.style.background = "transparent";
  }
  if (params.get("size")) document.documentElement.style.setProperty("--size", params.get("size"));

  /** Show the last maxLines of [{text, partial, translation}]. */
  function render(lines) {
    const shown = lines.filter((l) => l.text).slice(-maxLines);
    const fragment = document.createDocumentFragment();
    for (const line of shown) {
      const p = document.createElement("p");
      p.className = line.partial ? "cap partial" : "cap";
      p.textContent = line.text;
      if (line.translation) {
        const tr = document.createElement("span");
        tr.className = "translation";
        tr.textContent = line.translation;
        p.appendChild(tr);
      }
      fragment.appendChild(p);
    }
    box.replaceChildren(fragment);
  }

  function relativeURL(path, query) {
    const url = new URL(path, window.location.href);
    const search = new URLSearchParams(query || {});
    if (token) search.set("token", token);
    url.search = search.toString();
    return url;
  }

  // -- server captions feed (SSE) -------------------------------------------------------------
  function followEvents() {
    const captions = new Map(); // id -> {text, partial, translation}
    const order = [];
    const events = new EventSource(relativeURL("events"));
    const keep = maxLines * 4;
    const show = () => render(order.map((id) => captions.get(id)));
    events.addEventListener("open", (event) => {
      let running = true;
      try {
        running = Boolean(JSON.parse(event.data).data.running);
      } catch (err) {
        running = true; // the plain EventSource open event has no data
      }
      status.textContent = running ? "" : "Waiting for captions (the server is not capturing audio).";
    });
    events.addEventListener("captions", (event) => {
      const c = JSON.parse(event.data);
      if (!captions.has(c.id)) {
        order.push(c.id);
        while (order.length > keep) captions.delete(order.shift());
      }
      const prev = captions.get(c.id) || {};
      captions.set(c.id, { text: (c.text || "").trim(), partial: !c.is_final, translation: prev.translation || "" });
      status.textContent = "";
      show();
    });
    events.addEventListener("translate", (event) => {
      const t = JSON.parse(event.data);
      const c = captions.get(t.id);
      if (c) {
        c.translation = (t.text || "").trim();
        show();
      }
    });
    events.addEventListener("close", (event) => {
      let stopped = false;
      try {
        stopped = JSON.parse(event.data).reason === "stopped";
      } catch (err) {
        stopped = false;
      }
      // /stop: the feed stays open and the last captions stay up; otherwise the server is going away
      status.textContent = stopped
        ? "Captions stopped (waiting for the next start)."
        : "The captions feed closed; reconnecting…";
    });
    events.onerror = () => {
      status.textContent = "Captions feed unavailable; retrying…";
    };
  }

  // -- own /asr session from the microphone ------------------------------------------------------
  function followMicrophone() {
    const { Block } = window.HearlineTranscript;
    let stream = null;
    let attempt = 0;
    let done = []; // text of earlier sessions (reconnects keep what was shown)

    async function begin() {
      startButton.hidden = true;
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        status.textContent = "The microphone needs a secure page (https:// or http://localhost).";
        return;
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (err) {
        status.textContent = `Microphone unavailable: ${err.name || err}. Allow it and press Start.`;
        startButton.hidden = false;
        return;
      }
      connect();
    }

    function connect() {
      const url = relativeURL("asr", { language: params.get("language") || "auto" });
      url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(url.href);
      const block = new Block("mic", "Microphone", 0);
      let recorder = null;
      ws.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        if (msg.type === "config") {
          attempt = 0;
          status.textContent = "";
          recorder = new MediaRecorder(stream, { mimeType: "audio/webm" });
          recorder.ondataavailable = (e) => {
            if (e.data.size > 0 && ws.readyState === WebSocket.OPEN) ws.send(e.data);
          };
          recorder.start(250);
          return;
        }
        if (msg.type || !Array.isArray(msg.lines)) return;
        block.applyUpdate(msg);
        const lines = block.spoken().map((l) => ({ text: l.text, partial: false, translation: l.translation }));
        if (block.partial) lines.push({ text: block.partial, partial: true, translation: "" });
        render(done.concat(lines));
      };
      ws.onclose = () => {
        if (recorder && recorder.state !== "inactive") recorder.stop();
        block.freeze();
        done = done.concat(block.spoken().map((l) => ({ text: l.text, partial: false }))).slice(-maxLines);
        const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
        attempt += 1;
        status.textContent = "Connection lost; reconnecting…";
        setTimeout(connect, delay);
      };
    }

    startButton.addEventListener("click", begin);
    begin();
  }

  if (source === "mic" || source === "microphone") followMicrophone();
  else followEvents();
})();
