/* Transcript model shared by the pages: blocks of timed lines, /asr updates in, text/SRT/VTT/JSON out.
 *
 * A block is one source of text: one /asr socket session (a reconnect starts a new block, so text already
 * shown is never replaced by the new session's lines) or one transcribed file.  Line times are seconds on
 * the block's own clock; `offset` places the block on the page's timeline for exports.
 */
"use strict";

(function (global) {
  /** "H:MM:SS.cc" (WhisperLiveKit) or a number of seconds -> seconds. */
  function parseTime(value) {
    if (typeof value === "number") return value;
    if (typeof value !== "string" || !value) return 0;
    let seconds = 0;
    for (const part of value.split(":")) seconds = seconds * 60 + (parseFloat(part) || 0);
    return seconds;
  }

  function pad(n, width) {
    return String(n).padStart(width, "0");
  }

  /** seconds -> "HH:MM:SS<sep>mmm" (SRT uses ",", VTT uses "."). */
  function clock(seconds, sep) {
    const ms = Math.max(0, Math.round(seconds * 1000));
    const h = Math.floor(ms / 3600000);
    const m = Math.floor(ms / 60000) % 60;
    const s = Math.floor(ms / 1000) % 60;
    return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${sep}${pad(ms % 1000, 3)}`;
  }

  /** seconds -> "M:SS" or "H:MM:SS" for display. */
  function shortClock(seconds) {
    const total = Math.max(0, Math.floor(seconds));
    const h = Math.floor(total / 3600);
    const m = Math.floor(total / 60) % 60;
    const s = total % 60;
    return h ? `${h}:${pad(m, 2)}:${pad(s, 2)}` : `${m}:${pad(s, 2)}`;
  }

  let nextBlockId = 1;

  class Block {
    constructor(kind, label, offset) {
      this.id = nextBlockId++;
      this.kind = kind; // "mic" | "file" | "captions"
      this.label = label;
      this.offset = offset || 0;
      this.lines = [];
      this.partial = "";
      this.partialTranslation = "";
      this.lag = 0;
    }

    /** Fold in one full-mode /asr update (PROTOCOLS.md §1). */
    applyUpdate(msg) {
      if (Array.isArray(msg.lines)) {
        this.lines = msg.lines.map((line) => ({
          start: parseTime(line.start),
          end: parseTime(line.end),
          text: (line.text || "").trim(),
          speaker: typeof line.speaker === "number" ? line.speaker : 1,
          language: line.detected_language || "",
          translation: (line.translation || "").trim(),
        }));
      }
      this.partial = [msg.buffer_diarization, msg.buffer_transcription]
        .filter((s) => typeof s === "string" && s.trim())
        .map((s) => s.trim())
        .join(" ");
      this.partialTranslation = (msg.buffer_translation || "").trim();
      this.lag = Number(msg.remaining_time_transcription) || 0;
    }

    /** Keep what the user saw: an unconfirmed tail becomes an ordinary line when its session is gone. */
    freeze() {
      if (this.partial) {
        const last = this.lines.length ? this.lines[this.lines.length - 1].end : 0;
        this.lines.push({ start: last, end: last, text: this.partial, speaker: 1, language: "", translation: "" });
      }
      this.partial = "";
      this.partialTranslation = "";
      this.lag = 0;
    }

    /** Lines with text (silence markers dropped). */
    spoken() {
      return this.lines.filter((line) => line.text && line.speaker !== -2);
    }

    end() {
      const ends = this.lines.map((line) => line.end);
      return this.offset + (ends.length ? Math.max(...ends) : 0);
    }

    speakers() {
      return new Set(this.lines.filter((l) => l.speaker > 0).map((l) => l.speaker));
    }
  }

  class Transcript {
    constructor() {
      this.blocks = [];
    }

    add(kind, label, offset) {
      const block = new Block(kind, label, offset === undefined ? this.end() : offset);
      this.blocks.push(block);
      return block;
    }

    end() {
      return this.blocks.reduce((acc, b) => Math.max(acc, b.end()), 0);
    }

    clear() {
      this.blocks = [];
    }

    isEmpty() {
      return !this.blocks.some((b) => b.spoken().length || b.partial);
    }

    cues() {
      const cues = [];
      for (const block of this.blocks) {
        for (const line of block.spoken()) {
          const start = block.offset + line.start;
          const end = Math.max(start + 0.2, block.offset + line.end);
          cues.push({ start, end, text: line.text, translation: line.translation });
        }
      }
      return cues;
    }

    toText() {
      return this.blocks
        .map((b) => b.spoken().map((l) => l.text).join("\n"))
        .filter((s) => s)
        .join("\n\n") + "\n";
    }

    toSRT() {
      return this.cues()
        .map((c, i) => `${i + 1}\n${clock(c.start, ",")} --> ${clock(c.end, ",")}\n${c.text}` +
          (c.translation ? `\n${c.translation}` : "") + "\n")
        .join("\n");
    }

    toVTT() {
      const body = this.cues()
        .map((c) => `${clock(c.start, ".")} --> ${clock(c.end, ".")}\n${c.text}` +
          (c.translation ? `\n${c.translation}` : "") + "\n")
        .join("\n");
      return "WEBVTT\n\n" + body;
    }

    toJSON() {
      return {
        created: new Date().toISOString(),
        text: this.blocks.map((b) => b.spoken().map((l) => l.text).join(" ")).filter((s) => s).join("\n"),
        blocks: this.blocks.map((b) => ({
          source: b.kind,
          label: b.label,
          offset: Math.round(b.offset * 1000) / 1000,
          lines: b.spoken().map((l) => {
            const out = { start: l.start, end: l.end, text: l.text, speaker: l.speaker };
            if (l.language) out.language = l.language;
            if (l.translation) out.translation = l.translation;
            return out;
          }),
        })),
      };
    }
  }

  global.HearlineTranscript = { Transcript, Block, parseTime, clock, shortClock };
})(window);
