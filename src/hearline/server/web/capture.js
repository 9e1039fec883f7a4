/* The microphone: permission errors explained, the level meter, and the audio sent (MediaRecorder
 * WebM/Ogg Opus, or 16 kHz PCM from an AudioWorklet). */
"use strict";

(function () {
  const { ui, live, relativeURL } = window.HearlinePage;

  const TIMESLICE_MS = 250;

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

  Object.assign(window.HearlinePage, {
    explainInsecure, explainMicError, openMicrophone, closeMicrophone, startCapture, stopCapture,
  });
})();
