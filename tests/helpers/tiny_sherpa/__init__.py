"""Tiny random-weight sherpa-onnx models, written in the real on-disk format (one module per model family).

sherpa-onnx picks a model's behaviour from the ONNX ``metadata_props`` and the input/output layout
of each graph (see ``sherpa-onnx/csrc/offline-sense-voice-model.cc``,
``online-zipformer2-transducer-model.cc``, ``offline-paraformer-model.cc``,
``offline-transducer-model.cc``, ``offline-whisper-model.cc``).  These builders write graphs with
exactly that metadata and those tensors but only a few small matrices inside, so the engine's real
loading and decoding code runs in milliseconds.  The text they produce is noise; tests assert the
plumbing (files, options, timestamps, streaming), never the words.
"""

from tests.helpers.tiny_sherpa.graphs import FEATURE_DIM, OPSET, write_tokens
from tests.helpers.tiny_sherpa.paraformer import build_paraformer, paraformer_tokens
from tests.helpers.tiny_sherpa.sense_voice import SENSE_VOICE_SPECIALS, build_sense_voice, sense_voice_tokens
from tests.helpers.tiny_sherpa.transducer import build_offline_transducer, build_streaming_zipformer2, transducer_tokens
from tests.helpers.tiny_sherpa.whisper import WHISPER_LANGUAGES, build_whisper

__all__ = [
    "FEATURE_DIM",
    "OPSET",
    "SENSE_VOICE_SPECIALS",
    "WHISPER_LANGUAGES",
    "build_offline_transducer",
    "build_paraformer",
    "build_sense_voice",
    "build_streaming_zipformer2",
    "build_whisper",
    "paraformer_tokens",
    "sense_voice_tokens",
    "transducer_tokens",
    "write_tokens",
]
