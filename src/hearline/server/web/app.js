/* Hearline live page: wires the controls to the functions the other page scripts put on HearlinePage. */
"use strict";

(function () {
  const {
    $, ui, live, transcript, rendered, remember, restoreSettings, showMessage, explainInsecure,
    renderRecordButton, loadModels, loadLanguages, start, stop, upload, exportAs, copyText,
  } = window.HearlinePage;

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
