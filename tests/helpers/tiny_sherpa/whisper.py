"""A tiny sherpa-onnx Whisper (encoder/decoder graphs with cross-attention caches)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.helpers.tiny_sherpa.graphs import _init, _save

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
