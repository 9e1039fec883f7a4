/* File upload: POST v1/audio/transcriptions (verbose_json) with progress; the result is a new block. */
"use strict";

(function () {
  const { ui, transcript, relativeURL, authHeaders, renderBlock } = window.HearlinePage;

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

  Object.assign(window.HearlinePage, { upload });
})();
