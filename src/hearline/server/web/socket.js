/* The /asr session: start, stop, server messages, and reconnecting with backoff while recording. */
"use strict";

(function () {
  const {
    ui, live, transcript, wsURL, setConn, showMessage, renderBlock, renderLag, setState, explainInsecure,
    explainMicError, openMicrophone, closeMicrophone, startCapture, stopCapture,
  } = window.HearlinePage;

  const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 3000];
  const FINISH_WAIT_MS = 120000; // how long Stop waits for the server's ready_to_stop

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

  Object.assign(window.HearlinePage, { start, stop });
})();
