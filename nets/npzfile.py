"""Safe .npz files: arrays plus one JSON header, written atomically, read without pickle.

Every file this project writes (models, agent checkpoints, replay buffers, recorded games) goes
through here, so the defences live in one place: object arrays are refused before anything is read,
every declared array size is checked against the archive's own directory and a cap (no memory
blow-up from a forged header), and any failure becomes the caller's own one-line error. envs/ may
import this module (and only this one of nets/) for the recordings' file format.
"""
import contextlib
import io
import json
import os
import platform
import tempfile
import zipfile
from importlib import metadata

import numpy as np

HEADER_KEY = "__header__"
MAX_ARRAY_BYTES = 4 << 30  # 4 GiB per array: larger than anything we write
SAFE_KINDS = set("biufcSU")  # bool, ints, floats, complex, bytes, str: never object ('O') or void


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def versions(*packages):
    """Python's and numpy's versions and each named package's (None when it is not installed): the
    provenance every file header records."""
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_npz(path, arrays, header, compress=False, stored=()):
    """Write arrays and a JSON header to path atomically (temp file in the same dir, then replace).
    compress: deflate the members, except those named in `stored` (data that is already compressed).
    Members carry a fixed date, so the same arrays and header give the same bytes."""
    path = os.fspath(path)
    for name, a in arrays.items():
        if name == HEADER_KEY or np.asarray(a).dtype.hasobject:
            raise ValueError(f"array {name!r} cannot be stored (reserved name or object dtype)")
    payload = dict(arrays)
    payload[HEADER_KEY] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path, "wb") as f:
        with zipfile.ZipFile(f, "w", allowZip64=True) as zf:
            for name, a in payload.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                deflate = compress and name not in stored
                info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temp file beside path for writing; on success it replaces path in one step
    (os.replace), on any failure it is removed and path is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a saved file is a normal file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_member(zf, info, path, error):
    name = info.filename[:-4]
    if info.file_size > MAX_ARRAY_BYTES + 4096:
        raise error(f"{path}: array {name!r} declares {info.file_size} bytes, more than allowed")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise error(f"{path}: array {name!r} has unsupported npy version {version}")
        if dtype.hasobject or dtype.kind not in SAFE_KINDS:
            raise error(f"{path}: array {name!r} has dtype {dtype}, which is not allowed")
        count = 1
        for d in shape:
            count *= int(d)
        nbytes = count * dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES or nbytes > info.file_size:
            raise error(f"{path}: array {name!r} declares shape {shape} ({nbytes} bytes) but holds "
                        f"{info.file_size}")
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise error(f"{path}: array {name!r} is truncated")
    array = np.frombuffer(data, dtype=dtype)
    if fortran:
        return array.reshape(shape[::-1]).T.copy()
    return array.reshape(shape).copy()


def _existing_file(path, error):
    """path as a str; error(msg) when it is a directory or does not exist."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise error(f"{path} is a directory, not a file")
    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    return path


def read_npz_header(path, error=ValueError):
    """Only the JSON header of an .npz written by write_npz, without reading its arrays (a 13 MB
    checkpoint's header costs a few kB). Anything off raises error(msg); the arrays are not checked."""
    path = _existing_file(path, error)
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(HEADER_KEY + ".npy")
            except KeyError:
                raise error(f"{path}: not a grok-arcade file (no header)") from None
            raw = _read_member(zf, info, path, error)
    except error:
        raise
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # BadZipFile, zlib.error, EOFError, ...
        raise error(f"{path}: not a valid .npz archive ({type(e).__name__})") from None
    return _header_from(raw, path, error)


def _header_from(raw_header, path, error):
    """The JSON object stored in the header member; error(msg) when it is missing or not JSON."""
    if raw_header is None or raw_header.dtype != np.uint8 or raw_header.ndim != 1:
        raise error(f"{path}: not a grok-arcade file (no header)")
    try:
        header = json.loads(raw_header.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error(f"{path}: header is not valid JSON") from None
    if not isinstance(header, dict):
        raise error(f"{path}: header is not a JSON object")
    return header


def read_npz(path, error=ValueError):
    """Return (arrays, header) from an .npz written by write_npz. Anything off raises error(msg)."""
    path = _existing_file(path, error)
    try:
        with open(path, "rb") as raw:
            blob = raw.read()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            arrays = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise error(f"{path}: unexpected member {info.filename!r}")
                arrays[info.filename[:-4]] = _read_member(zf, info, path, error)
    except error:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile):
        raise error(f"{path}: not a valid .npz archive (corrupt or truncated)") from None
    except MemoryError:
        raise error(f"{path}: declares more data than fits in memory") from None
    except Exception as e:  # zlib.error, EOFError, ValueError from a damaged member, ...
        raise error(f"{path}: damaged archive ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return arrays, _header_from(arrays.pop(HEADER_KEY, None), path, error)
