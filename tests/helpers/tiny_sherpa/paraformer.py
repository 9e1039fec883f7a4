"""A tiny Paraformer (with optional CIF-peak timestamps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.helpers.tiny_sherpa.graphs import FEATURE_DIM, _init, _save, write_tokens

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
