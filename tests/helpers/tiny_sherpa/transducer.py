"""Tiny transducers: the online (streaming) zipformer2 and the offline transducer, sharing decoder and joiner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.helpers.tiny_sherpa.graphs import _WORDS, FEATURE_DIM, _init, _save, write_tokens

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
