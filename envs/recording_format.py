"""What single-player (envs/recording.py) and two-player (envs/versus_recording.py) recordings share.

Both are one .npz per game in nets/npzfile.py's safe format (envs/ uses nets/ for that alone): a
JSON header plus the arrays actions, rewards and screen_crc32 (the CRC32 of the screen after reset
and after every step), and a data_crc32 over those three in the header to catch edits. This module
writes and reads such files and checks what every recording must satisfy; each format's own module
adds its header fields, its array shapes and its replay.
"""
import datetime
import os
import zlib
from dataclasses import dataclass

import numpy as np

from nets.npzfile import read_npz, read_npz_header, versions, write_npz

CHECKED_ARRAYS = ("actions", "rewards", "screen_crc32")  # what data_crc32 covers
SCREEN_SHAPE = (210, 160, 3)


class RecordingError(ValueError):
    """A recording that cannot be read, or a replay that does not match what was recorded."""


def data_crc32(arrays):
    crc = 0
    for name in CHECKED_ARRAYS:
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]).tobytes(), crc)
    return crc


def write_recording(path, arrays, header, packages):
    """Write one recording: header gets the versions of numpy and `packages`, data_crc32 and the time.
    Members are deflated, but for a frames blob that is already zlib data."""
    header = {**header, "versions": versions(*packages), "data_crc32": data_crc32(arrays),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_npz(path, arrays, header, compress=True, stored=("frames_zlib",))
    return header


def read_header(path):
    """A recording's header alone (a recording with frames can be large); RecordingError if unreadable."""
    return read_npz_header(path, error=RecordingError)


def read_recording(path, fmt, version, kind, fields, shapes, dtypes):
    """(arrays, header) of a recording of format `fmt` (a `kind` recording in messages), checked:
    the version, the types of the header `fields` {name: type}, exactly the arrays of `shapes`
    {name: shape or None} with `dtypes`, and data_crc32. RecordingError with one line otherwise."""
    path = os.fspath(path)
    arrays, h = read_npz(path, error=RecordingError)
    if h.get("format") != fmt:
        raise RecordingError(f"{path}: not a {kind} recording (format {h.get('format')!r})")
    if h.get("version") != version:
        raise RecordingError(f"{path}: {kind} recording format version {h.get('version')!r} is not supported "
                             f"(this grok-arcade reads version {version}); replay it with the version that wrote it")
    for key, kind_of in fields.items():
        if not isinstance(h.get(key), kind_of) or (kind_of is int and isinstance(h.get(key), bool)):
            raise RecordingError(f"{path}: header field {key!r} is missing or has the wrong type")
    wanted = shapes(h)
    if set(arrays) != set(wanted):
        raise RecordingError(f"{path}: holds arrays {sorted(arrays)}, expected {sorted(wanted)}")
    for name, shape in wanted.items():
        a = arrays[name]
        if a.dtype != dtypes[name] or (shape is not None and a.shape != shape) or (shape is None and a.ndim != 1):
            raise RecordingError(f"{path}: array {name!r} is {a.dtype}{a.shape}, expected "
                                 f"{np.dtype(dtypes[name])}{shape or '(bytes,)'} for length {h['length']}")
    if data_crc32(arrays) != h["data_crc32"]:
        raise RecordingError(f"{path}: actions, rewards or screen checksums do not match the header's "
                             f"data_crc32: the file was edited or damaged")
    return arrays, h


def mismatch(rec, step, got, want, package, here, after="action"):
    """The RecordingError of a replay whose screen CRC32 differs from the recorded one at `step`."""
    where = "the screen after reset" if step == 0 else f"the screen after {after} {step}"
    recorded = rec.header.get("versions", {}).get(package)
    why = (f"recorded with {package} {recorded}, replaying with {here}" if recorded != here
           else "the recording was edited, or is of another game")
    return RecordingError(f"{rec.path}: replay diverged at step {step} of {len(rec.actions)}: CRC32 of "
                          f"{where} is {got:08x}, recorded {want:08x} ({why})")


@dataclass
class Recording:
    """A loaded recording: the header and its arrays, checked for consistency."""
    path: str
    header: dict
    actions: np.ndarray        # (L,) uint8, two-player: (L, 2)
    rewards: np.ndarray        # (L,) float64, two-player: (L, 2)
    screen_crc32: np.ndarray   # (L+1,) uint32
    frames_zlib: np.ndarray = None  # (bytes,) uint8, or None (two-player recordings keep no screens)

    SUMMARY = ("env_id", "preset", "protocol", "seed", "player", "length", "return", "end", "frames",
               "created", "versions")

    def frames(self):
        """Yield the stored (210, 160, 3) uint8 screens, decompressed one at a time."""
        if self.frames_zlib is None:
            raise RecordingError(f"{self.path}: recorded without frames; replay(path) re-simulates it instead")
        size = int(np.prod(SCREEN_SHAPE))
        unzip, data = zlib.decompressobj(), self.frames_zlib.tobytes()
        screen = np.zeros(size, np.uint8)
        for i in range(len(self.screen_crc32)):
            try:
                chunk = unzip.decompress(data, size)  # max_length: never more than one frame at a time
            except zlib.error as e:
                raise RecordingError(f"{self.path}: stored frame {i} is damaged ({e})") from None
            data = unzip.unconsumed_tail
            if len(chunk) != size:
                raise RecordingError(f"{self.path}: stored frames end at frame {i} of {len(self.screen_crc32)}")
            screen = np.bitwise_xor(screen, np.frombuffer(chunk, np.uint8))  # undo the XOR with the last one
            yield screen.reshape(SCREEN_SHAPE)

    def summary(self):
        """The header without its bulky parts, for `--info`."""
        return {k: self.header.get(k) for k in self.SUMMARY}
