/* The model, language and translation menus, fed by the server's own lists; a missing endpoint leaves
 * the defaults in place. */
"use strict";

(function () {
  const { ui, relativeURL, authHeaders, restoreSelect, renderRecordButton } = window.HearlinePage;

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

  Object.assign(window.HearlinePage, { loadLanguages, loadModels });
})();
