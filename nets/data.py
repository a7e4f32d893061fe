"""Data sets for the book's supervised chapters: MNIST, Fashion-MNIST, a text corpus, movie-review polarity.

Where files come from, in order:
    1. a local folder: the data_dir argument, else the GROK_ARCADE_DATA environment variable, laid out as
       <folder>/mnist/, <folder>/fashion-mnist/, <folder>/shakespeare/input.txt,
       <folder>/sentiment/rt-polaritydata/rt-polarity.{pos,neg} (a folder holding the files themselves works too);
    2. the cache, ~/.cache/grok-arcade/<same layout> (cache_dir argument);
    3. a download from the canonical source into the cache.
Every file is checked against its published sha256 before use. Anything missing or wrong raises DataError
with a one-line message that names the files and where to put them.
"""
import gzip
import hashlib
import http.client
import io
import os
import pathlib
import struct
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass

import numpy as np

DATA_ENV = "GROK_ARCADE_DATA"
DEFAULT_CACHE = pathlib.Path.home() / ".cache" / "grok-arcade"
TIMEOUT = 30  # seconds before a stalled download gives up


class DataError(Exception):
    """A data set that is missing, unreachable, corrupt or malformed."""


@dataclass(frozen=True)
class DataSet:
    title: str  # name in messages
    folder: str  # sub-folder of the data folder and of the cache
    files: tuple  # ((file name, sha256), ...)
    url: str  # base URL the files are fetched from (file name appended), or the archive's URL
    archive: bool = False  # True: url is one .tar.gz holding every file


DATASETS = {
    "mnist": DataSet("MNIST", "mnist", (
        ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ), "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion": DataSet("Fashion-MNIST", "fashion-mnist", (
        ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ), "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "shakespeare": DataSet("tiny Shakespeare", "shakespeare", (
        ("input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    ), "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"),
    "polarity": DataSet("sentence polarity", "sentiment/rt-polaritydata", (
        ("rt-polarity.pos", "d79ef14009bbf87cd6be21f91c3ea1a3cbcb73b34dfb4231aef7bbcd7677abc4"),
        ("rt-polarity.neg", "4af43bf489620b498a0852c5a8c6a535155dec7985fdfea782b8f7756b957ccc"),
    ), "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz", archive=True),
}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url):
    """The bytes at url (http(s) or file://). Tests replace this to stay off the network."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.read()


def data_root(data_dir=None):
    """The local data folder: the argument, else $GROK_ARCADE_DATA, else None."""
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    return None if root is None else pathlib.Path(root).expanduser()


def _local_copy(root, spec, name, sha):
    """root/<folder>/name (which must be intact), else root/name if it is this data set's file."""
    if (root / spec.folder / name).is_file():
        return _check(root / spec.folder / name, sha, spec)
    # Flat folders are ambiguous (MNIST and Fashion-MNIST share file names): only a checksum says whose.
    if (root / name).is_file() and sha256_of(root / name) == sha:
        return root / name
    return None


def _check(path, sha, spec):
    got = sha256_of(path)
    if got != sha:
        raise DataError(f"{spec.title}: {path} has sha256 {got[:12]}..., expected {sha[:12]}...; "
                        f"replace it with the original file from {spec.url}")
    return path


def _write_verified(folder, name, blob, sha, spec, source):
    """Write blob to folder/name atomically, only if its sha256 matches."""
    got = hashlib.sha256(blob).hexdigest()
    if got != sha:
        raise DataError(f"{spec.title}: {name} from {source} has sha256 {got[:12]}..., expected {sha[:12]}...; "
                        f"nothing was saved")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, folder / name)


def _download(spec, names, cache):
    """Fetch the named files of spec into cache (verified); DataError on any failure."""
    if spec.archive:
        blob = fetch(spec.url)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            members = {pathlib.PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in names:
                if name not in members:
                    raise DataError(f"{spec.title}: {spec.url} holds no {name}")
                data = tar.extractfile(members[name]).read()
                _write_verified(cache, name, data, dict(spec.files)[name], spec, spec.url)
    else:
        for name in names:
            _write_verified(cache, name, fetch(spec.url + name), dict(spec.files)[name], spec, spec.url + name)


def ensure_files(key, data_dir=None, cache_dir=None):
    """Paths of every file of data set key ("mnist", "fashion", "shakespeare", "polarity"), verified.

    Looks in the local folder, then the cache, then downloads into the cache."""
    if key not in DATASETS:
        raise DataError(f"unknown data set {key!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[key]
    root = data_root(data_dir)
    cache = pathlib.Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser() / spec.folder
    found = {}
    for name, sha in spec.files:
        local = _local_copy(root, spec, name, sha) if root is not None else None
        if local is None and (cache / name).is_file():
            local = _check(cache / name, sha, spec)
        if local is not None:
            found[name] = local
    missing = [name for name, _ in spec.files if name not in found]
    if missing:
        try:
            _download(spec, missing, cache)
        except DataError:
            raise
        except (OSError, ValueError, EOFError, http.client.HTTPException, tarfile.TarError) as e:
            # URLError and timeouts are OSErrors; a truncated download surfaces as EOFError or TarError
            reason = str(getattr(e, "reason", "") or e).splitlines()[0] if str(e) else type(e).__name__
            where = (f"{root / spec.folder}/" if root is not None
                     else f"{cache}/ (or in <folder>/{spec.folder}/ with {DATA_ENV}=<folder> or --data-dir <folder>)")
            raise DataError(f"{spec.title}: {', '.join(missing)} not found and the download from {spec.url} "
                            f"failed ({reason}); put the files in {where}") from None
        found.update({name: cache / name for name in missing})
    return [found[name] for name, _ in spec.files]


def read_idx(path):
    """A gzip-compressed IDX file (MNIST's format) as a uint8 array of its declared shape."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path}: IDX header declares shape {shape} but holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(dataset="mnist", data_dir=None, cache_dir=None):
    """((x_train, y_train), (x_test, y_test)): images uint8 (N, 28, 28), labels int64 (N,).

    dataset is "mnist" or "fashion" (Fashion-MNIST has the same format and sizes)."""
    if dataset not in ("mnist", "fashion"):
        raise DataError(f"unknown image data set {dataset!r}; use 'mnist' or 'fashion'")
    xtr, ytr, xte, yte = (read_idx(p) for p in ensure_files(dataset, data_dir, cache_dir))
    for x, y in ((xtr, ytr), (xte, yte)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{DATASETS[dataset].title}: images {x.shape} and labels {y.shape} do not pair up")
    return (xtr, ytr.astype(np.int64)), (xte, yte.astype(np.int64))


def load_text(path=None, data_dir=None, cache_dir=None):
    """A UTF-8 text file as one string: tiny Shakespeare by default, or the file at path (unverified)."""
    if path is None:
        (path,) = ensure_files("shakespeare", data_dir, cache_dir)
    path = pathlib.Path(path).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such text file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def load_polarity(data_dir=None, cache_dir=None):
    """(texts, labels): 10,662 lower-cased, tokenised review snippets and labels int64 (1 positive, 0 negative).

    The files are Windows-1252, not UTF-8; positives come first, then negatives, in file order."""
    pos, neg = ensure_files("polarity", data_dir, cache_dir)
    texts, labels = [], []
    for path, label in ((pos, 1), (neg, 0)):
        lines = [line.strip() for line in path.read_bytes().decode("cp1252").splitlines()]
        lines = [line for line in lines if line]
        texts += lines
        labels += [label] * len(lines)
    return texts, np.array(labels, dtype=np.int64)
