"""Tiny random-weight sherpa-onnx models, written in the real on-disk format.

sherpa-onnx picks a model's behaviour from the ONNX ``metadata_props`` and the input/output layout
of each graph (see ``sherpa-onnx/csrc/offline-sense-voice-model.cc``,
``online-zipformer2-transducer-model.cc``, ``offline-paraformer-model.cc``,
``offline-transducer-model.cc``, ``offline-whisper-model.cc``).  These builders write graphs with
exactly that metadata and those tensors but only a few small matrices inside, so the engine's real
loading and decoding code runs in milliseconds.  The text they produce is noise; tests assert the
plumbing (files, options, timestamps, streaming), never the words.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
FEATURE_DIM = 80

# Token inventory shared by the CTC-style models.  Word pieces use the sentencepiece "▁" marker.
_WORDS = ["▁the", "▁a", "▁and", "▁of", "▁to", "▁in", "▁it", "▁is", "s", "ed", "ing", "▁we", "▁you"]


def _save(graph: onnx.GraphProto, path: Path, meta: dict[str, object]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by any onnxruntime >= 1.14
    for key, value in meta.items():
        text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = text
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name=name)


def write_tokens(path: Path, tokens: list[str]) -> Path:
    """``tokens.txt``: one ``symbol id`` per line, the format every sherpa-onnx model uses."""
    path.write_text("".join(f"{tok} {i}\n" for i, tok in enumerate(tokens)), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- sense_voice


SENSE_VOICE_SPECIALS = [
    "<unk>", "<s>", "</s>",
    "<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>",
    "<|Speech|>", "<|BGM|>", "<|withitn|>", "<|woitn|>",
]  # fmt: skip


def sense_voice_tokens() -> list[str]:
    return ["<blank>", *SENSE_VOICE_SPECIALS[1:], *_WORDS]


def build_sense_voice(
    directory: Path, *, seed: int = 0, int8_name: bool = True, omit_meta: tuple[str, ...] = ()
) -> Path:
    """A SenseVoice-shaped CTC model: inputs x, x_length, language, text_norm; output logits (N, T+4, V).

    The four prefix frames come from the language / emotion / event / text-norm "queries", as in the
    real model, so the result's ``lang`` and the with/without-ITN choice are visible in the output.
    """
    rng = np.random.default_rng(seed)
    tokens = sense_voice_tokens()
    vocab = len(tokens)
    index = {t: i for i, t in enumerate(tokens)}
    window, shift = 7, 6
    in_dim = FEATURE_DIM * window

    # Prefix embedding table: row k holds the logits of prefix query k (one-hot, large).
    lang_ids = {"auto": 0, "zh": 3, "en": 4, "yue": 5, "ja": 6, "ko": 7}
    prefix = np.full((32, vocab), -10.0, dtype=np.float32)
    for code, row in lang_ids.items():
        prefix[row, index["<|en|>" if code == "auto" else f"<|{code}|>"]] = 10.0
    prefix[1, index["<|NEUTRAL|>"]] = 10.0
    prefix[2, index["<|Speech|>"]] = 10.0
    prefix[14, index["<|withitn|>"]] = 10.0
    prefix[15, index["<|woitn|>"]] = 10.0
    weight = (rng.standard_normal((in_dim, vocab)) * 0.02).astype(np.float32)
    bias = np.zeros(vocab, dtype=np.float32)
    bias[0] = 1.0  # mostly blank, with a token now and then
    bias[: len(SENSE_VOICE_SPECIALS)] -= 5.0  # body frames emit word pieces, not specials
    bias[0] = 1.0

    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["body"]),  # (N, T, V)
        helper.make_node("Concat", ["language", "one_two", "text_norm"], ["query_ids"], axis=0),
        helper.make_node("Gather", ["prefix", "query_ids"], ["query"], axis=0),  # (4, V)
        helper.make_node("Unsqueeze", ["query", "axes0"], ["query3"]),  # (1, 4, V)
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Slice", ["x_shape", "zero1", "one1"], ["batch"]),
        helper.make_node("Concat", ["batch", "one1", "one1"], ["tile_reps"], axis=0),
        helper.make_node("Tile", ["query3", "tile_reps"], ["query_b"]),
        helper.make_node("Concat", ["query_b", "body"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_sense_voice",
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", in_dim]),
            helper.make_tensor_value_info("x_length", TensorProto.INT32, ["N"]),
            helper.make_tensor_value_info("language", TensorProto.INT32, ["N"]),
            helper.make_tensor_value_info("text_norm", TensorProto.INT32, ["N"]),
        ],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "T4", vocab])],
        initializer=[
            _init("W", weight),
            _init("b", bias),
            _init("prefix", prefix),
            _init("one_two", np.array([1, 2], dtype=np.int32)),
            _init("axes0", np.array([0], dtype=np.int64)),
            _init("zero1", np.array([0], dtype=np.int64)),
            _init("one1", np.array([1], dtype=np.int64)),
        ],
    )
    meta = {
        "model_type": "sense_voice_ctc",
        "vocab_size": vocab,
        "blank_id": 0,
        "lfr_window_size": window,
        "lfr_window_shift": shift,
        "normalize_samples": 0,
        "with_itn": 14,
        "without_itn": 15,
        **{f"lang_{code}": row for code, row in lang_ids.items()},
        "neg_mean": [-8.0] * in_dim,
        "inv_stddev": [0.25] * in_dim,
        "comment": "tiny random SenseVoice for tests",
    }
    for key in omit_meta:
        meta.pop(key)
    directory.mkdir(parents=True, exist_ok=True)
    _save(graph, directory / ("model.int8.onnx" if int8_name else "model.onnx"), meta)
    write_tokens(directory / "tokens.txt", tokens)
    return directory


# ------------------------------------------------------------------------------- transducer (shared parts)


def transducer_tokens() -> list[str]:
    return ["<blk>", "<sos/eos>", "<unk>", *_WORDS]


def _decoder_graph(vocab: int, context_size: int, dim: int, rng: np.random.Generator) -> onnx.GraphProto:
    """Stateless transducer decoder: y (N, context) int64 -> decoder_out (N, dim)."""
    embed = (rng.standard_normal((vocab, dim)) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["embed", "y"], ["e"], axis=0),  # (N, C, D)
        helper.make_node("ReduceMean", ["e"], ["decoder_out"], axes=[1], keepdims=0),
    ]
    return helper.make_graph(
        nodes,
        "tiny_decoder",
        inputs=[helper.make_tensor_value_info("y", TensorProto.INT64, ["N", context_size])],
        outputs=[helper.make_tensor_value_info("decoder_out", TensorProto.FLOAT, ["N", dim])],
        initializer=[_init("embed", embed)],
    )


def _joiner_graph(vocab: int, dim: int, rng: np.random.Generator) -> onnx.GraphProto:
    """encoder_out (N, dim) + decoder_out (N, dim) -> logit (N, vocab), biased towards blank."""
    weight = (rng.standard_normal((dim, vocab)) * 0.5).astype(np.float32)
    bias = np.zeros(vocab, dtype=np.float32)
    bias[0] = 1.5
    bias[1:3] = -10.0  # never <sos/eos>, <unk>
    nodes = [
        helper.make_node("Add", ["encoder_out", "decoder_out"], ["s"]),
        helper.make_node("Tanh", ["s"], ["h"]),
        helper.make_node("MatMul", ["h", "W"], ["hw"]),
        helper.make_node("Add", ["hw", "b"], ["logit"]),
    ]
    return helper.make_graph(
        nodes,
        "tiny_joiner",
        inputs=[
            helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", dim]),
            helper.make_tensor_value_info("decoder_out", TensorProto.FLOAT, ["N", dim]),
        ],
        outputs=[helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", vocab])],
        initializer=[_init("W", weight), _init("b", bias)],
    )


# ------------------------------------------------------------------------ online (streaming) zipformer2


def build_streaming_zipformer2(directory: Path, *, seed: int = 0, context_size: int = 2) -> Path:
    """A streaming Zipformer2 transducer with one encoder stack of one layer.

    The encoder keeps the full cached-state interface sherpa-onnx drives (6 tensors per layer plus the
    embed cache and processed-lens), passing states through unchanged; its "acoustics" are one matrix
    applied to stacked frames (4x subsampling, like the real model's output frame rate).
    """
    rng = np.random.default_rng(seed)
    tokens = transducer_tokens()
    vocab = len(tokens)
    dim = 16
    chunk = 16  # decode_chunk_len: feature frames consumed per call
    pad = 7
    T = chunk + pad
    enc_dim, heads, qdim, vdim, kernel, left = 8, 1, 4, 4, 3, 8
    embed_dim = (((FEATURE_DIM - 1) // 2) - 1) // 2
    state_shapes: list[tuple[str, TensorProto.DataType, list[int | str]]] = [
        ("cached_key_0", TensorProto.FLOAT, [left, "N", heads * qdim]),
        ("cached_nonlin_attn_0", TensorProto.FLOAT, [1, "N", left, 3 * enc_dim // 4]),
        ("cached_val1_0", TensorProto.FLOAT, [left, "N", heads * vdim]),
        ("cached_val2_0", TensorProto.FLOAT, [left, "N", heads * vdim]),
        ("cached_conv1_0", TensorProto.FLOAT, ["N", enc_dim, kernel // 2]),
        ("cached_conv2_0", TensorProto.FLOAT, ["N", enc_dim, kernel // 2]),
        ("embed_states", TensorProto.FLOAT, ["N", 128, 3, embed_dim]),
        ("processed_lens", TensorProto.INT64, ["N"]),
    ]
    weight = (rng.standard_normal((4 * FEATURE_DIM, dim)) * 0.05).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "start", "stop", "axis1"], ["x_chunk"]),  # (N, chunk, 80)
        helper.make_node("Reshape", ["x_chunk", "stacked_shape"], ["stacked"]),  # (N, chunk/4, 320)
        helper.make_node("MatMul", ["stacked", "W"], ["encoder_out"]),
    ]
    nodes += [helper.make_node("Identity", [name], [f"new_{name}"]) for name, _, _ in state_shapes]
    graph = helper.make_graph(
        nodes,
        "tiny_zipformer2_encoder",
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, FEATURE_DIM]),
            *(helper.make_tensor_value_info(n, t, s) for n, t, s in state_shapes),
        ],
        outputs=[
            helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", chunk // 4, dim]),
            *(helper.make_tensor_value_info(f"new_{n}", t, s) for n, t, s in state_shapes),
        ],
        initializer=[
            _init("W", weight),
            _init("start", np.array([0], dtype=np.int64)),
            _init("stop", np.array([chunk], dtype=np.int64)),
            _init("axis1", np.array([1], dtype=np.int64)),
            _init("stacked_shape", np.array([0, chunk // 4, 4 * FEATURE_DIM], dtype=np.int64)),
        ],
    )
    directory.mkdir(parents=True, exist_ok=True)
    _save(
        graph,
        directory / "encoder.onnx",
        {
            "model_type": "zipformer2",
            "version": "1",
            "model_author": "hearline tests",
            "comment": "tiny random streaming zipformer2",
            "decode_chunk_len": chunk,
            "T": T,
            "num_encoder_layers": [1],
            "encoder_dims": [enc_dim],
            "cnn_module_kernels": [kernel],
            "left_context_len": [left],
            "query_head_dims": [qdim],
            "value_head_dims": [vdim],
            "num_heads": [heads],
        },
    )
    _save(
        _decoder_graph(vocab, context_size, dim, rng),
        directory / "decoder.onnx",
        {"context_size": context_size, "vocab_size": vocab},
    )
    _save(_joiner_graph(vocab, dim, rng), directory / "joiner.onnx", {"joiner_dim": dim})
    write_tokens(directory / "tokens.txt", tokens)
    return directory


# ---------------------------------------------------------------------------------- offline transducer


def build_offline_transducer(directory: Path, *, seed: int = 0, context_size: int = 2) -> Path:
    """A non-streaming transducer (icefall/Zipformer layout): encoder (x, x_lens) -> (encoder_out, lens)."""
    rng = np.random.default_rng(seed)
    tokens = transducer_tokens()
    vocab = len(tokens)
    dim = 16
    weight = (rng.standard_normal((FEATURE_DIM, dim)) * 0.05).astype(np.float32)
    nodes = [
        # 4x subsampling: every 4th frame, projected
        helper.make_node("Slice", ["x", "start", "stop", "axis1", "step4"], ["x_sub"]),
        helper.make_node("MatMul", ["x_sub", "W"], ["encoder_out"]),
        helper.make_node("Add", ["x_lens", "three"], ["lens_plus"]),
        helper.make_node("Div", ["lens_plus", "four"], ["encoder_out_lens"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_offline_encoder",
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", FEATURE_DIM]),
            helper.make_tensor_value_info("x_lens", TensorProto.INT64, ["N"]),
        ],
        outputs=[
            helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", "T4", dim]),
            helper.make_tensor_value_info("encoder_out_lens", TensorProto.INT64, ["N"]),
        ],
        initializer=[
            _init("W", weight),
            _init("start", np.array([0], dtype=np.int64)),
            _init("stop", np.array([2**62], dtype=np.int64)),
            _init("axis1", np.array([1], dtype=np.int64)),
            _init("step4", np.array([4], dtype=np.int64)),
            _init("three", np.array(3, dtype=np.int64)),
            _init("four", np.array(4, dtype=np.int64)),
        ],
    )
    directory.mkdir(parents=True, exist_ok=True)
    _save(
        graph,
        directory / "encoder-epoch-99-avg-1.int8.onnx",
        {"model_type": "zipformer", "version": "1", "comment": "tiny random offline transducer"},
    )
    _save(
        _decoder_graph(vocab, context_size, dim, rng),
        directory / "decoder-epoch-99-avg-1.onnx",
        {"context_size": context_size, "vocab_size": vocab},
    )
    _save(_joiner_graph(vocab, dim, rng), directory / "joiner-epoch-99-avg-1.int8.onnx", {"joiner_dim": dim})
    write_tokens(directory / "tokens.txt", tokens)
    return directory


# ----------------------------------------------------------------------------------------- paraformer


def paraformer_tokens() -> list[str]:
    return ["<blank>", "<s>", "</s>", "你", "好", "我", "们", "the", "and", "hel@@", "lo", "wor@@", "ld", "<unk>"]


def build_paraformer(directory: Path, *, seed: int = 0, timestamps: bool = False) -> Path:
    """A Paraformer-shaped model: (speech, speech_lengths) -> (logits (N, U, V), token_num).

    With ``timestamps`` the graph also outputs ``us_alphas`` and ``us_cif_peak`` (N, 9 * (U + 1)) like
    FunASR's timestamp-enabled exports: sherpa-onnx reads a token start at every peak (20 ms per
    upsampled frame) and keeps them when there is one peak more than tokens, so here token k starts
    at k * 180 ms, the rate the tokens are emitted at.
    """
    rng = np.random.default_rng(seed)
    tokens = paraformer_tokens()
    vocab = len(tokens)
    window, shift = 7, 6
    in_dim = FEATURE_DIM * window
    weight = (rng.standard_normal((in_dim, vocab)) * 0.05).astype(np.float32)
    bias = np.zeros(vocab, dtype=np.float32)
    bias[:3] = -20.0  # no blank/<s>; </s> only ends the output when the model means it
    bias[-1] = -20.0
    nodes = [
        # one output token per 3 LFR frames, like the CIF predictor's rate
        helper.make_node("Slice", ["speech", "start", "stop", "axis1", "step3"], ["x_sub"]),
        helper.make_node("MatMul", ["x_sub", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Shape", ["logits"], ["logits_shape"]),
        helper.make_node("Gather", ["logits_shape", "one"], ["u"], axis=0),
        helper.make_node("Cast", ["u"], ["u32"], to=TensorProto.INT32),
        helper.make_node("Expand", ["u32", "batch_shape"], ["token_num"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_paraformer",
        inputs=[
            helper.make_tensor_value_info("speech", TensorProto.FLOAT, ["N", "T", in_dim]),
            helper.make_tensor_value_info("speech_lengths", TensorProto.INT32, ["N"]),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "U", vocab]),
            helper.make_tensor_value_info("token_num", TensorProto.INT32, [1]),
        ],
        initializer=[
            _init("W", weight),
            _init("b", bias),
            _init("start", np.array([0], dtype=np.int64)),
            _init("stop", np.array([2**62], dtype=np.int64)),
            _init("axis1", np.array([1], dtype=np.int64)),
            _init("step3", np.array([3], dtype=np.int64)),
            _init("one", np.array(1, dtype=np.int64)),
            _init("batch_shape", np.array([1], dtype=np.int64)),
        ],
    )
    if timestamps:
        _add_cif_peaks(graph)
    meta = {
        "model_type": "paraformer",
        "vocab_size": vocab,
        "lfr_window_size": window,
        "lfr_window_shift": shift,
        "neg_mean": [-8.0] * in_dim,
        "inv_stddev": [0.25] * in_dim,
        "comment": "tiny random Paraformer for tests",
    }
    directory.mkdir(parents=True, exist_ok=True)
    _save(graph, directory / "model.int8.onnx", meta)
    write_tokens(directory / "tokens.txt", tokens)
    return directory


def _add_cif_peaks(graph: onnx.GraphProto) -> None:
    """Outputs ``us_alphas``/``us_cif_peak`` (N, 9 * (U + 1)): a 1.0 peak every 9 frames, U + 1 peaks."""
    graph.node.extend(
        [
            helper.make_node("Slice", ["logits", "start", "one_1d", "axis2"], ["first_logit"]),  # (N, U, 1)
            helper.make_node("Mul", ["first_logit", "zero_f"], ["zeros_u"]),
            helper.make_node("Add", ["zeros_u", "one_f"], ["ones_u"]),
            helper.make_node("Pad", ["ones_u", "pad_one_more", "one_f"], ["peaks_u1"]),  # (N, U + 1, 1)
            helper.make_node("Mul", ["peaks_u1", "zero_f"], ["zeros_u1"]),
            helper.make_node("Concat", ["peaks_u1", *["zeros_u1"] * 8], ["framed"], axis=2),  # (N, U + 1, 9)
            helper.make_node("Reshape", ["framed", "flat_shape"], ["us_cif_peak"]),
            helper.make_node("Mul", ["us_cif_peak", "half_f"], ["us_alphas"]),
        ]
    )
    graph.initializer.extend(
        [
            _init("one_1d", np.array([1], dtype=np.int64)),
            _init("axis2", np.array([2], dtype=np.int64)),
            _init("zero_f", np.array(0.0, dtype=np.float32)),
            _init("one_f", np.array(1.0, dtype=np.float32)),
            _init("half_f", np.array(0.5, dtype=np.float32)),
            _init("pad_one_more", np.array([0, 0, 0, 0, 1, 0], dtype=np.int64)),
            _init("flat_shape", np.array([0, -1], dtype=np.int64)),
        ]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info("us_alphas", TensorProto.FLOAT, ["N", "U9"]),
            helper.make_tensor_value_info("us_cif_peak", TensorProto.FLOAT, ["N", "U9"]),
        ]
    )


# -------------------------------------------------------------------------------------------- whisper


WHISPER_LANGUAGES = ("en", "zh", "de")


def build_whisper(
    directory: Path, *, seed: int = 0, multilingual: bool = True, prefix: str = "tiny", attention: bool = False
) -> Path:
    """A Whisper model in sherpa-onnx's export layout (``<prefix>-encoder.onnx``, ``<prefix>-decoder.onnx``).

    Encoder: mel (N, n_mels, T) -> n_layer_cross_k, n_layer_cross_v (L, N, T/2, D).  Decoder: tokens,
    self-attention KV caches, cross K/V and offset -> logits (N, n, V) and the updated caches.  The
    special-token ids live in the encoder metadata exactly as sherpa-onnx's export script writes them,
    only renumbered for a 20-token text vocabulary.  With ``attention`` the decoder also outputs
    ``cross_attention_weights`` (N, heads, n, T/2), as ``export-onnx-with-attention.py`` does, which
    sherpa-onnx aligns with DTW into token timestamps.
    """
    rng = np.random.default_rng(seed)
    text = ["▁the", "▁a", "▁and", "▁of", "▁to", "▁in", "▁it", "▁is", "s", "ed", "ing", "▁we"]
    text += [f"▁w{i}" for i in range(20 - len(text))]
    n_text = len(text)
    eot, sot = n_text, n_text + 1
    languages = WHISPER_LANGUAGES if multilingual else ()
    lang_ids = [sot + 1 + i for i in range(len(languages))]
    translate = sot + 1 + len(languages)
    transcribe = translate + 1
    no_speech = transcribe + 1
    no_timestamps = no_speech + 1
    vocab = no_timestamps + 1 + 1501  # timestamp tokens 0.00 .. 30.00 s
    layers, dim, text_ctx, n_mels = 1, 16, 64, 80

    w_k = (rng.standard_normal((n_mels, dim)) * 0.05).astype(np.float32)
    w_v = (rng.standard_normal((n_mels, dim)) * 0.05).astype(np.float32)
    encoder_nodes = [
        helper.make_node("Transpose", ["mel"], ["mel_t"], perm=[0, 2, 1]),  # (N, T, n_mels)
        helper.make_node("Slice", ["mel_t", "start", "stop", "axis1", "step2"], ["mel_sub"]),
        helper.make_node("MatMul", ["mel_sub", "Wk"], ["k"]),
        helper.make_node("MatMul", ["mel_sub", "Wv"], ["v"]),
        helper.make_node("Unsqueeze", ["k", "axes0"], ["n_layer_cross_k"]),
        helper.make_node("Unsqueeze", ["v", "axes0"], ["n_layer_cross_v"]),
    ]
    encoder = helper.make_graph(
        encoder_nodes,
        "tiny_whisper_encoder",
        inputs=[helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["N", n_mels, "T"])],
        outputs=[
            helper.make_tensor_value_info("n_layer_cross_k", TensorProto.FLOAT, [layers, "N", "T2", dim]),
            helper.make_tensor_value_info("n_layer_cross_v", TensorProto.FLOAT, [layers, "N", "T2", dim]),
        ],
        initializer=[
            _init("Wk", w_k),
            _init("Wv", w_v),
            _init("start", np.array([0], dtype=np.int64)),
            _init("stop", np.array([2**62], dtype=np.int64)),
            _init("axis1", np.array([1], dtype=np.int64)),
            _init("step2", np.array([2], dtype=np.int64)),
            _init("axes0", np.array([0], dtype=np.int64)),
        ],
    )

    embed = (rng.standard_normal((vocab, dim)) * 0.5).astype(np.float32)
    w_out = (rng.standard_normal((dim, vocab)) * 0.5).astype(np.float32)
    bias = np.zeros(vocab, dtype=np.float32)
    bias[n_text:] = -8.0  # text most of the time ...
    bias[eot] = -1.0  # ... ending now and then
    bias[lang_ids] = 0.0  # language detection compares these
    cache = [layers, "N", text_ctx, dim]
    decoder_nodes = [
        helper.make_node("Gather", ["embed", "tokens"], ["e"], axis=0),  # (N, n, D)
        helper.make_node("ReduceMean", ["n_layer_cross_k"], ["audio"], axes=[0, 1, 2], keepdims=0),  # (D,)
        helper.make_node("Add", ["e", "audio"], ["h0"]),
        helper.make_node("Tanh", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "Wout"], ["hw"]),
        helper.make_node("Add", ["hw", "b"], ["logits"]),
        helper.make_node("Identity", ["in_n_layer_self_k_cache"], ["out_n_layer_self_k_cache"]),
        helper.make_node("Identity", ["in_n_layer_self_v_cache"], ["out_n_layer_self_v_cache"]),
    ]
    decoder = helper.make_graph(
        decoder_nodes,
        "tiny_whisper_decoder",
        inputs=[
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "n"]),
            helper.make_tensor_value_info("in_n_layer_self_k_cache", TensorProto.FLOAT, cache),
            helper.make_tensor_value_info("in_n_layer_self_v_cache", TensorProto.FLOAT, cache),
            helper.make_tensor_value_info("n_layer_cross_k", TensorProto.FLOAT, [layers, "N", "T2", dim]),
            helper.make_tensor_value_info("n_layer_cross_v", TensorProto.FLOAT, [layers, "N", "T2", dim]),
            helper.make_tensor_value_info("offset", TensorProto.INT64, [1]),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "n", vocab]),
            helper.make_tensor_value_info("out_n_layer_self_k_cache", TensorProto.FLOAT, cache),
            helper.make_tensor_value_info("out_n_layer_self_v_cache", TensorProto.FLOAT, cache),
        ],
        initializer=[_init("embed", embed), _init("Wout", w_out), _init("b", bias)],
    )
    if attention:
        _add_cross_attention(decoder)
    meta: dict[str, object] = {
        "model_type": f"whisper-{prefix}",
        "comment": "tiny random Whisper for tests",
        "version": "1",
        "maintainer": "hearline tests",
        "n_mels": n_mels,
        "n_audio_ctx": 1500,
        "n_audio_state": dim,
        "n_audio_head": 1,
        "n_audio_layer": layers,
        "n_vocab": vocab,
        "n_text_ctx": text_ctx,
        "n_text_state": dim,
        "n_text_head": 1,
        "n_text_layer": layers,
        "sot": sot,
        "eot": eot,
        "blank_id": 0,
        "translate": translate,
        "transcribe": transcribe,
        "no_speech": no_speech,
        "no_timestamps": no_timestamps,
        "is_multilingual": int(multilingual),
        "sot_sequence": [sot, lang_ids[0], transcribe] if multilingual else [sot],
        "sot_prev": sot - 1,
    }
    if multilingual:
        meta["all_language_tokens"] = lang_ids
        meta["all_language_codes"] = list(languages)
    directory.mkdir(parents=True, exist_ok=True)
    _save(encoder, directory / f"{prefix}-encoder.onnx", meta)
    _save(decoder, directory / f"{prefix}-decoder.onnx", {"comment": "tiny random Whisper decoder"})
    # sherpa-onnx's Whisper tokens.txt holds base64 of each token's bytes
    lines = [f"{base64.b64encode(t.replace('▁', ' ').encode()).decode()} {i}" for i, t in enumerate(text)]
    specials = {eot: "<|endoftext|>", sot: "<|startoftranscript|>"}
    lines += [f"{base64.b64encode(s.encode()).decode()} {i}" for i, s in specials.items()]
    (directory / f"{prefix}-tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def _add_cross_attention(decoder: onnx.GraphProto) -> None:
    """``cross_attention_weights`` (N, 1, n, T/2): softmax over audio frames of h . cross_k (one head)."""
    decoder.node.extend(
        [
            helper.make_node("Squeeze", ["n_layer_cross_k", "axes0_att"], ["k0"]),  # (N, T2, D)
            helper.make_node("Transpose", ["k0"], ["k0_t"], perm=[0, 2, 1]),  # (N, D, T2)
            helper.make_node("MatMul", ["h", "k0_t"], ["scores"]),  # (N, n, T2)
            helper.make_node("Softmax", ["scores"], ["weights"], axis=-1),
            helper.make_node("Unsqueeze", ["weights", "axes1_att"], ["cross_attention_weights"]),
        ]
    )
    decoder.initializer.extend(
        [_init("axes0_att", np.array([0], dtype=np.int64)), _init("axes1_att", np.array([1], dtype=np.int64))]
    )
    decoder.output.append(
        helper.make_tensor_value_info("cross_attention_weights", TensorProto.FLOAT, ["N", 1, "n", "T2"])
    )
