/* Transcript rendering (blocks of lines, updated in place), the lag readout and the record button. */
"use strict";

(function () {
  const { shortClock } = window.HearlineTranscript;
  const { ui, transcript, rendered, live } = window.HearlinePage;

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

  Object.assign(window.HearlinePage, { renderBlock, renderLag, renderRecordButton, setState });
})();
