"""The child-process side of the PocketSphinx engine.

PocketSphinx's Python binding holds the GIL for the whole of a ``process_raw`` call (seconds for a
long utterance), which would freeze the server's event loop and every other session.  Each decoder
therefore lives in its own process and is driven over a pipe; the parent thread waiting on the pipe
releases the GIL.  Messages are small tuples; audio travels as 16-bit PCM bytes.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

FRAME_RATE = 100  # PocketSphinx frames per second
STREAM_PIECE_BYTES = 3200  # 0.1 s of 16 kHz s16le: the streaming front end consumes bounded pieces

# Partials only need a quick first-pass hypothesis (the final re-decodes the utterance with the full
# search): no flat-lexicon or best-path passes and narrower beams cut the streaming cost about threefold;
# scoring the acoustic model on every other frame (ds) with the 2 best Gaussians (topn) cuts it by
# another ~30 % with the same first-pass WER on the reference clips.  Every live session pays this on
# top of its final pass, so it decides how many sessions a core carries.
PARTIAL_SEARCH = {
    "fwdflat": False,
    "bestpath": False,
    "beam": 1e-40,
    "wbeam": 1e-30,
    "pbeam": 1e-40,
    "maxhmmpf": 3000,
    "ds": 2,
    "topn": 2,
}

# The whole-utterance pass (offline calls and live finals) keeps PocketSphinx's default beams but caps
# the active HMMs per frame at 6000 instead of 30000: on the English reference clips that is ~13 % less
# CPU for the same corpus WER (whole clips and VAD utterances alike), and it is what a final waits for.
FULL_SEARCH = {"maxhmmpf": 6000}

SILENT_RMS = 3.0  # s16 units (-80 dBFS): below this an utterance holds no speech at all

RawWord = tuple[str, float, float, float | None]  # word, start s, end s, probability


def serve(conn: Connection | _Duplex, model_dir: str, eager: bool = False) -> None:
    """Serve decode requests until the pipe closes or ``("close",)`` arrives.

    ``eager``: also load the partial-decoding decoder before saying ready (a spare that a live stream
    will probably lease), instead of in the first live step that needs it.
    """
    from pocketsphinx import Decoder

    def make_decoder(**search: Any) -> Any:
        return Decoder(
            hmm=f"{model_dir}/en-us",
            lm=f"{model_dir}/en-us.lm.bin",
            dict=f"{model_dir}/cmudict-en-us.dict",
            samprate=16000,
            loglevel="FATAL",
            **search,
        )

    worker = _Worker(make_decoder(**FULL_SEARCH), lambda: make_decoder(**PARTIAL_SEARCH))
    if eager:
        worker.partial_decoder  # noqa: B018 - loads it
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        command, *args = message
        if command == "close":
            return
        try:
            reply: Any = getattr(worker, command)(*args)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", reply))


class _Worker:
    def __init__(self, decoder: Any, make_partial_decoder: Any) -> None:
        self.decoder = decoder
        self._make_partial_decoder = make_partial_decoder
        self._partial_decoder: Any = None
        self.streaming = False
        self._before_gap = ""  # partial text decoded before audio was skipped (stream_skip)

    def decode(self, pcm: bytes) -> list[RawWord]:
        """One utterance from a clean front-end state, so the result depends only on ``pcm``."""
        self._abort()
        return self._decode_full(pcm)

    @property
    def partial_decoder(self) -> Any:
        if self._partial_decoder is None:  # created on first use: offline-only workers never need it
            self._partial_decoder = self._make_partial_decoder()
        return self._partial_decoder

    def stream_start(self, cmn: str | None) -> None:
        self._abort()
        self.partial_decoder.reinit_feat()
        if cmn:
            self.partial_decoder.set_cmn(cmn)
        self.partial_decoder.start_utt()
        self.streaming = True
        self._before_gap = ""

    def stream_accept(self, pcm: bytes) -> str:
        if not self.streaming:
            raise RuntimeError("stream_accept before stream_start")
        for start in range(0, len(pcm), STREAM_PIECE_BYTES):
            self.partial_decoder.process_raw(pcm[start : start + STREAM_PIECE_BYTES], False, False)
        return self._text()

    def stream_skip(self) -> str:
        """Audio was skipped (the session fell behind): keep the text so far, decode on after the gap.

        A fresh search (same running cepstral mean) rather than feeding audio that jumps in time.
        """
        if not self.streaming:
            raise RuntimeError("stream_skip before stream_start")
        text = self._text()
        self.partial_decoder.end_utt()
        self.partial_decoder.start_utt()
        self._before_gap = text
        return text

    def _text(self) -> str:
        hyp = self.partial_decoder.hyp()
        current = hyp.hypstr if hyp is not None else ""
        return f"{self._before_gap} {current}".strip()

    def stream_end(self) -> str:
        """End the utterance's partial decoding; returns the cepstral mean to go on from.

        The final is a separate full pass (``decode``) over the utterance's audio, which the parent keeps.
        """
        if not self.streaming:
            return ""
        self.partial_decoder.end_utt()
        self.streaming = False
        return self.partial_decoder.get_cmn(False)

    def stream_abort(self) -> None:
        self._abort()

    def _abort(self) -> None:
        if self.streaming:
            self.partial_decoder.end_utt()
            self.streaming = False

    def _decode_full(self, pcm: bytes) -> list[RawWord]:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if samples.size == 0 or float(np.sqrt(np.mean(np.square(samples)))) < SILENT_RMS:
            # Whole-utterance normalisation of digital silence amplifies nothing into phantom words.
            return []
        decoder = self.decoder
        decoder.reinit_feat()
        decoder.start_utt()
        try:
            decoder.process_raw(pcm, False, True)
        finally:
            decoder.end_utt()
        if decoder.hyp() is None:
            return []
        logmath = decoder.get_logmath()
        words: list[RawWord] = []
        for seg in decoder.seg():
            token = seg.word
            if token.startswith(("<", "[", "+")):
                continue  # <s>, </s>, <sil>, [NOISE], ++fillers++
            try:
                probability: float | None = float(min(1.0, logmath.exp(seg.prob)))
            except (OverflowError, ValueError):
                probability = None
            words.append((token, seg.start_frame / FRAME_RATE, (seg.end_frame + 1) / FRAME_RATE, probability))
        return words


def main() -> None:
    """``python -m hearline.engines.pocketsphinx.worker READ_FD WRITE_FD MODEL_DIR [eager]`` (started by the engine).

    A plain subprocess rather than ``multiprocessing``: spawn/forkserver re-import the parent's
    ``__main__``, which breaks under embedding servers and interactive use.
    """
    read_fd, write_fd, model_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    conn_in = Connection(read_fd, writable=False)
    conn_out = Connection(write_fd, readable=False)
    serve(_Duplex(conn_in, conn_out), model_dir, eager=sys.argv[4:5] == ["eager"])


class _Duplex:
    def __init__(self, incoming: Connection, outgoing: Connection) -> None:
        self.recv = incoming.recv
        self.send = outgoing.send


if __name__ == "__main__":
    main()
