"""Hostile files: random bytes, truncations, bit flips, forged arrays and headers thrown at every loader.

Each input must load correctly or raise the loader's own error with a one-line message: no other
exception, no unpickling, no huge allocation. At least 2,000 examples per loader by default;
`pytest -m slow` runs 20,000.
"""
import io
import json
import os
import pickle
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nets
from agents.run import load_checkpoint, save_checkpoint
from envs import recording
from nets.npzfile import HEADER_KEY

EXAMPLES = 2000
SLOW_EXAMPLES = 20000


def write(tmpdir, data):
    path = os.path.join(tmpdir, "f.npz")
    with open(path, "wb") as f:
        f.write(data)
    return path


def npz_bytes(arrays, header=None, raw_header=None):
    """An .npz built by hand: arrays (may be pickled object arrays), plus a header entry."""
    buf = io.BytesIO()
    payload = dict(arrays)
    if raw_header is not None:
        payload[HEADER_KEY] = raw_header
    elif header is not None:
        payload[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(buf, **payload)
    return buf.getvalue()


def huge_npy_member(name, shape):
    """A zip member whose npy header declares a gigantic array but holds a few bytes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(b"\0" * 16)
    return name + ".npy", buf.getvalue()


@pytest.fixture(scope="module")
def valid_files():
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    model = nets.Sequential(nets.Linear(6, 5, rng=rng), nets.ReLU(), nets.Linear(5, 2, rng=rng))
    model_path = os.path.join(tmp, "model.npz")
    nets.save(model_path, model, {"note": "fuzz"})
    ckpt_path = os.path.join(tmp, "ckpt.npz")
    save_checkpoint(ckpt_path, {"model": model},
                    {"agent": "pg", "config": {"agent": "pg"}, "env": {"env_id": "CartPole-v1",
                     "preset": "classic"}, "head": "softmax", "n_actions": 2, "step": 10})
    rec_path = os.path.join(tmp, "rec.npz")
    recording.record("pong", lambda obs: 0, rec_path, preset="karpathy", seed=1, max_steps=60)
    return {name: open(path, "rb").read() for name, path in
            (("model", model_path), ("checkpoint", ckpt_path), ("recording", rec_path))}


LOADERS = {
    "model": (lambda p: nets.load(p), nets.CheckpointError),
    "checkpoint": (lambda p: load_checkpoint(p), nets.CheckpointError),
    "recording": (lambda p: recording.load(p), recording.RecordingError),
}


def mutate(data, draw_ops):
    """Apply truncations, bit flips and byte overwrites to a valid file."""
    data = bytearray(data)
    for kind, pos, value in draw_ops:
        if not data:
            break
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= 1 << (value % 8)
        elif kind == "byte":
            data[pos] = value % 256
        elif kind == "truncate":
            del data[pos:]
        elif kind == "delete":
            del data[pos:pos + 1 + value % 64]
    return bytes(data)


ops = st.lists(st.tuples(st.sampled_from(["flip", "byte", "truncate", "delete"]),
                         st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)
inputs = st.one_of(
    st.tuples(st.just("mutate"), ops),
    st.tuples(st.just("random"), st.binary(max_size=2048)),
)


def check_one(name, data, tmpdir):
    load, error = LOADERS[name]
    path = write(tmpdir, data)
    try:
        load(path)
    except error as e:
        message = str(e)
        assert message and "\n" not in message, repr(message)


def forbid_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to unpickle")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def run_fuzz(name, valid_files, n, monkeypatch):
    forbid_pickle(monkeypatch)
    tmpdir = tempfile.mkdtemp()

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def fuzz(case):
        kind, payload = case
        data = mutate(valid_files[name], payload) if kind == "mutate" else payload
        check_one(name, data, tmpdir)

    fuzz()


@pytest.mark.parametrize("name", list(LOADERS))
def test_fuzz_loader(name, valid_files, monkeypatch):
    run_fuzz(name, valid_files, EXAMPLES, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LOADERS))
def test_fuzz_loader_long(name, valid_files, monkeypatch):
    run_fuzz(name, valid_files, SLOW_EXAMPLES, monkeypatch)


@pytest.mark.parametrize("name", list(LOADERS))
def test_valid_files_load(name, valid_files, tmp_path):
    LOADERS[name][0](write(tmp_path, valid_files[name]))


def structured_cases(valid):
    """Well-formed archives with hostile contents: object arrays, wrong dtypes and shapes,
    missing keys, forged headers, gigantic declared sizes."""
    arrays = dict(np.load(io.BytesIO(valid), allow_pickle=False))
    header = json.loads(arrays.pop(HEADER_KEY).tobytes())
    first = next(iter(arrays))
    yield "object array", npz_bytes({**arrays, first: np.array([{"x": 1}, None], dtype=object)}, header)
    yield "wrong dtype", npz_bytes({**arrays, first: arrays[first].astype(np.int64)}, header)
    yield "float64 array", npz_bytes({**arrays, first: arrays[first].astype(np.float64)}, header)
    yield "wrong shape", npz_bytes({**arrays, first: np.zeros((3, 3, 3), np.float32)}, header)
    yield "missing key", npz_bytes({k: v for k, v in arrays.items() if k != first}, header)
    yield "extra key", npz_bytes({**arrays, "zzz": np.zeros(3)}, header)
    yield "no header", npz_bytes(arrays)
    yield "header not json", npz_bytes(arrays, raw_header=np.frombuffer(b"{not json", np.uint8))
    yield "header a list", npz_bytes(arrays, [1, 2, 3])
    yield "deep json", npz_bytes(arrays, raw_header=np.frombuffer(b"[" * 100000, np.uint8))
    yield "header as str array", npz_bytes(arrays, raw_header=np.array(json.dumps(header)))
    for key in list(header):
        yield f"header without {key}", npz_bytes(arrays, {k: v for k, v in header.items() if k != key})
        yield f"header {key} = null", npz_bytes(arrays, {**header, key: None})
    yield "version 99", npz_bytes(arrays, {**header, "version": 99})
    if "architecture" in header:
        huge = {"type": "Sequential", "layers": [{"type": "Linear", "config":
                {"in_features": 10**7, "out_features": 10**7}}]}
        yield "huge architecture", npz_bytes(arrays, {**header, "architecture": huge})
        yield "unknown layer", npz_bytes(arrays, {**header, "architecture": {"type": "Evil"}})
        yield "bad config", npz_bytes(arrays, {**header, "architecture": {
            "type": "Linear", "config": {"in_features": "6", "out_features": [5]}}})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with zipfile.ZipFile(io.BytesIO(valid)) as src:
            for info in src.infolist():
                zf.writestr(info.filename, src.read(info))
        zf.writestr(*huge_npy_member("giant", (1 << 20, 1 << 20)))
    yield "gigantic declared array", buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil.pkl", pickle.dumps({"a": 1}))
    yield "pickle member", buf.getvalue()


@pytest.mark.parametrize("name", list(LOADERS))
def test_structured_hostile_files(name, valid_files, tmp_path, monkeypatch):
    forbid_pickle(monkeypatch)
    load, error = LOADERS[name]
    count = 0
    for label, data in structured_cases(valid_files[name]):
        path = write(tmp_path, data)
        try:
            load(path)
        except error as e:
            assert str(e) and "\n" not in str(e), (label, str(e))
        count += 1
    assert count >= 20
