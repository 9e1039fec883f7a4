"""Read what sherpa-onnx keys on from an ONNX file (metadata_props, graph output names) without loading it.

The file's top-level protobuf fields are walked with seeks, so this costs a few reads even for a 1 GB
model, and a model missing a key sherpa-onnx requires becomes a clear error instead of sherpa-onnx
exiting the whole process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from hearline.engines.base import EngineError


def _read_varint(fh: BinaryIO) -> int | None:
    shift = 0
    value = 0
    while True:
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


def _parse_entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto: field 1 key, field 2 value."""
    key = value = ""
    pos = 0
    while pos < len(data):
        tag, pos = _varint_at(data, pos)
        length, pos = _varint_at(data, pos)
        text = data[pos : pos + length].decode("utf-8", "replace")
        pos += length
        if tag >> 3 == 1:
            key = text
        elif tag >> 3 == 2:
            value = text
    return key, value


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def onnx_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (ModelProto field 14), skipping the graph with seeks."""
    meta: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            for number, length in _length_fields(fh):
                if number == 14:
                    key, value = _parse_entry(fh.read(length))
                    meta[key] = value
    except (OSError, ValueError, IndexError) as exc:
        raise EngineError(f"{path} is not a readable ONNX model: {exc}") from exc
    return meta


def onnx_output_names(path: Path) -> list[str]:
    """Names of the graph's outputs (ModelProto.graph = 7, GraphProto.output = 12, ValueInfoProto.name = 1).

    sherpa-onnx switches optional timing on by the outputs a graph has; reading them with seeks past the
    weights costs a few reads even for a large model, like :func:`onnx_metadata`.
    """
    names: list[str] = []
    try:
        with open(path, "rb") as fh:
            for number, length in _length_fields(fh):
                if number == 7:  # the graph; fh is now at its value
                    graph_end = fh.tell() + length
                    break
            else:
                return names
            for number, length in _length_fields(fh, end=graph_end):
                if number == 12:
                    names.append(_string_field(fh.read(length), 1))
    except (OSError, ValueError, IndexError) as exc:
        raise EngineError(f"{path} is not a readable ONNX model: {exc}") from exc
    return names


def _length_fields(fh: BinaryIO, end: int | None = None) -> Iterator[tuple[int, int]]:
    """``(field number, length)`` of each length-delimited field of a message read from ``fh`` (up to ``end``).

    At each yield ``fh`` is at the field's value; a value the caller does not read is seeked past, so a
    model's weights are never read.  Fields of other wire types are skipped.
    """
    while end is None or fh.tell() < end:
        tag = _read_varint(fh)
        if tag is None:
            return
        length = _skip(fh, tag & 7)
        if length is None:
            continue
        start = fh.tell()
        yield tag >> 3, length
        if fh.tell() == start:
            fh.seek(length, os.SEEK_CUR)


def _skip(fh: BinaryIO, wire: int) -> int | None:
    """Seek past one field value; return the length of a length-delimited one (read nothing)."""
    if wire == 0:
        _read_varint(fh)
    elif wire == 1:
        fh.seek(8, os.SEEK_CUR)
    elif wire == 5:
        fh.seek(4, os.SEEK_CUR)
    elif wire == 2:
        return _read_varint(fh)
    else:
        raise ValueError(f"unexpected wire type {wire}")
    return None


def _string_field(data: bytes, number: int) -> str:
    """The first string field ``number`` of a small message held in memory."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint_at(data, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint_at(data, pos)
            continue
        if wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        length, pos = _varint_at(data, pos)
        if tag >> 3 == number:
            return data[pos : pos + length].decode("utf-8", "replace")
        pos += length
    return ""


def has_output(path: Path, name: str, min_outputs: int) -> bool:
    """Whether a graph has the output sherpa-onnx looks for (by name, or by the output count it checks)."""
    names = onnx_output_names(path)
    return name in names or len(names) >= min_outputs
