/* Export: copy the transcript, or download it as .txt, .srt, .vtt or .json. */
"use strict";

(function () {
  const { ui, transcript } = window.HearlinePage;

  function stamp() {
    const d = new Date();
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
  }

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

  Object.assign(window.HearlinePage, { exportAs, copyText });
})();
