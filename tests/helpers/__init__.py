"""What the tests (and the bench scripts) share, one module per concern.

corpus: the speech clips of ``../shared/audio`` and WER; server: real uvicorn servers on loopback and waiting for
spawned ones; polling: ``eventually`` / ``until``; pulse: a private PulseAudio daemon; sse: an ``/events`` reader;
metrics: ``/metrics`` parsed; subtitles: SRT read back; leaks: what a server has left running; media: audio as
browsers send it and non-speech probes; doors: the live doors' client sides; browser: headless Chromium;
fileserver: a loopback hub; tiny_whisper, tiny_ggml, tiny_sherpa: random-weight models where real weights can't
be had.
"""
