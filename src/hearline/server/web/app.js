/* Hearline live page: microphone -> /asr (WhisperLiveKit protocol), file -> /v1/audio/transcriptions.
 *
 * Every URL is relative to the page so Hearline works behind a reverse proxy under a path prefix; the
 * WebSocket scheme follows the page (https -> wss).  Audio is MediaRecorder WebM/Opus unless the server's
 * first message says useAudioWorklet=true (`hearline serve --pcm-input`), then 16 kHz s16le PCM from an
 * AudioWorklet.  A dropped socket is retried with backoff while recording; each new socket starts a new
 * transcript block and a new recorder (a fresh WebM header), so the text already shown stays.
 */
"use strict";

(function () {
  const { Transcript, shortClock } = window.HearlineTranscript;
  const $ = (id) => document.getElementById(id);

  const ui = {
    record: $("record"),
    recordLabel: document.querySelector("#record .label"),
    conn: $("conn"),
    level: $("level"),
    levelFill: $("level-fill"),
    lag: $("lag"),
    language: $("language"),
    model: $("model"),
    target: $("target"),
    showTimes: $("show-times"),
    token: $("token"),
    audioMode: $("audio-mode"),
    message: $("message"),
    file: $("file"),
    upload: $("upload"),
    progress: $("upload-progress"),
    uploadStatus: $("upload-status"),
    transcript: $("transcript"),
    empty: $("empty"),
    copy: $("copy"),
    clear: $("clear"),
    announcer: $("announcer"),
  };

  const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 3000];
  const FINISH_WAIT_MS = 120000; // how long Stop waits for the server's ready_to_stop
  const TIMESLICE_MS = 250;

  const transcript = new Transcript();
  const rendered = new Map(); // block id -> {keys of the rendered lines, lines announced}
  const live = {
    state: "idle", // idle | starting | live | reconnecting | finishing
    stream: null,
    audioCtx: null,
    source: null,
    analyser: null,
    meterFrame: 0,
    worklet: null,
    workletLoaded: false,
    sink: null,
    recorder: null,
    ws: null,
    useWorklet: false,
    block: null,
    recordStart: 0,
    timelineStart: 0,
    attempt: 0,
    retryTimer: 0,
    finishTimer: 0,
  };

  // ---------------------------------------------------------------------------------------------
  // small helpers

  function relativeURL(path) {
    return new URL(path, window.location.href);
  }

  function wsURL(params) {
    const url = relativeURL("asr");
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    url.search = new URLSearchParams(params).toString();
    return url.href;
  }

  function authHeaders() {
    const token = ui.token.value.trim();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function setConn(state, text) {
    ui.conn.dataset.state = state;
    ui.conn.textContent = text || state;
  }

  function showMessage(text, kind) {
    ui.message.hidden = !text;
    ui.message.dataset.kind = kind || "error";
    ui.message.textContent = "";
    if (!text) return;
    for (const [i, para] of String(text).split("\n").entries()) {
      const p = document.createElement("p");
      p.textContent = para;
      if (i === 0) p.className = "lead";
      ui.message.appendChild(p);
    }
  }

  function stamp() {
    const d = new Date();
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
  }

  // ---------------------------------------------------------------------------------------------
  // settings kept across reloads (selections only; the API key stays in this tab's sessionStorage)

  function restoreSettings() {
    try {
      ui.showTimes.checked = localStorage.getItem("hearline.showTimes") !== "0";
      ui.token.value = sessionStorage.getItem("hearline.token") || "";
    } catch (err) {
      console.warn("storage unavailable", err);
    }
  }

  function remember(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch (err) {
      console.warn("storage unavailable", err);
    }
  }

  function restoreSelect(select, key, listen = true) {
    let saved = null;
    try {
      saved = localStorage.getItem(key);
    } catch (err) {
      console.warn("storage unavailable", err);
    }
    if (saved !== null && [...select.options].some((o) => o.value === saved)) select.value = saved;
    if (listen) select.addEventListener("change", () => remember(key, select.value));
  }

  // ---------------------------------------------------------------------------------------------
  // pickers fed by the server's own lists; a missing endpoint leaves the defaults in place

  async function getJSON(path) {
    const response = await fetch(relativeURL(path), { headers: authHeaders() });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function addOption(select, value, text) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    select.appendChild(option);
  }

  // The menus offer what the chosen model can do: reloaded whenever the model changes.
  let languagesLoaded = false;
  async function loadLanguages() {
    const model = ui.model.value;
    for (const select of [ui.language, ui.target]) while (select.options.length > 1) select.remove(1);
    try {
      const body = await getJSON(model ? `v1/languages?model=${encodeURIComponent(model)}` : "v1/languages");
      for (const row of body.data || []) {
        const usage = row.usage || ["lang_from", "lang_to"];
        const name = row.displayName || row.name || row.code;
        if (row.code === "auto" || row.code === "n/a") continue;
        if (usage.includes("lang_from")) addOption(ui.language, row.code, `${name} (${row.code})`);
        if (usage.includes("lang_to")) addOption(ui.target, row.code, name);
      }
    } catch (err) {
      console.warn("language list unavailable; using auto-detect only:", err.message);
      ui.target.dataset.unavailable = "1";
      renderRecordButton();
    }
    restoreSelect(ui.language, "hearline.language", !languagesLoaded);
    restoreSelect(ui.target, "hearline.target", !languagesLoaded);
    languagesLoaded = true;
  }

  async function loadModels() {
    try {
      const body = await getJSON("v1/models");
      let defaultId = "";
      for (const model of body.data || []) {
        const usable = !model.status || model.status === "loaded" || model.status === "installed";
        if (model.default) defaultId = model.id;
        if (!usable) continue;
        addOption(ui.model, model.id, model.default ? `${model.id} (default)` : model.id);
      }
      if (defaultId) ui.model.options[0].textContent = `Server default (${defaultId})`;
    } catch (err) {
      console.warn("model list unavailable; using the server default:", err.message);
    }
    restoreSelect(ui.model, "hearline.model");
  }

  // ---------------------------------------------------------------------------------------------
  // rendering

  function lineElement(block, line, showSpeaker) {
    const p = document.createElement("p");
    if (line.speaker === -2) {
      p.className = "silence";
      p.textContent = `silence ${shortClock(block.offset + line.start)}–${shortClock(block.offset + line.end)}`;
      return p;
    }
    p.className = "line";
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = shortClock(block.offset + line.start);
    p.appendChild(ts);
    if (showSpeaker && line.speaker > 0) {
      const tag = document.createElement("span");
      tag.className = "tag speaker";
      tag.dataset.speaker = String(line.speaker);
      tag.textContent = `S${line.speaker}`;
      p.appendChild(tag);
    }
    if (line.language) {
      const tag = document.createElement("span");
      tag.className = "tag lang";
      tag.textContent = line.language;
      p.appendChild(tag);
    }
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    p.appendChild(text);
    if (line.translation) {
      const tr = document.createElement("span");
      tr.className = "translation";
      tr.textContent = line.translation;
      p.appendChild(tr);
    }
    return p;
  }

  function pendingElement(block) {
    const p = document.createElement("p");
    p.className = "line pending";
    const span = document.createElement("span");
    span.className = "partial";
    span.textContent = block.partial;
    p.appendChild(span);
    if (block.partialTranslation) {
      const tr = document.createElement("span");
      tr.className = "translation partial-translation";
      tr.textContent = block.partialTranslation;
      p.appendChild(tr);
    }
    return p;
  }

  /** Screen readers hear each line once, when it is finished (not every partial). */
  function announce(text) {
    ui.announcer.textContent = text;
  }

  /**
   * Update a block's section in place: lines the server did not change keep their elements (long
   * sessions stay cheap, selections survive); from the first changed line on, elements are rebuilt.
   */
  function renderBlock(block) {
    let section = ui.transcript.querySelector(`section[data-block="${block.id}"]`);
    if (!section) {
      section = document.createElement("section");
      section.className = "block";
      section.dataset.block = String(block.id);
      section.dataset.kind = block.kind;
      const h = document.createElement("h3");
      h.textContent = block.label;
      section.appendChild(h);
      section.appendChild(document.createElement("div")).className = "lines";
      ui.transcript.appendChild(section);
      rendered.set(block.id, { keys: [], announced: 0 });
    }
    const state = rendered.get(block.id);
    const container = section.querySelector(".lines");
    const showSpeaker = block.speakers().size > 1;
    const items = block.lines.filter((line) => line.speaker === -2 || line.text);
    const keys = items.map((l) =>
      [showSpeaker, block.offset, l.speaker, l.start, l.end, l.language, l.text, l.translation].join("\u0001"));
    let same = 0;
    while (same < keys.length && same < state.keys.length && keys[same] === state.keys[same]) same++;
    const nodes = container.children;
    while (nodes.length > same) nodes[nodes.length - 1].remove();
    const fragment = document.createDocumentFragment();
    for (let i = same; i < items.length; i++) fragment.appendChild(lineElement(block, items[i], showSpeaker));
    if (block.partial) fragment.appendChild(pendingElement(block));
    container.appendChild(fragment);
    state.keys = keys;

    // the open utterance's line still grows while its session runs; it is announced once finished
    const open = block === live.block && live.state !== "idle" ? 1 : 0;
    const finished = Math.max(0, items.length - open);
    if (finished > state.announced) {
      const text = items.slice(state.announced, finished).filter((l) => l.text).map((l) => l.text).join(" ");
      if (text) announce(text);
      state.announced = finished;
    } else if (finished < state.announced) {
      state.announced = finished; // the server dropped a provisional line
    }
    ui.empty.hidden = transcript.blocks.length > 0;
    const nearBottom = ui.transcript.scrollHeight - ui.transcript.scrollTop - ui.transcript.clientHeight < 120;
    if (nearBottom) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function renderLag(seconds) {
    if (seconds === null) {
      ui.lag.textContent = "lag —";
      ui.lag.dataset.level = "";
      return;
    }
    ui.lag.textContent = `lag ${seconds.toFixed(1)} s`;
    ui.lag.dataset.level = seconds > 5 ? "high" : seconds > 2 ? "warn" : "ok";
  }

  function renderRecordButton() {
    const s = live.state;
    const active = s !== "idle";
    ui.record.setAttribute("aria-pressed", String(active && s !== "finishing"));
    ui.record.dataset.state = s;
    // aria-disabled, not disabled: a disabled button drops keyboard focus to <body>
    ui.record.setAttribute("aria-disabled", String(s === "finishing" || s === "starting"));
    ui.recordLabel.textContent =
      s === "idle" ? "Start recording" : s === "finishing" ? "Finishing…" : s === "starting" ? "Starting…" : "Stop";
    for (const select of [ui.language, ui.model, ui.target]) select.disabled = active || select.dataset.unavailable === "1";
  }

  function setState(state) {
    live.state = state;
    renderRecordButton();
  }

  // ---------------------------------------------------------------------------------------------
  // microphone

  function explainInsecure() {
    const origin = window.location.origin;
    return (
      "This browser only allows the microphone on secure pages (https://, or http://localhost).\n" +
      `This page was opened from ${origin}, which is not secure, so recording is unavailable here. ` +
      "Open Hearline through https (a reverse proxy with TLS), through http://localhost (for example an SSH " +
      "tunnel), or list this address under chrome://flags/#unsafely-treat-insecure-origin-as-secure " +
      `(edge://flags/... in Edge): ${origin}\n` +
      "Transcribing a file works from any address."
    );
  }

  function explainMicError(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      if (!window.isSecureContext) return explainInsecure();
      return (
        "The browser refused the microphone.\n" +
        "Allow microphone access for this site (the icon at the left of the address bar), then press Start again."
      );
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No microphone was found.\nConnect one (or pick it in the system sound settings) and try again.";
    }
    if (name === "NotReadableError" || name === "AbortError") {
      return "The microphone could not be opened.\nAnother application may be using it.";
    }
    return `The microphone could not be opened.\n${(err && err.message) || err}`;
  }

  async function openMicrophone() {
    live.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    try {
      live.audioCtx = new AudioContext();
      live.source = live.audioCtx.createMediaStreamSource(live.stream);
      live.analyser = live.audioCtx.createAnalyser();
      live.analyser.fftSize = 1024;
      live.source.connect(live.analyser);
      if (live.audioCtx.state === "suspended") await live.audioCtx.resume();
      meterLoop();
    } catch (err) {
      // the level meter and PCM mode need Web Audio; WebM recording does not
      console.warn("Web Audio unavailable:", err);
      live.audioCtx = null;
    }
  }

  function meterLoop() {
    const data = new Float32Array(live.analyser.fftSize);
    let lastAria = 0;
    const tick = (now) => {
      if (!live.analyser) return;
      live.analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
      const rms = Math.sqrt(sum / data.length);
      const db = 20 * Math.log10(rms + 1e-8); // -60 dB .. 0 dB -> 0 .. 100
      const level = Math.max(0, Math.min(100, Math.round(((db + 60) / 60) * 100)));
      ui.levelFill.style.width = `${level}%`;
      if (now - lastAria > 500) {
        ui.level.setAttribute("aria-valuenow", String(level));
        lastAria = now;
      }
      live.meterFrame = requestAnimationFrame(tick);
    };
    live.meterFrame = requestAnimationFrame(tick);
  }

  function closeMicrophone() {
    cancelAnimationFrame(live.meterFrame);
    live.analyser = null;
    if (live.stream) for (const track of live.stream.getTracks()) track.stop();
    live.stream = null;
    if (live.audioCtx) {
      live.audioCtx.close().catch((err) => console.warn("closing audio context:", err));
    }
    live.audioCtx = null;
    live.source = null;
    live.worklet = null;
    live.workletLoaded = false;
    live.sink = null;
    ui.levelFill.style.width = "0%";
    ui.level.setAttribute("aria-valuenow", "0");
  }

  function pickMimeType() {
    const types = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/ogg"];
    return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
  }

  async function startCapture(ws) {
    if (live.useWorklet) {
      if (!live.audioCtx) throw new Error("this browser has no Web Audio, which PCM mode needs");
      if (!live.workletLoaded) {
        await live.audioCtx.audioWorklet.addModule(relativeURL("static/pcm-worklet.js"));
        live.workletLoaded = true;
      }
      const node = new AudioWorkletNode(live.audioCtx, "pcm16k");
      node.port.onmessage = (event) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(event.data);
      };
      live.sink = live.sink || live.audioCtx.createGain();
      live.sink.gain.value = 0;
      live.sink.connect(live.audioCtx.destination);
      live.source.connect(node);
      node.connect(live.sink); // keeps the node pulled by the graph; silent
      live.worklet = node;
      ui.audioMode.textContent = "PCM 16 kHz (AudioWorklet)";
      return;
    }
    const mimeType = pickMimeType();
    if (!mimeType) throw new Error("this browser cannot record WebM or Ogg audio (MediaRecorder)");
    const recorder = new MediaRecorder(live.stream, { mimeType });
    recorder.ondataavailable = (event) => {
      if (event.data.size > 0 && ws.readyState === WebSocket.OPEN) ws.send(event.data);
    };
    recorder.start(TIMESLICE_MS);
    live.recorder = recorder;
    ui.audioMode.textContent = mimeType.startsWith("audio/ogg") ? "Ogg/Opus" : "WebM/Opus";
  }

  /** Stop sending audio; resolves once the recorder has delivered its last chunk. */
  function stopCapture() {
    return new Promise((resolve) => {
      if (live.worklet) {
        live.worklet.port.postMessage("flush");
        const node = live.worklet;
        live.worklet = null;
        // let the flushed chunk arrive before detaching
        setTimeout(() => {
          try {
            node.disconnect();
            if (live.source) live.source.disconnect(node);
          } catch (err) {
            console.warn("detaching the PCM worklet:", err);
          }
          resolve();
        }, 50);
        return;
      }
      const recorder = live.recorder;
      live.recorder = null;
      if (!recorder || recorder.state === "inactive") {
        resolve();
        return;
      }
      recorder.addEventListener("stop", () => resolve(), { once: true });
      recorder.stop();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // the /asr session

  function sessionParams() {
    const params = { language: ui.language.value || "auto" };
    if (ui.target.value) params.target_language = ui.target.value;
    if (ui.model.value) params.model = ui.model.value;
    const token = ui.token.value.trim();
    if (token) params.token = token;
    return params;
  }

  function connect() {
    const ws = new WebSocket(wsURL(sessionParams()));
    ws.binaryType = "arraybuffer";
    live.ws = ws;
    let configured = false;
    let ended = false;

    ws.onmessage = async (event) => {
      if (ws !== live.ws) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        console.warn("ignoring a non-JSON message", err);
        return;
      }
      if (msg.type === "config") {
        configured = true;
        live.useWorklet = Boolean(msg.useAudioWorklet);
        const previous = live.block;
        const reconnecting = previous !== null;
        const offset = reconnecting ? live.timelineStart + (performance.now() - live.recordStart) / 1000 : undefined;
        live.block = transcript.add("mic", reconnecting ? "Microphone (reconnected)" : "Microphone", offset);
        if (!reconnecting) live.timelineStart = live.block.offset;
        if (previous) renderBlock(previous);
        renderBlock(live.block);
        try {
          await startCapture(ws);
        } catch (err) {
          showMessage(`Recording could not start.\n${err.message}`);
          abort();
          return;
        }
        live.attempt = 0;
        setState("live");
        setConn("live", "live");
        if (!reconnecting || ui.message.dataset.kind === "info") showMessage("");
        return;
      }
      if (msg.type === "ready_to_stop") {
        ended = true;
        finish();
        return;
      }
      if (msg.type === "error") {
        showMessage(`The server reported an error.\n${msg.error}`);
        return;
      }
      if (msg.type === "snapshot" || msg.type === "diff") return; // only full mode is requested
      if (!live.block) return;
      live.block.applyUpdate(msg);
      if (msg.status === "error" && msg.error) showMessage(`Transcription error.\n${msg.error}`);
      renderBlock(live.block);
      renderLag(live.block.lag);
    };

    ws.onclose = (event) => {
      if (ws !== live.ws) return;
      live.ws = null;
      if (live.state === "finishing") {
        if (!ended) finish();
        return;
      }
      if (live.state === "idle") return;
      if (event.code === 4401 || event.code === 1008) {
        showMessage("The server refused the connection: the API key is missing or wrong.\nEnter it under Connection.");
        abort();
        return;
      }
      if (event.code === 4400) {
        abort(); // the error message came first
        return;
      }
      if (!configured && live.attempt === 0 && live.block === null) {
        showMessage("Could not connect to the server's live endpoint (asr).\nIs Hearline running?");
        abort();
        return;
      }
      scheduleReconnect();
    };
  }

  async function scheduleReconnect() {
    await stopCapture();
    if (live.block) {
      live.block.freeze();
      renderBlock(live.block);
    }
    renderLag(null);
    if (live.state === "idle" || live.state === "finishing") return;
    const delay = RECONNECT_DELAYS_MS[Math.min(live.attempt, RECONNECT_DELAYS_MS.length - 1)];
    live.attempt += 1;
    setState("reconnecting");
    setConn("reconnecting", `reconnecting (attempt ${live.attempt})…`);
    showMessage("Connection lost; reconnecting.\nThe transcript so far is kept.", "info");
    clearTimeout(live.retryTimer);
    live.retryTimer = setTimeout(() => {
      if (live.state === "reconnecting") connect();
    }, delay);
  }

  async function start() {
    showMessage("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showMessage(window.isSecureContext ? "This browser cannot record audio." : explainInsecure());
      return;
    }
    setState("starting");
    setConn("connecting", "connecting…");
    try {
      await openMicrophone();
    } catch (err) {
      showMessage(explainMicError(err));
      closeMicrophone();
      setState("idle");
      setConn("idle", "idle");
      return;
    }
    live.block = null;
    live.attempt = 0;
    live.recordStart = performance.now();
    connect();
  }

  async function stop() {
    if (live.state === "reconnecting") {
      clearTimeout(live.retryTimer);
      finish();
      return;
    }
    setState("finishing");
    setConn("finishing", "finishing…");
    await stopCapture();
    closeMicrophone();
    const ws = live.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      finish();
      return;
    }
    ws.send(new ArrayBuffer(0)); // an empty frame ends the audio; the server answers ready_to_stop
    live.finishTimer = setTimeout(() => {
      if (live.state === "finishing") {
        console.warn("no ready_to_stop from the server; closing");
        finish();
      }
    }, FINISH_WAIT_MS);
  }

  function finish() {
    clearTimeout(live.finishTimer);
    clearTimeout(live.retryTimer);
    const ws = live.ws;
    live.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000);
    else if (ws && ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close(1000); // no console noise
    if (live.recorder || live.worklet) stopCapture();
    closeMicrophone();
    const block = live.block;
    live.block = null; // before rendering: its last line is finished now, and announced
    if (block) {
      block.freeze();
      renderBlock(block);
    }
    renderLag(null);
    setState("idle");
    setConn("idle", "idle");
    if (ui.message.dataset.kind === "info") showMessage("");
  }

  function abort() {
    live.state = "finishing"; // keeps onclose from reconnecting
    finish();
  }

  // ---------------------------------------------------------------------------------------------
  // file upload (OpenAI REST, verbose_json)

  function upload() {
    if (ui.upload.getAttribute("aria-disabled") === "true") return;
    const file = ui.file.files && ui.file.files[0];
    if (!file) {
      ui.uploadStatus.textContent = "Choose a file first.";
      ui.file.focus();
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("response_format", "verbose_json");
    form.append("timestamp_granularities[]", "segment");
    if (ui.model.value) form.append("model", ui.model.value);
    if (ui.language.value && ui.language.value !== "auto") form.append("language", ui.language.value);

    const xhr = new XMLHttpRequest();
    xhr.open("POST", relativeURL("v1/audio/transcriptions"));
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    ui.upload.setAttribute("aria-disabled", "true");
    ui.progress.hidden = false;
    ui.progress.value = 0;
    ui.uploadStatus.textContent = `Uploading ${file.name}…`;
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        const pct = Math.round((event.loaded / event.total) * 100);
        ui.progress.value = pct;
        ui.uploadStatus.textContent = `Uploading ${file.name}… ${pct}%`;
      }
    };
    xhr.upload.onload = () => {
      ui.progress.removeAttribute("value"); // indeterminate while the server transcribes
      ui.uploadStatus.textContent = `Transcribing ${file.name}…`;
    };
    const done = (text) => {
      ui.upload.setAttribute("aria-disabled", "false");
      ui.progress.hidden = true;
      ui.uploadStatus.textContent = text;
    };
    xhr.onerror = () => done(`Upload failed: the server could not be reached.`);
    xhr.onabort = () => done("Upload cancelled.");
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (err) {
        console.warn("non-JSON answer", err);
      }
      if (xhr.status !== 200 || !body) {
        const reason = (body && body.error && body.error.message) || `HTTP ${xhr.status}`;
        done(`Transcription failed: ${reason}`);
        return;
      }
      const block = transcript.add("file", file.name);
      const segments = Array.isArray(body.segments) && body.segments.length
        ? body.segments
        : [{ start: 0, end: body.duration || 0, text: body.text || "" }];
      block.lines = segments.map((s) => ({
        start: Number(s.start) || 0,
        end: Number(s.end) || 0,
        text: String(s.text || "").trim(),
        speaker: typeof s.speaker === "number" ? s.speaker : 1,
        language: "",
        translation: "",
      }));
      renderBlock(block);
      const seconds = typeof body.duration === "number" ? ` (${body.duration.toFixed(1)} s of audio)` : "";
      done(`Transcribed ${file.name}${seconds}.`);
    };
    xhr.send(form);
  }

  // ---------------------------------------------------------------------------------------------
  // export

  function exportAs(kind) {
    const bodies = {
      txt: ["text/plain", () => transcript.toText()],
      srt: ["application/x-subrip", () => transcript.toSRT()],
      vtt: ["text/vtt", () => transcript.toVTT()],
      json: ["application/json", () => JSON.stringify(transcript.toJSON(), null, 2) + "\n"],
    };
    const [type, make] = bodies[kind];
    const blob = new Blob([make()], { type: `${type};charset=utf-8` });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `hearline-${stamp()}.${kind}`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async function copyText() {
    const text = transcript.toText();
    try {
      await navigator.clipboard.writeText(text);
      ui.copy.textContent = "Copied";
    } catch (err) {
      // no clipboard API (non-secure origin) or no permission: the old way
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.appendChild(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      ui.copy.textContent = ok ? "Copied" : "Copy failed";
      if (!ok) console.warn("copy failed:", err);
    }
    setTimeout(() => (ui.copy.textContent = "Copy"), 1500);
  }

  // ---------------------------------------------------------------------------------------------
  // wiring

  function init() {
    restoreSettings();
    ui.record.addEventListener("click", () => {
      if (live.state === "idle") start();
      else if (live.state === "live" || live.state === "reconnecting") stop();
    });
    ui.upload.addEventListener("click", upload);
    ui.copy.addEventListener("click", copyText);
    ui.clear.addEventListener("click", () => {
      const keep = live.block;
      transcript.blocks = keep ? [keep] : [];
      for (const section of ui.transcript.querySelectorAll("section.block")) {
        if (!keep || section.dataset.block !== String(keep.id)) {
          rendered.delete(Number(section.dataset.block));
          section.remove();
        }
      }
      ui.empty.hidden = transcript.blocks.length > 0;
    });
    for (const button of document.querySelectorAll("[data-download]")) {
      button.addEventListener("click", () => exportAs(button.dataset.download));
    }
    ui.showTimes.addEventListener("change", () => {
      document.body.classList.toggle("no-times", !ui.showTimes.checked);
      remember("hearline.showTimes", ui.showTimes.checked ? "1" : "0");
    });
    document.body.classList.toggle("no-times", !ui.showTimes.checked);
    $("token-form").addEventListener("submit", (event) => event.preventDefault());
    ui.token.addEventListener("change", () => {
      try {
        sessionStorage.setItem("hearline.token", ui.token.value);
      } catch (err) {
        console.warn("storage unavailable", err);
      }
    });
    if (!window.isSecureContext || !navigator.mediaDevices) {
      showMessage(explainInsecure(), "warning");
    }
    renderRecordButton();
    loadModels().then(loadLanguages);
    ui.model.addEventListener("change", loadLanguages);
    window.hearline = { transcript, live }; // for debugging and the browser tests
  }

  init();
})();
