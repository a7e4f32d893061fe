"""nets.data: the loaders on the real files, checksums, the offline error, downloads from file:// URLs."""
import dataclasses
import gzip
import tarfile
import urllib.error

import numpy as np
import pytest

from nets import data
from nets.data import DataError

from real_data import data_folder


@pytest.fixture
def offline(monkeypatch):
    """Any download attempt fails as it would with no network."""
    def refuse(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(data, "fetch", refuse)


def use_url(monkeypatch, key, url):
    monkeypatch.setitem(data.DATASETS, key, dataclasses.replace(data.DATASETS[key], url=url))


@pytest.mark.parametrize("dataset", ["mnist", "fashion"])
def test_image_sets_have_their_shapes_and_dtypes(dataset, tmp_path, offline):
    DATA = data_folder(dataset)
    (xtr, ytr), (xte, yte) = data.load_mnist(dataset, data_dir=DATA, cache_dir=tmp_path)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    assert set(np.unique(ytr)) == set(range(10)) and np.bincount(yte).min() >= 800
    assert xtr.max() == 255 and xtr.min() == 0
    if dataset == "mnist":
        assert list(ytr[:5]) == [5, 0, 4, 1, 9]  # the well-known first labels
    assert not any(tmp_path.iterdir()), "a local copy must not touch the cache"


def test_text_and_polarity_decode(tmp_path, offline):
    DATA = data_folder("shakespeare", "polarity")
    text = data.load_text(data_dir=DATA, cache_dir=tmp_path)
    assert len(text) == 1_115_394 and len(set(text)) == 65 and text.startswith("First Citizen:")
    texts, labels = data.load_polarity(data_dir=DATA, cache_dir=tmp_path)
    assert len(texts) == 10662 and labels.dtype == np.int64
    assert labels.sum() == 5331 and list(labels[:1]) == [1] and labels[-1] == 0
    assert any("é" in t for t in texts), "Windows-1252 bytes decode to their characters"
    assert all(t == t.strip() and t for t in texts)


def test_environment_variable_and_flat_folder(tmp_path, monkeypatch, offline):
    DATA = data_folder("shakespeare", "mnist")
    monkeypatch.setenv(data.DATA_ENV, str(DATA))
    assert len(data.load_text(cache_dir=tmp_path)) == 1_115_394
    flat = tmp_path / "flat"  # the files themselves in the folder, no sub-folder
    flat.mkdir()
    (flat / "input.txt").write_bytes((DATA / "shakespeare" / "input.txt").read_bytes())
    assert len(data.load_text(data_dir=flat, cache_dir=tmp_path / "cache")) == 1_115_394
    for p in (DATA / "mnist").iterdir():
        (flat / p.name).write_bytes(p.read_bytes())
    (xtr, _), _ = data.load_mnist("mnist", data_dir=flat, cache_dir=tmp_path / "cache")
    assert xtr.shape == (60000, 28, 28)
    with pytest.raises(DataError, match="Fashion-MNIST: .* not found"):  # MNIST's files are not Fashion's
        data.load_mnist("fashion", data_dir=flat, cache_dir=tmp_path / "cache")


def test_any_utf8_file_by_path(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("Ça va, naïve café\n", encoding="utf-8")
    assert data.load_text(path) == "Ça va, naïve café\n"
    path.write_bytes(b"caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(DataError, match="not UTF-8"):
        data.load_text(path)
    with pytest.raises(DataError, match="no such text file"):
        data.load_text(tmp_path / "missing.txt")


def test_offline_and_absent_is_one_line_naming_files_and_folder(tmp_path, monkeypatch, offline):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    with pytest.raises(DataError) as e:
        data.load_mnist(data_dir=tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    message = str(e.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "nowhere" / "mnist") in message and "name resolution" in message
    with pytest.raises(DataError) as e:  # no local folder at all: points at the cache and the variable
        data.load_polarity(cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value) and "rt-polarity.pos" in str(e.value)
    assert str(tmp_path / "cache" / "sentiment" / "rt-polaritydata") in str(e.value)
    assert "GROK_ARCADE_DATA" in str(e.value)


def test_unreachable_file_url_is_the_same_one_line_error(tmp_path, monkeypatch):
    use_url(monkeypatch, "shakespeare", (tmp_path / "no-mirror").as_uri() + "/")
    with pytest.raises(DataError, match="input.txt not found and the download") as e:
        data.load_text(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value)


def test_local_file_with_wrong_checksum_is_refused(tmp_path, offline):
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "input.txt").write_text("To be, or not to be\n")
    with pytest.raises(DataError, match="sha256") as e:
        data.load_text(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert str(tmp_path / "shakespeare" / "input.txt") in str(e.value)


def test_download_from_file_url_into_cache(tmp_path, monkeypatch):
    DATA = data_folder("shakespeare")
    use_url(monkeypatch, "shakespeare", (DATA / "shakespeare").as_uri() + "/")
    cache = tmp_path / "cache"
    text = data.load_text(data_dir=tmp_path / "empty", cache_dir=cache)
    assert len(text) == 1_115_394
    cached = cache / "shakespeare" / "input.txt"
    assert data.sha256_of(cached) == dict(data.DATASETS["shakespeare"].files)["input.txt"]
    assert [p.name for p in cached.parent.iterdir()] == ["input.txt"], "no temp files left behind"
    monkeypatch.setattr(data, "fetch", lambda url: pytest.fail("cached file must be used"))
    assert data.load_text(data_dir=tmp_path / "empty", cache_dir=cache) == text


def test_download_of_mnist_files_via_real_fetch(tmp_path, monkeypatch):
    DATA = data_folder("mnist")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for p in (DATA / "mnist").iterdir():
        (mirror / p.name).write_bytes(p.read_bytes())
    use_url(monkeypatch, "mnist", mirror.as_uri() + "/")
    (xtr, _), (xte, yte) = data.load_mnist(cache_dir=tmp_path / "cache", data_dir=tmp_path / "empty")
    assert xtr.shape == (60000, 28, 28) and len(yte) == 10000
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(p.name for p in mirror.iterdir())


def test_download_with_wrong_checksum_saves_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "input.txt").write_text("a tampered copy\n")
    use_url(monkeypatch, "shakespeare", mirror.as_uri() + "/")
    with pytest.raises(DataError, match="sha256.*nothing was saved") as e:
        data.load_text(data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value)
    cache = tmp_path / "cache" / "shakespeare"
    assert not cache.exists() or not any(cache.iterdir())


def test_polarity_download_from_archive(tmp_path, monkeypatch):
    DATA = data_folder("polarity")
    archive = tmp_path / "rt-polaritydata.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # the layout of Cornell's tarball
        for name in ("rt-polarity.pos", "rt-polarity.neg"):
            tar.add(DATA / "sentiment" / "rt-polaritydata" / name, arcname=f"rt-polaritydata/{name}")
    use_url(monkeypatch, "polarity", archive.as_uri())
    texts, labels = data.load_polarity(data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert len(texts) == 10662 and labels.sum() == 5331
    assert (tmp_path / "cache" / "sentiment" / "rt-polaritydata" / "rt-polarity.neg").is_file()


def test_truncated_archive_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "fetch", lambda url: b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(DataError, match="download from") as e:
        data.load_polarity(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value)


def write_idx(path, array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_damage(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    write_idx(tmp_path / "ok.gz", images)
    got = data.read_idx(tmp_path / "ok.gz")
    assert got.dtype == np.uint8 and np.array_equal(got, images)
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(5))
    with pytest.raises(DataError, match="declares shape"):
        data.read_idx(tmp_path / "short.gz")
    write_idx(tmp_path / "int.gz", images, magic_type=0x0C)
    with pytest.raises(DataError, match="not an IDX"):
        data.read_idx(tmp_path / "int.gz")
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        data.read_idx(tmp_path / "plain.gz")


def test_unknown_names_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="unknown image data set"):
        data.load_mnist("kmnist", cache_dir=tmp_path)
    with pytest.raises(DataError, match="unknown data set"):
        data.ensure_files("imagenet", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- tests/real_data.py itself

def test_missing_data_fails_where_it_was_promised_and_skips_with_directions_elsewhere(tmp_path, monkeypatch):
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "input.txt").write_text("a stand-in\n")  # presence is all data_folder checks
    assert data_folder("shakespeare", environ={"GROK_ARCADE_DATA": str(tmp_path)}) == tmp_path
    with pytest.raises(pytest.fail.Exception, match="GROK_ARCADE_DATA=.* lacks mnist/train-images-idx3-ubyte.gz"):
        data_folder("shakespeare", "mnist", environ={"GROK_ARCADE_DATA": str(tmp_path)})
    import real_data
    monkeypatch.setattr(real_data, "CANDIDATES", (tmp_path / "nowhere", tmp_path / "cache"))
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        data_folder("mnist", environ={"CI": "true"})
    with pytest.raises(pytest.skip.Exception) as e:
        data_folder("polarity", environ={})
    assert "GROK_ARCADE_DATA" in str(e.value) and "scripts.sanity --quick" in str(e.value)
    assert "sentiment/rt-polaritydata/rt-polarity.pos" in str(e.value)
    monkeypatch.setattr(real_data, "CANDIDATES", (tmp_path / "nowhere", tmp_path))
    assert data_folder("shakespeare", environ={"CI": "1"}) == tmp_path  # the download cache serves too
