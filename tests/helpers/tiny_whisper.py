"""Build a tiny random-weight Whisper model in CTranslate2's real on-disk format.

No weights can be downloaded in tests, yet the faster-whisper engine must be exercised through exactly
the code path a real model takes (``WhisperModel(<dir>)`` reading ``model.bin``, ``config.json``,
``vocabulary.json``, ``tokenizer.json``, ``preprocessor_config.json``).  So this module fills a
``ctranslate2.specs.WhisperSpec`` with small random tensors (no torch needed) and writes a synthetic
byte-level BPE ``tokenizer.json`` whose id layout matches Whisper's: text tokens, then
``<|endoftext|>``, ``<|startoftranscript|>``, the language tokens, the task/control tokens and the 1501
timestamp tokens ``<|0.00|>``..``<|30.00|>``.  CTranslate2 decides "multilingual" from the vocabulary
size (51865), so the sizes are the real ones; only the hidden width is tiny.

Output text is gibberish by construction: tests assert structure and plumbing, never words.

Usage: ``python -m tests.helpers.tiny_whisper OUT_DIR [--english-only]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

import numpy as np

# Whisper's language tokens in model order (the 99 of v1/v2; large-v3 adds "yue").
_LANGUAGE_ORDER = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg "
    "lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so "
    "af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su"
)
WHISPER_LANGUAGES = tuple(_LANGUAGE_ORDER.split())
TASK_TOKENS = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)
NUM_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps
N_MELS = 80
ENCODER_POSITIONS = 1500  # 30 s of 10 ms frames after the stride-2 convolution
DECODER_POSITIONS = 448

#: Per-model transcription defaults read by hearline's faster-whisper engine (``hearline.json``):
#: random weights never emit a sensible end-of-text, so decoding is capped to keep tests fast.
HEARLINE_DEFAULTS = {"transcribe": {"max_new_tokens": 24}}

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _syllables() -> list[str]:
    return [c + v for c in _CONSONANTS for v in _VOWELS]


def text_vocabulary(size: int) -> list[str]:
    """``size`` distinct byte-level BPE token strings: the 256 byte symbols, then pseudo-words.

    Most pseudo-words start with "Ġ" (the byte-level spelling of a space) so decoded output splits into
    words the way real Whisper text does; the rest are word continuations.
    """
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens: list[str] = list(alphabet)
    seen = set(tokens)
    words = ["".join(combo) for n in (1, 2, 3) for combo in itertools.product(_syllables(), repeat=n)]
    random.Random(size).shuffle(words)  # deterministic, but not every word starting with "ba"
    for i, word in enumerate(words):
        candidate = word if i % 8 == 7 else "Ġ" + word
        if len(tokens) >= size:
            break
        if candidate not in seen:
            seen.add(candidate)
            tokens.append(candidate)
    assert len(tokens) == size, "not enough pseudo-words"
    return tokens


def special_tokens() -> list[str]:
    """Whisper's special tokens in id order, timestamps included."""
    # English-only models keep the language tokens too (unused), like the real .en vocabularies; only
    # their text vocabulary is one token shorter.
    specials = ["<|endoftext|>", "<|startoftranscript|>"]
    specials += [f"<|{code}|>" for code in WHISPER_LANGUAGES]
    specials += list(TASK_TOKENS)
    specials += [f"<|{i * 0.02:.2f}|>" for i in range(NUM_TIMESTAMPS)]
    return specials


def write_tokenizer(path: Path, vocabulary: list[str], num_text: int) -> None:
    """A tokenizers.Tokenizer: byte-level BPE over the text tokens, specials as added tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(vocabulary[:num_text])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    added = tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in vocabulary[num_text:]]
    )
    assert added == len(vocabulary) - num_text
    for token in ("<|endoftext|>", "<|notimestamps|>", "<|30.00|>"):
        assert tokenizer.token_to_id(token) == vocabulary.index(token), token
    tokenizer.save(str(path))


def build_tiny_whisper(
    out_dir: Path | str,
    *,
    multilingual: bool = True,
    d_model: int = 64,
    num_heads: int = 2,
    num_layers: int = 2,
    seed: int = 0,
    timestamp_slope: float = 0.01,
) -> Path:
    """Write a complete faster-whisper model directory to ``out_dir`` and return it.

    ~7 MB on disk (float16; the embedding table is the real 51865 x ``d_model``); builds in about a second.
    """
    from ctranslate2.specs import whisper_spec

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    num_text = 50257 if multilingual else 50256
    text = text_vocabulary(num_text)
    if multilingual:
        # The real multilingual vocabulary ends its text part with an empty token (id 50256), and
        # CTranslate2 keys ``is_multilingual`` on that token being present.
        text[-1] = ""
    vocabulary = text + special_tokens()
    vocab_size = len(vocabulary)
    assert vocab_size == (51865 if multilingual else 51864)
    eot = vocabulary.index("<|endoftext|>")
    ffn = 4 * d_model

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def layer_norm(spec) -> None:  # type: ignore[no-untyped-def]
        spec.gamma = np.ones(d_model, dtype=np.float32)
        spec.beta = zeros(d_model)

    def linear(spec, out_dim: int, in_dim: int) -> None:  # type: ignore[no-untyped-def]
        spec.weight = weight(out_dim, in_dim, scale=1.0 / np.sqrt(in_dim))
        spec.bias = zeros(out_dim)

    def attention(spec, self_attention: bool) -> None:  # type: ignore[no-untyped-def]
        layer_norm(spec.layer_norm)
        if self_attention:
            linear(spec.linear[0], 3 * d_model, d_model)  # fused q, k, v
            linear(spec.linear[1], d_model, d_model)
        else:
            linear(spec.linear[0], d_model, d_model)  # q
            linear(spec.linear[1], 2 * d_model, d_model)  # fused k, v over the encoder output
            linear(spec.linear[2], d_model, d_model)

    def feed_forward(spec) -> None:  # type: ignore[no-untyped-def]
        layer_norm(spec.layer_norm)
        linear(spec.linear_0, ffn, d_model)
        linear(spec.linear_1, d_model, ffn)

    spec = whisper_spec.WhisperSpec(num_layers, num_heads, num_layers, num_heads)

    encoder = spec.encoder
    encoder.conv1.weight = weight(d_model, N_MELS, 3, scale=0.1)
    encoder.conv1.bias = zeros(d_model)
    encoder.conv2.weight = weight(d_model, d_model, 3, scale=0.1)
    encoder.conv2.bias = zeros(d_model)
    encoder.position_encodings.encodings = weight(ENCODER_POSITIONS, d_model, scale=0.1)
    layer_norm(encoder.layer_norm)
    for layer in encoder.layer:
        attention(layer.self_attention, self_attention=True)
        feed_forward(layer.ffn)

    decoder = spec.decoder
    embeddings = weight(vocab_size, d_model, scale=0.05)
    decoder.embeddings.weight = embeddings
    decoder.position_encodings.encodings = weight(DECODER_POSITIONS, d_model, scale=0.05)
    layer_norm(decoder.layer_norm)
    for layer in decoder.layer:
        attention(layer.self_attention, self_attention=True)
        attention(layer.attention, self_attention=False)
        feed_forward(layer.ffn)
    decoder.projection.weight = embeddings  # tied, like Whisper's proj_out; saved once (aliased)
    # Whisper's proj_out has no bias; this one makes the random model behave like a plausible one: later
    # timestamps get steadily less likely, so segments advance by a second or two instead of jumping
    # straight to 30 s, and most segments land inside a short test clip.
    bias = zeros(vocab_size)
    first_timestamp = vocabulary.index("<|0.00|>")
    bias[first_timestamp:] = -timestamp_slope * np.arange(NUM_TIMESTAMPS, dtype=np.float32)
    decoder.projection.bias = bias

    lang_ids = [vocabulary.index(f"<|{code}|>") for code in WHISPER_LANGUAGES] if multilingual else []
    suppress = [vocabulary.index("<|startoflm|>"), vocabulary.index("<|startofprev|>")]
    if multilingual:
        suppress.append(num_text - 1)  # the empty token
    spec.config.suppress_ids = suppress
    spec.config.suppress_ids_begin = [vocabulary.index("Ġ"), eot]
    spec.config.lang_ids = lang_ids
    spec.config.alignment_heads = [
        [layer, head] for layer in range(num_layers // 2, num_layers) for head in range(num_heads)
    ]
    spec.register_vocabulary(vocabulary)
    spec.validate()
    spec.optimize(quantization="float16")  # like the published faster-whisper models; also aliases proj_out
    spec.save(str(out))

    write_tokenizer(out / "tokenizer.json", vocabulary, num_text)
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "chunk_length": 30,
                "feature_extractor_type": "WhisperFeatureExtractor",
                "feature_size": N_MELS,
                "hop_length": 160,
                "n_fft": 400,
                "n_samples": 480000,
                "nb_max_frames": 3000,
                "padding_side": "right",
                "padding_value": 0.0,
                "processor_class": "WhisperProcessor",
                "return_attention_mask": False,
                "sampling_rate": 16000,
            },
            indent=2,
        )
    )
    (out / "hearline.json").write_text(json.dumps(HEARLINE_DEFAULTS, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--english-only", action="store_true", help="build a .en-style model (no languages)")
    args = parser.parse_args()
    path = build_tiny_whisper(args.out_dir, multilingual=not args.english_only)
    print(path)


if __name__ == "__main__":
    main()
