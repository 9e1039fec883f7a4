/* AudioWorklet for PCM mode (`hearline serve --pcm-input`): microphone -> 16 kHz mono s16le chunks.
 *
 * Runs at the AudioContext's own rate (44.1/48 kHz; not every browser can connect a microphone to a
 * context at another rate): a windowed-sinc low-pass at 7 kHz against aliasing, then linear interpolation
 * at the 16 kHz output instants, so any input rate works.  Posts ~100 ms Int16 buffers (transferred, not
 * copied); the message "flush" posts what is left.
 */
"use strict";

const TARGET_RATE = 16000;
const CUTOFF_HZ = 7000;
const TAPS = 63;
const CHUNK_SAMPLES = 1600;

function lowPass(rate) {
  const fc = CUTOFF_HZ / rate;
  const mid = (TAPS - 1) / 2;
  const h = new Float32Array(TAPS);
  let sum = 0;
  for (let n = 0; n < TAPS; n++) {
    const x = n - mid;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * n) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * n) / (TAPS - 1));
    h[n] = sinc * blackman;
    sum += h[n];
  }
  for (let n = 0; n < TAPS; n++) h[n] /= sum;
  return h;
}

class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / TARGET_RATE; // input samples per output sample; sampleRate is a worklet global
    this.h = lowPass(sampleRate);
    this.hist = new Float32Array(TAPS);
    this.pos = 0; // ring position of the next input sample
    this.index = 0; // input samples seen
    this.next = 0; // input-sample instant of the next output sample
    this.prev = 0; // previous filtered input sample
    this.buf = new Int16Array(CHUNK_SAMPLES);
    this.n = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    const { h, hist } = this;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      hist[this.pos] = x / channels;
      this.pos = (this.pos + 1) % TAPS;
      let y = 0;
      for (let k = 0, j = this.pos; k < TAPS; k++, j = j + 1 === TAPS ? 0 : j + 1) y += h[k] * hist[j];
      while (this.next <= this.index) {
        const frac = this.next - (this.index - 1);
        const v = Math.max(-1, Math.min(1, this.prev + (y - this.prev) * frac));
        this.buf[this.n++] = v < 0 ? v * 32768 : v * 32767;
        if (this.n === CHUNK_SAMPLES) this.flush();
        this.next += this.ratio;
      }
      this.prev = y;
      this.index += 1;
    }
    return true;
  }

  flush() {
    if (this.n === 0) return;
    const out = this.buf.slice(0, this.n);
    this.n = 0;
    this.port.postMessage(out.buffer, [out.buffer]);
  }
}

registerProcessor("pcm16k", Pcm16kProcessor);
