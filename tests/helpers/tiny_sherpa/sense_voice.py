"""A tiny SenseVoice (CTC) model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from tests.helpers.tiny_sherpa.graphs import _WORDS, FEATURE_DIM, _init, _save, write_tokens

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
