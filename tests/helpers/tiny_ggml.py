"""A tiny random-weight Whisper model in whisper.cpp's legacy ggml file layout.

The layout is the one ``whisper_model_load`` in whisper.cpp reads (and ``models/convert-pt-to-ggml.py``
writes), in order:

1. magic ``0x67676d6c`` ("ggml") as uint32;
2. hparams, 11 x int32: n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx,
   n_text_state, n_text_head, n_text_layer, n_mels, ftype (1 = f16 matrices, like the released files);
3. mel filters: int32 n_mel, int32 n_fft, then n_mel * n_fft float32;
4. vocab: int32 count, then per token uint32 length + bytes (special tokens past the count are
   synthesised by whisper.cpp, as for real files);
5. tensors until EOF: int32 n_dims, int32 name length, int32 type (0 f32, 1 f16), n_dims x int32 sizes
   (innermost first, i.e. the PyTorch shape reversed), the name, then the raw data.  With ftype 1
   the weight matrices and conv kernels are f16; biases, norms and positional embeddings stay f32.

Only the sizes are tiny (1 encoder and 1 decoder layer, width 16); names, shapes and special-token ids
are those of a real multilingual (or ``.en``) model, so pywhispercpp loads and runs it through
whisper.cpp's real code.  The output text is noise.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
N_MELS = 80
N_FFT = 201  # 400-point FFT -> 201 bins
SAMPLE_RATE = 16000


def mel_filters(n_mels: int = N_MELS, n_fft_bins: int = N_FFT) -> np.ndarray:
    """Slaney-style triangular mel filterbank (like librosa's, which Whisper ships precomputed)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        mel = f / (200.0 / 3)
        log_region = f >= 1000.0
        mel[log_region] = 15.0 + np.log(f[log_region] / 1000.0) / (np.log(6.4) / 27.0)
        return mel

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        f = m * (200.0 / 3)
        log_region = m >= 15.0
        f[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log_region] - 15.0))
        return f

    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, n_fft_bins)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(np.array([0.0]))[0], hz_to_mel(np.array([8000.0]))[0], n_mels + 2))
    weights = np.zeros((n_mels, n_fft_bins))
    for i in range(n_mels):
        lower = (fft_freqs - mel_points[i]) / (mel_points[i + 1] - mel_points[i])
        upper = (mel_points[i + 2] - fft_freqs) / (mel_points[i + 2] - mel_points[i + 1])
        weights[i] = np.maximum(0, np.minimum(lower, upper))
        weights[i] *= 2.0 / (mel_points[i + 2] - mel_points[i])
    return weights.astype(np.float32)


def _tensors(
    rng: np.random.Generator, n_vocab: int, state: int, audio_ctx: int, text_ctx: int, layers: int
) -> list[tuple[str, np.ndarray]]:
    """(name, array in PyTorch shape) for every tensor whisper.cpp expects."""

    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def attn(prefix: str) -> list[tuple[str, np.ndarray]]:
        return [
            (f"{prefix}.query.weight", w(state, state)),
            (f"{prefix}.query.bias", zeros(state)),
            (f"{prefix}.key.weight", w(state, state)),
            (f"{prefix}.value.weight", w(state, state)),
            (f"{prefix}.value.bias", zeros(state)),
            (f"{prefix}.out.weight", w(state, state)),
            (f"{prefix}.out.bias", zeros(state)),
        ]

    def block(prefix: str, cross: bool) -> list[tuple[str, np.ndarray]]:
        out = [
            (f"{prefix}.mlp_ln.weight", ones(state)),
            (f"{prefix}.mlp_ln.bias", zeros(state)),
            (f"{prefix}.mlp.0.weight", w(4 * state, state)),
            (f"{prefix}.mlp.0.bias", zeros(4 * state)),
            (f"{prefix}.mlp.2.weight", w(state, 4 * state)),
            (f"{prefix}.mlp.2.bias", zeros(state)),
            (f"{prefix}.attn_ln.weight", ones(state)),
            (f"{prefix}.attn_ln.bias", zeros(state)),
            *attn(f"{prefix}.attn"),
        ]
        if cross:
            out += [
                (f"{prefix}.cross_attn_ln.weight", ones(state)),
                (f"{prefix}.cross_attn_ln.bias", zeros(state)),
                *attn(f"{prefix}.cross_attn"),
            ]
        return out

    tensors = [
        ("encoder.positional_embedding", w(audio_ctx, state, scale=0.05)),
        ("encoder.conv1.weight", w(state, N_MELS, 3)),
        ("encoder.conv1.bias", zeros(state, 1)),
        ("encoder.conv2.weight", w(state, state, 3)),
        ("encoder.conv2.bias", zeros(state, 1)),
        ("encoder.ln_post.weight", ones(state)),
        ("encoder.ln_post.bias", zeros(state)),
    ]
    for i in range(layers):
        tensors += block(f"encoder.blocks.{i}", cross=False)
    tensors += [
        ("decoder.positional_embedding", w(text_ctx, state, scale=0.05)),
        ("decoder.token_embedding.weight", w(n_vocab, state, scale=1.0)),
        ("decoder.ln.weight", ones(state)),
        ("decoder.ln.bias", zeros(state)),
    ]
    for i in range(layers):
        tensors += block(f"decoder.blocks.{i}", cross=True)
    return tensors


def _vocab(count: int) -> list[bytes]:
    """Byte tokens first (like GPT-2's BPE), then made-up word pieces."""
    words = [b" the", b" a", b" and", b" of", b" to", b" in", b" it", b" is", b"s", b"ed", b"ing", b" we"]
    tokens = [bytes([i]) for i in range(256)]
    tokens += [words[i % len(words)] + (b"" if i < len(words) else str(i).encode()) for i in range(count - 256)]
    return tokens


def _is_f16(name: str) -> bool:
    """Which tensors whisper.cpp creates with the weight type (f16 for ftype 1), as in whisper_model_load."""
    if name.endswith(".bias") or "_ln" in name or name.endswith("positional_embedding") or ".ln" in name:
        return False
    return name.endswith(".weight")


def build_ggml_whisper(path: Path, *, english_only: bool = False, seed: int = 0) -> Path:
    """Write a tiny ggml Whisper model (multilingual by default, or ``.en``-style) to ``path``."""
    rng = np.random.default_rng(seed)
    n_vocab = 51864 if english_only else 51865  # whisper.cpp: multilingual iff n_vocab >= 51865
    state, heads, layers = 16, 2, 1
    audio_ctx, text_ctx = 1500, 64  # a short text context bounds how long random decoding runs
    file_tokens = 50256 if english_only else 50257  # the rest (specials) are synthesised on load
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(struct.pack("<I", GGML_MAGIC))
        out.write(
            struct.pack("<11i", n_vocab, audio_ctx, state, heads, layers, text_ctx, state, heads, layers, N_MELS, 1)
        )
        filters = mel_filters()
        out.write(struct.pack("<2i", *filters.shape))
        out.write(filters.astype("<f4").tobytes())
        vocab = _vocab(file_tokens)
        out.write(struct.pack("<i", len(vocab)))
        for token in vocab:
            out.write(struct.pack("<I", len(token)))
            out.write(token)
        for name, array in _tensors(rng, n_vocab, state, audio_ctx, text_ctx, layers):
            encoded = name.encode()
            half = _is_f16(name)
            out.write(struct.pack("<3i", array.ndim, len(encoded), 1 if half else 0))
            out.write(struct.pack(f"<{array.ndim}i", *reversed(array.shape)))
            out.write(encoded)
            out.write(np.ascontiguousarray(array, dtype="<f2" if half else "<f4").tobytes())
    return path
