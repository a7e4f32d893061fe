"""Save and load: bit-exact round trips for every layer type; bad shapes and damaged files fail
with the right exception and a one-line message; load never unpickles."""
import io
import json
import pickle
import zipfile

import numpy as np
import pytest

import nets
from nets.npzfile import HEADER_KEY, write_npz


def conv_model(dtype=np.float32):
    rng = np.random.default_rng(0)
    return nets.Sequential(
        nets.Conv2d(2, 4, 3, stride=2, padding=1, input_grad=False, rng=rng, dtype=dtype), nets.ReLU(dtype=dtype),
        nets.Conv2d(4, 4, (2, 3), stride=(1, 2), rng=rng, dtype=dtype), nets.LeakyReLU(0.2, dtype=dtype),
        nets.MaxPool2d(2, 1, dtype=dtype), nets.Flatten(dtype=dtype),
        nets.Linear(4 * 3 * 1, 6, rng=rng, dtype=dtype), nets.Dropout(0.3, rng=rng, dtype=dtype),
        nets.Sigmoid(dtype=dtype), nets.Linear(6, 3, rng=rng, dtype=dtype), nets.Tanh(dtype=dtype), dtype=dtype)


def sequence_model(dtype=np.float32):
    rng = np.random.default_rng(1)
    return nets.Sequential(nets.Embedding(7, 4, rng=rng, dtype=dtype), nets.LSTM(4, 5, rng=rng, dtype=dtype),
                           nets.RNN(5, 3, rng=rng, dtype=dtype), dtype=dtype)


CONV_INPUT = np.random.default_rng(2).standard_normal((3, 2, 10, 12))
SEQUENCE_INPUT = np.random.default_rng(3).integers(0, 7, (2, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make,x", [(conv_model, CONV_INPUT), (sequence_model, SEQUENCE_INPUT)])
def test_save_load_is_bit_exact(tmp_path, make, x, dtype):
    model = make(dtype).eval()
    path = tmp_path / "model.npz"
    nets.save(path, model, {"note": "hello", "step": 3})
    loaded, meta = nets.load(path)
    assert meta == {"note": "hello", "step": 3}
    assert repr(loaded) == repr(model)
    assert [n for n, _, _ in loaded.parameters()] == [n for n, _, _ in model.parameters()]
    for (_, p, _), (_, q, _) in zip(model.parameters(), loaded.parameters()):
        assert q.dtype == p.dtype
        np.testing.assert_array_equal(q, p)
    x = x.astype(dtype) if x.dtype.kind == "f" else x
    np.testing.assert_array_equal(loaded.eval().forward(x), model.forward(x))


def test_conv_layer_config_round_trips():
    layer = nets.Conv2d(3, 5, (2, 4), stride=(3, 1), padding=2, input_grad=False)
    spec = json.loads(json.dumps(nets.Sequential(layer).spec()))
    rebuilt = nets.build(spec).layers[0]
    assert (rebuilt.kernel_size, rebuilt.stride, rebuilt.padding) == ((2, 4), (3, 1), (2, 2))
    assert rebuilt.input_grad is False and rebuilt.params["W"].shape == (5, 3, 2, 4)


def test_linear_layer_flags_round_trip():
    spec = json.loads(json.dumps(nets.Sequential(nets.Linear(6, 2, input_grad=False, sparse_input=True),
                                                 nets.Linear(2, 1)).spec()))
    first, second = nets.build(spec).layers
    assert (first.input_grad, first.sparse_input) == (False, True)
    assert (second.input_grad, second.sparse_input) == (True, False)
    assert spec["layers"][1]["config"] == {"in_features": 2, "out_features": 1}  # old checkpoints read the same


# ---- bad input shapes ---------------------------------------------------------------------------

def escaped(shape):
    return str(shape).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("layer,shape", [
    (nets.Linear(4, 3), (5, 3)),
    (nets.Linear(4, 3), (2, 5, 4)),
    (nets.Conv2d(3, 2, 3), (1, 2, 8, 8)),
    (nets.Conv2d(3, 2, 3), (3, 8, 8)),
    (nets.Conv2d(3, 2, 5, padding=1), (1, 3, 2, 8)),
    (nets.MaxPool2d(3), (1, 1, 2, 2)),
    (nets.RNN(3, 4), (2, 5)),
    (nets.RNN(3, 4), (2, 5, 2)),
    (nets.LSTM(3, 4), (2, 5, 4)),
    (nets.LSTM(3, 4), (2, 0, 3)),
])
def test_bad_input_shapes_raise_value_error_naming_them(layer, shape):
    with pytest.raises(ValueError, match=escaped(shape)):
        layer.forward(np.zeros(shape, np.float32))


def test_bad_recurrent_state_shapes_name_them():
    x = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(3, 4\)"):
        nets.RNN(3, 4).forward(x, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 5\)"):
        nets.LSTM(3, 4).forward(x, (np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32)))
    lstm = nets.LSTM(3, 4)
    lstm.forward(x)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 2, 4\)"):
        lstm.backward(np.zeros((2, 2, 4), np.float32))


def test_model_forward_names_the_bad_shape():
    with pytest.raises(ValueError, match=escaped((3, 3, 8, 8))):
        conv_model().forward(np.zeros((3, 3, 8, 8), np.float32))


@pytest.mark.parametrize("loss,pred,target", [
    (nets.MSE(), (4, 2), (4, 3)),
    (nets.Huber(), (4, 1), (4,)),
    (nets.BCEWithLogits(), (3, 2), (2, 3)),
])
def test_loss_shape_mismatch_names_both(loss, pred, target):
    with pytest.raises(ValueError, match=escaped(pred) + ".*" + escaped(target)):
        loss.forward(np.zeros(pred, np.float32), np.zeros(target, np.float32))


def test_cross_entropy_label_shape_mismatch():
    with pytest.raises(ValueError, match=escaped((3,))):
        nets.SoftmaxCrossEntropy().forward(np.zeros((4, 2), np.float32), np.zeros(3, int))


# ---- damaged checkpoints ------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    model = conv_model()
    path = tmp_path / "model.npz"
    nets.save(path, model, {"step": 1})
    return path, model


def assert_checkpoint_error(path):
    with pytest.raises(nets.CheckpointError) as info:
        nets.load(path)
    message = str(info.value)
    assert message and "\n" not in message


def test_missing_file(tmp_path):
    assert_checkpoint_error(tmp_path / "nope.npz")


def test_directory(tmp_path):
    assert_checkpoint_error(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    assert_checkpoint_error(tmp_path / "empty.npz")


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes(tmp_path, seed):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(seed).bytes(5000))
    assert_checkpoint_error(path)


def test_random_bytes_behind_a_zip_signature(tmp_path):
    path = tmp_path / "fake.npz"
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(4).bytes(3000))
    assert_checkpoint_error(path)


def test_truncated_at_every_length_class(saved):
    path, _ = saved
    blob = path.read_bytes()
    for cut in sorted({1, 10, 100, len(blob) // 3, len(blob) // 2, len(blob) - 100, len(blob) - 22, len(blob) - 1}):
        path.write_bytes(blob[:cut])
        assert_checkpoint_error(path)


def test_bit_flips_raise_or_load_the_same_arrays(saved):
    """A flipped bit must never give different weights: either CheckpointError, or (a flip in a
    field nothing reads, like a timestamp) the very same model."""
    path, model = saved
    blob = bytearray(path.read_bytes())
    rng = np.random.default_rng(5)
    positions = rng.choice(len(blob), size=min(300, len(blob)), replace=False)
    errors = 0
    for pos in positions:
        damaged = bytearray(blob)
        damaged[pos] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(damaged))
        try:
            loaded, _ = nets.load(path)
        except nets.CheckpointError:
            errors += 1
            continue
        for (_, p, _), (_, q, _) in zip(model.parameters(), loaded.parameters()):
            np.testing.assert_array_equal(q, p)
    assert errors > len(positions) // 2


def read_members(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_missing_array(saved):
    path, _ = saved
    arrays = read_members(path)
    del arrays["model.0.W"]
    np.savez(path, **arrays)
    assert_checkpoint_error(path)


def test_extra_array(saved):
    path, _ = saved
    arrays = read_members(path)
    arrays["model.99.W"] = np.zeros(3, np.float32)
    np.savez(path, **arrays)
    assert_checkpoint_error(path)


def test_wrong_shape_and_wrong_dtype(saved):
    path, _ = saved
    arrays = read_members(path)
    np.savez(path, **{**arrays, "model.0.W": arrays["model.0.W"][:1]})
    assert_checkpoint_error(path)
    np.savez(path, **{**arrays, "model.0.W": arrays["model.0.W"].astype(np.float64)})
    assert_checkpoint_error(path)


def test_missing_header(saved):
    path, _ = saved
    arrays = read_members(path)
    del arrays[HEADER_KEY]
    np.savez(path, **arrays)
    assert_checkpoint_error(path)


@pytest.mark.parametrize("header", [
    {"format": "someone-else", "version": 1},
    {"format": "grok-arcade.nets", "version": 999},
    {"format": "grok-arcade.nets", "version": 1},  # no architecture
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32", "architecture": {"type": "Nope"}},
    {"format": "grok-arcade.nets", "version": 1, "dtype": "int8", "architecture": {"type": "Sequential", "layers": []}},
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32",
     "architecture": {"type": "Sequential", "layers": [{"type": "Linear", "config": {"bogus": 1}}]}},
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32",
     "architecture": {"type": "Sequential", "layers": [{"type": "Conv2d", "config": {
         "in_channels": 2, "out_channels": 4, "kernel_size": "x"}}]}},
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32", "meta": [1],
     "architecture": {"type": "Sequential", "layers": []}},
    # sizes that would allocate tens of gigabytes before any array is compared
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32",
     "architecture": {"type": "Sequential", "layers": [{"type": "Linear", "config": {
         "in_features": 1e6, "out_features": 1e6}}]}},
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32",
     "architecture": {"type": "Sequential", "layers": [{"type": "DuelingHead", "config": {
         "in_features": 3136, "hidden": 512, "n_actions": 18, "atoms": 100000}}]}},
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32",
     "architecture": {"type": "Sequential", "layers": [{"type": "DuelingHead", "config": {
         "in_features": [3136, 2], "hidden": 512, "n_actions": 6}}]}},
    {"format": "grok-arcade.nets", "version": 1, "dtype": "float32",
     "architecture": {"type": "Sequential", "layers": [{"type": "Linear", "config": {
         "in_features": float("inf"), "out_features": 3}}]}},
])
def test_wrong_format_or_architecture(tmp_path, header):
    path = tmp_path / "foreign.npz"
    write_npz(path, {}, header)
    assert_checkpoint_error(path)


def test_header_not_json(saved):
    path, _ = saved
    arrays = read_members(path)
    arrays[HEADER_KEY] = np.frombuffer(b"{not json", np.uint8)
    np.savez(path, **arrays)
    assert_checkpoint_error(path)


def test_plain_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(4))
    assert_checkpoint_error(path)


def test_zip_with_other_members(tmp_path):
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert_checkpoint_error(path)


class Tripwire:
    """Unpickling this writes a file: proof that something unpickled."""
    marker = None

    def __reduce__(self):
        return (open, (str(Tripwire.marker), "w"))


def test_object_arrays_are_refused_and_never_unpickled(saved, tmp_path, monkeypatch):
    path, _ = saved
    Tripwire.marker = tmp_path / "unpickled"
    calls = []
    for name in ("load", "loads"):
        real = getattr(pickle, name)
        monkeypatch.setattr(pickle, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    arrays = read_members(path)
    evil = np.empty(1, dtype=object)
    evil[0] = Tripwire()
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, "model.0.W": evil})
    path.write_bytes(buf.getvalue())
    assert_checkpoint_error(path)
    assert not Tripwire.marker.exists() and not calls
    monkeypatch.undo()


def test_save_is_atomic_and_leaves_no_temp_files(saved):
    path, model = saved
    nets.save(path, model)  # overwrite
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.npz"]


def test_header_alone_reads_the_header_and_refuses_what_read_npz_refuses(saved, tmp_path):
    """read_npz_header: the header read_npz gives, without reading the arrays (a damaged weight
    still lets the header be read), and the same one-line errors for files that are not ours."""
    from nets.npzfile import read_npz, read_npz_header
    path, _ = saved
    assert read_npz_header(path, nets.CheckpointError) == read_npz(path, nets.CheckpointError)[1]
    arrays = read_members(path)
    weights = next(k for k in arrays if k != HEADER_KEY)
    with zipfile.ZipFile(tmp_path / "half.npz", "w") as zf:  # a weight member that is not an array
        zf.writestr(weights + ".npy", b"garbage")
        buffer = io.BytesIO()
        np.save(buffer, arrays[HEADER_KEY])
        zf.writestr(HEADER_KEY + ".npy", buffer.getvalue())
    assert read_npz_header(tmp_path / "half.npz", nets.CheckpointError)["format"] == "grok-arcade.nets"
    bad = {"missing": tmp_path / "nope.npz", "dir": tmp_path, "random": tmp_path / "r.npz",
           "truncated": tmp_path / "t.npz", "headerless": tmp_path / "h.npz", "not json": tmp_path / "j.npz"}
    bad["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    bad["truncated"].write_bytes(path.read_bytes()[:-30])
    np.savez(bad["headerless"], **{k: v for k, v in arrays.items() if k != HEADER_KEY})
    np.savez(bad["not json"], **{**arrays, HEADER_KEY: np.frombuffer(b"{not json", np.uint8)})
    for what, p in bad.items():
        with pytest.raises(nets.CheckpointError) as info:
            read_npz_header(p, nets.CheckpointError)
        assert str(info.value) and "\n" not in str(info.value), what
