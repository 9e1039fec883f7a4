/* Hearline live page: microphone -> /asr (WhisperLiveKit protocol), file -> /v1/audio/transcriptions.
 *
 * Every URL is relative to the page so Hearline works behind a reverse proxy under a path prefix; the
 * WebSocket scheme follows the page (https -> wss).  Audio is MediaRecorder WebM/Opus unless the server's
 * first message says useAudioWorklet=true (`hearline serve --pcm-input`), then 16 kHz s16le PCM from an
 * AudioWorklet.  A dropped socket is retried with backoff while recording; each new socket starts a new
 * transcript block and a new recorder (a fresh WebM header), so the text already shown stays.
 *
 * This file holds what the other page scripts share (window.HearlinePage): the elements, the transcript,
 * the live-session state and small helpers.  The scripts load in order (index.html), each adding its
 * functions to HearlinePage; app.js wires the page up.
 */
"use strict";

(function () {
  const { Transcript } = window.HearlineTranscript;
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

  window.HearlinePage = {
    $, ui, transcript, rendered, live,
    relativeURL, wsURL, authHeaders, setConn, showMessage, restoreSettings, remember, restoreSelect,
  };
})();
