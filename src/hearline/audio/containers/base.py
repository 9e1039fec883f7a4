"""What the container push parsers share: the error they raise, their size bound and their interface."""

from __future__ import annotations

from typing import Protocol

from hearline.audio.decode import AudioDecodeError

MAX_ELEMENT_BYTES = 4 * 1024 * 1024  # a single block/header larger than this means the stream is corrupt


class StreamDecodeError(AudioDecodeError):
    """The live stream is not a decodable WebM/Ogg/MP4 audio stream (garbage, missing header, corrupt)."""


class Demuxer(Protocol):
    """A push parser of one container: bytes in, the audio track's compressed packets out."""

    name: str  # container, as StreamDecoder.container reports it
    unit: str  # what a stream cut short ends inside of, for the truncation message
    codec: tuple[str, bytes] | None  # (PyAV decoder name, extradata) once the track header was parsed

    def feed(self, data: bytes) -> list[bytes]: ...

    def pending_bytes(self) -> int: ...


class BufferedDemuxer:
    """What the push parsers share: the bytes not parsed yet and where they sit in the stream.

    The offset exists for error messages, so a client is told at which byte its stream went wrong.
    """

    label: str  # the container as error messages name it

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._skip = 0  # bytes of an element being skipped still to drop (WebM, MP4)
        self.codec: tuple[str, bytes] | None = None  # (PyAV decoder, extradata) once the track header is parsed

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _drop_skipped(self) -> bool:
        """Drop what has arrived of an element being skipped; True while more of it is still to come."""
        n = min(self._skip, len(self._buf))
        self._consume(n)
        self._skip -= n
        return self._skip > 0

    def _corrupt(self, what: str) -> StreamDecodeError:
        return StreamDecodeError(f"corrupt {self.label} stream at byte {self._offset}: {what}")
