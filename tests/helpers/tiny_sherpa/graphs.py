"""What every tiny sherpa-onnx model shares: saving a graph with its metadata, initializers, tokens.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

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
