"""Hostile files: random bytes, truncations, bit flips, forged arrays and headers thrown at every loader.

Random bytes must be refused with the loader's own error and a one-line message. A damaged copy of a
valid file must be refused the same way, or load exactly what the valid file holds (a flipped bit in
a zip field nobody reads changes nothing). Each forged archive must be refused with the error that
names what is wrong, except the few changes a loader tolerates by design, listed below with the
reason, which must then load the valid file's weights or data unchanged. No other exception, no
unpickling, no huge allocation. At least 2,000 examples per loader by default; `pytest -m slow`
runs 20,000.
"""
import io
import json
import os
import pickle
import re
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agents
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
            (("model", model_path), ("checkpoint", ckpt_path), ("agent", ckpt_path), ("recording", rec_path))}


LOADERS = {
    "model": (lambda p: nets.load(p), nets.CheckpointError),
    "checkpoint": (lambda p: load_checkpoint(p), nets.CheckpointError),  # the file layer
    "agent": (lambda p: agents.load(p), nets.CheckpointError),  # what evaluate, watch and --init call
    "recording": (lambda p: recording.load(p), recording.RecordingError),
}


def contents(name, loaded):
    """(header or None, {name: array}) of what a loader returned, to compare two loads."""
    if name == "model":
        model, meta = loaded
        return meta, dict(model.state_dict())
    if name == "checkpoint":
        models, header, rest = loaded
        return header, {**{f"{p}.{k}": v for p, m in models.items() for k, v in m.state_dict().items()}, **rest}
    if name == "agent":
        return loaded.header, dict(loaded.model.state_dict())
    return loaded.header, {"actions": loaded.actions, "rewards": loaded.rewards,
                           "screen_crc32": loaded.screen_crc32}


def assert_same_arrays(got, want, what):
    assert sorted(got) == sorted(want), what
    for key in want:
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), (what, key)


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


def check_one(name, data, tmpdir, valid=None):
    """Random bytes (valid None) must be refused; a damaged valid file refused or loaded unchanged."""
    load, error = LOADERS[name]
    path = write(tmpdir, data)
    try:
        loaded = load(path)
    except error as e:
        message = str(e)
        assert message and "\n" not in message, repr(message)
        return
    assert valid is not None, f"{name}: random bytes loaded: {data[:40]!r}"
    header, arrays = contents(name, loaded)
    want_header, want_arrays = valid
    assert header == want_header, f"{name}: a damaged file loaded another header"
    assert_same_arrays(arrays, want_arrays, f"{name}: a damaged file loaded other arrays")


def forbid_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to unpickle")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def run_fuzz(name, valid_files, n, monkeypatch):
    forbid_pickle(monkeypatch)
    tmpdir = tempfile.mkdtemp()
    valid = contents(name, LOADERS[name][0](write(tmpdir, valid_files[name])))

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def fuzz(case):
        kind, payload = case
        if kind == "mutate":
            check_one(name, mutate(valid_files[name], payload), tmpdir, valid)
        else:
            check_one(name, payload, tmpdir)

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
    header, arrays = contents(name, LOADERS[name][0](write(tmp_path, valid_files[name])))
    if name == "recording":  # 60 steps of karpathy's action 0 (up: Pong's RIGHT, 2) from seed 1, 61 screens
        assert header["length"] == 60 and header["seed"] == 1 and (arrays["actions"] == 2).all()
        assert arrays["screen_crc32"].shape == (61,) and header["return"] == arrays["rewards"].sum()
        return
    rng = np.random.default_rng(0)  # the fixture's model, built again
    model = nets.Sequential(nets.Linear(6, 5, rng=rng), nets.ReLU(), nets.Linear(5, 2, rng=rng))
    want = {("model." if name == "checkpoint" else "") + k: v for k, v in model.state_dict().items()}
    assert_same_arrays(arrays, want, name)
    assert header == {"note": "fuzz"} if name == "model" else header["step"] == 10 and header["head"] == "softmax"


def structured_cases(valid):
    """Well-formed archives with hostile contents: object arrays, wrong dtypes and shapes,
    missing keys, forged headers, gigantic declared sizes. Yields (label, bytes, header key or None)."""
    arrays = dict(np.load(io.BytesIO(valid), allow_pickle=False))
    header = json.loads(arrays.pop(HEADER_KEY).tobytes())
    first = next(iter(arrays))
    yield "object array", npz_bytes({**arrays, first: np.array([{"x": 1}, None], dtype=object)}, header), None
    yield "wrong dtype", npz_bytes({**arrays, first: arrays[first].astype(np.int64)}, header), None
    yield "float64 array", npz_bytes({**arrays, first: arrays[first].astype(np.float64)}, header), None
    yield "wrong shape", npz_bytes({**arrays, first: np.zeros((3, 3, 3), np.float32)}, header), None
    yield "missing key", npz_bytes({k: v for k, v in arrays.items() if k != first}, header), None
    yield "extra key", npz_bytes({**arrays, "zzz": np.zeros(3)}, header), None
    yield "no header", npz_bytes(arrays), None
    yield "header not json", npz_bytes(arrays, raw_header=np.frombuffer(b"{not json", np.uint8)), None
    yield "header a list", npz_bytes(arrays, [1, 2, 3]), None
    yield "deep json", npz_bytes(arrays, raw_header=np.frombuffer(b"[" * 100000, np.uint8)), None
    yield "header as str array", npz_bytes(arrays, raw_header=np.array(json.dumps(header))), None
    for key in list(header):
        yield "header without", npz_bytes(arrays, {k: v for k, v in header.items() if k != key}), key
        yield "header null", npz_bytes(arrays, {**header, key: None}), key
    yield "version 99", npz_bytes(arrays, {**header, "version": 99}), None
    if "architecture" in header:
        huge = {"type": "Sequential", "layers": [{"type": "Linear", "config":
                {"in_features": 10**7, "out_features": 10**7}}]}
        yield "huge architecture", npz_bytes(arrays, {**header, "architecture": huge}), None
        yield "unknown layer", npz_bytes(arrays, {**header, "architecture": {"type": "Evil"}}), None
        yield "bad config", npz_bytes(arrays, {**header, "architecture": {
            "type": "Linear", "config": {"in_features": "6", "out_features": [5]}}}), None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with zipfile.ZipFile(io.BytesIO(valid)) as src:
            for info in src.infolist():
                zf.writestr(info.filename, src.read(info))
        zf.writestr(*huge_npy_member("giant", (1 << 20, 1 << 20)))
    yield "gigantic declared array", buf.getvalue(), None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil.pkl", pickle.dumps({"a": 1}))
    yield "pickle member", buf.getvalue(), None


# What each forged archive's one-line error must say (a regular expression, case-insensitive).
REFUSED = {
    "object array": "has dtype object",
    "wrong dtype": "int64",
    "float64 array": "float64",
    "wrong shape": r"\(3, 3, 3\)",
    "missing key": r"missing \['0\.W'\]|holds arrays \['rewards', 'screen_crc32'\], expected",
    "extra key": r"holds arrays .*'zzz'",
    "no header": "no header",
    "header not json": "not valid JSON",
    "header a list": "not a JSON object",
    "deep json": "not valid JSON",
    "header as str array": r"no header|'__header__' has dtype <U",
    "version 99": "version 99",
    "huge architecture": "implausibly large",
    "unknown layer": "unknown layer type 'Evil'",
    "bad config": "'in_features' must be numbers",
    "gigantic declared array": r"'giant' declares shape \(1048576, 1048576\)",
    "pickle member": "unexpected member 'evil.pkl'",
}
# A header entry dropped or set to null must be refused with a message naming it, except these, which a
# loader does not need: provenance (versions, created), what has a default (dtype float32, meta {},
# models ["model"]), what only people read (step; a recording's preset, spec, protocol, sticky flags,
# how and when it ended, frame shape). The file layer (load_checkpoint) rebuilds the networks and
# leaves head and n_actions to agents.load. Each must load the valid file's arrays unchanged.
TOLERATED_DROPS = {
    "model": {"dtype", "versions", "meta"},
    "checkpoint": {"dtype", "models", "versions", "head", "n_actions", "step"},
    "agent": {"dtype", "models", "versions", "step"},
    "recording": {"preset", "spec", "protocol", "sticky", "repeat_action_probability", "versions", "ended_at",
                  "end", "frame_shape", "created"},
}
TOLERATED_NULLS = {name: keys - {"dtype", "meta", "models"} for name, keys in TOLERATED_DROPS.items()}
# Arrays outside the models: a checkpoint keeps them (the optimizer state; load_checkpoint returns them as
# its third value) and a model file ignores them; a recording's arrays are fixed, so it refuses one.
TOLERATED_EXTRA_ARRAY = {"model", "checkpoint", "agent"}


@pytest.mark.parametrize("name", list(LOADERS))
def test_structured_hostile_files(name, valid_files, tmp_path, monkeypatch):
    forbid_pickle(monkeypatch)
    load, error = LOADERS[name]
    _, valid_arrays = contents(name, load(write(tmp_path, valid_files[name])))
    for label, data, key in structured_cases(valid_files[name]):
        case = f"{name}: {label} {key or ''}".strip()
        tolerated = (label == "extra key" and name in TOLERATED_EXTRA_ARRAY
                     or label == "header without" and key in TOLERATED_DROPS[name]
                     or label == "header null" and key in TOLERATED_NULLS[name])
        path = write(tmp_path, data)
        if tolerated:
            header, arrays = contents(name, load(path))
            if name == "checkpoint" and label == "extra key":
                assert np.array_equal(arrays.pop("zzz"), np.zeros(3)), case  # kept, as the optimizer state is
            assert_same_arrays(arrays, valid_arrays, case)
            continue
        with pytest.raises(error) as e:
            load(path)
        message = str(e.value)
        assert message and "\n" not in message, (case, message)
        says = REFUSED[label] if key is None else key.rstrip("s")  # "models": "lists no model"
        assert re.search(says, message, re.IGNORECASE), (case, message)
