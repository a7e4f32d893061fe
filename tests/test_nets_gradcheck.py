"""Float64 finite-difference gradient checks of every layer and loss, for inputs and parameters."""
import numpy as np
import pytest

import nets

F64 = np.float64


def numeric_grad(f, a, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of a (perturbed in place)."""
    g = np.zeros(a.shape, F64)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        plus = f()
        a[idx] = old - eps
        minus = f()
        a[idx] = old
        g[idx] = (plus - minus) / (2 * eps)
    return g


def assert_close(analytic, numeric, what):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=what)


def away_from_zero(x, margin=0.05):
    """Keep kinks (ReLU at 0) out of reach of the finite-difference step."""
    return x + margin * np.sign(x)


def check_layer(layer, x, forward=None, check_input_grad=True):
    """Check dx and every grads[name] of layer against finite differences of sum(y * r)."""
    forward = forward or layer.forward
    y = forward(x)
    r = np.random.default_rng(1).standard_normal(y.shape)  # dL/dy for L = sum(y * r)

    def loss():
        return float(np.sum(forward(x) * r))

    forward(x)
    dx = layer.backward(r.copy())
    grads = {name: g.copy() for name, g in layer.grads.items()}
    if check_input_grad:
        assert dx.shape == x.shape
        assert_close(dx, numeric_grad(loss, x), f"{layer!r} dx")
    for name, p in layer.params.items():
        assert_close(grads[name], numeric_grad(loss, p), f"{layer!r} d{name}")
    return y


def rng_for(seed):
    return np.random.default_rng(seed)


def test_linear():
    rng = rng_for(0)
    check_layer(nets.Linear(4, 3, rng=rng, dtype=F64), rng.standard_normal((5, 4)))


def test_linear_without_input_grad():
    rng = rng_for(4)
    layer = nets.Linear(4, 3, input_grad=False, rng=rng, dtype=F64)
    x = rng.standard_normal((5, 4))
    layer.forward(x)
    assert layer.backward(np.ones((5, 3))) is None
    check_layer(layer, x, check_input_grad=False)


def test_dueling_head():
    rng = rng_for(9)
    layer = nets.DuelingHead(6, 5, 3, rng=rng, dtype=F64)
    check_layer(layer, away_from_zero(rng.standard_normal((4, 6))))
    assert set(layer.grads) == set(layer.params) and len(layer.grads) == 8


def test_dueling_head_with_atoms():
    """K atoms per action (QR-DQN's quantiles): outputs (N, A*K), the mean advantage per atom."""
    rng = rng_for(10)
    layer = nets.DuelingHead(6, 5, 3, atoms=4, rng=rng, dtype=F64)
    x = away_from_zero(rng.standard_normal((4, 6)))
    check_layer(layer, x)
    q = layer.forward(x).reshape(4, 3, 4)  # (N, A, K)
    value = layer._stream_forward(x, "v")[1]  # (N, K)
    np.testing.assert_allclose(q.mean(axis=1), value, rtol=1e-12)  # identifiable per atom
    assert layer.config()["atoms"] == 4 and "atoms" not in nets.DuelingHead(6, 5, 3).config()


def sparse_rows(rng, n, features, used):
    """-1/0/1 rows whose nonzeros fall in the first `used` columns, as Pong frame differences do."""
    x = np.zeros((n, features))
    x[:, :used] = rng.choice([-1.0, 0.0, 0.0, 1.0], (n, used))
    return x


def test_linear_sparse_input_matches_dense():
    rng = rng_for(5)
    sparse = nets.Linear(40, 3, sparse_input=True, rng=rng_for(6), dtype=F64)
    dense = nets.Linear(40, 3, rng=rng_for(6), dtype=F64)
    for x in (sparse_rows(rng, 6, 40, 7), rng.standard_normal((6, 40))):  # the second takes the dense path
        np.testing.assert_allclose(sparse.forward(x), dense.forward(x), rtol=1e-12)
        dy = rng.standard_normal((6, 3))
        np.testing.assert_allclose(sparse.backward(dy), dense.backward(dy), rtol=1e-12)
        for name in ("W", "b"):
            np.testing.assert_allclose(sparse.grads[name], dense.grads[name], rtol=1e-12, atol=1e-15)
    assert [cols for _, cols, _ in sparse.blocks] == [None]  # the dense batch used every column
    sparse.forward(sparse_rows(rng, 6, 40, 7))
    assert len(sparse.blocks[0][1]) <= 7
    check_layer(sparse, sparse_rows(rng, 5, 40, 6))


def test_linear_sparse_input_blocks_of_rows_keep_their_own_columns():
    """Rows go in blocks, each multiplying only its own nonzero columns; the sums are unchanged."""
    rng = rng_for(10)
    sparse = nets.Linear(50, 4, sparse_input=True, rng=rng_for(11), dtype=F64)
    dense = nets.Linear(50, 4, rng=rng_for(11), dtype=F64)
    sparse.block_rows = 4
    x = np.zeros((10, 50))
    x[:4, :5] = sparse_rows(rng, 4, 5, 5)  # block 1 uses columns 0-4
    x[4:8, 20:26] = sparse_rows(rng, 4, 6, 6)  # block 2 uses columns 20-25
    x[8:] = rng.standard_normal((2, 50))  # block 3 is dense
    np.testing.assert_allclose(sparse.forward(x), dense.forward(x), rtol=1e-12)
    dy = rng.standard_normal((10, 4))
    np.testing.assert_allclose(sparse.backward(dy), dense.backward(dy), rtol=1e-12)
    for name in ("W", "b"):
        np.testing.assert_allclose(sparse.grads[name], dense.grads[name], rtol=1e-12, atol=1e-15)
    starts = [start for start, _, _ in sparse.blocks]
    kept = [cols for _, cols, _ in sparse.blocks]
    assert starts == [0, 4, 8] and kept[2] is None
    assert set(kept[0]) <= set(range(5)) and set(kept[1]) <= set(range(20, 26))
    check_layer(sparse, x)


def test_linear_sparse_input_takes_int8_rows():
    layer = nets.Linear(30, 2, input_grad=False, sparse_input=True, rng=rng_for(7))
    x8 = sparse_rows(rng_for(8), 4, 30, 5).astype(np.int8)
    y = layer.forward(x8)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x8.astype(np.float32) @ layer.params["W"] + layer.params["b"], rtol=1e-6)


@pytest.mark.parametrize("n,c,h,w,out,kernel,stride,padding", [
    (2, 3, 7, 6, 4, 3, 1, 0),
    (2, 2, 9, 8, 3, 3, 2, 1),
    (1, 3, 8, 7, 2, (2, 3), (2, 1), (1, 2)),
    (2, 2, 12, 12, 3, 4, 4, 2),
    (3, 1, 5, 5, 2, 5, 3, 2),
])
def test_conv2d(n, c, h, w, out, kernel, stride, padding):
    rng = rng_for(h * w + c)
    layer = nets.Conv2d(c, out, kernel, stride, padding, rng=rng, dtype=F64)
    check_layer(layer, rng.standard_normal((n, c, h, w)))


def test_conv2d_without_input_grad():
    rng = rng_for(3)
    layer = nets.Conv2d(2, 3, 3, 2, 1, input_grad=False, rng=rng, dtype=F64)
    x = rng.standard_normal((2, 2, 7, 7))
    layer.forward(x)
    assert layer.backward(np.ones((2, 3, 4, 4))) is None
    check_layer(layer, x, check_input_grad=False)


@pytest.mark.parametrize("kernel,stride,shape", [(2, None, (2, 3, 6, 6)), (3, 2, (2, 2, 7, 8)),
                                                 ((2, 3), 1, (1, 2, 5, 6))])
def test_maxpool2d(kernel, stride, shape):
    check_layer(nets.MaxPool2d(kernel, stride, dtype=F64), rng_for(4).standard_normal(shape))


def test_flatten():
    check_layer(nets.Flatten(dtype=F64), rng_for(5).standard_normal((2, 3, 4, 2)))


@pytest.mark.parametrize("make", [lambda: nets.ReLU(dtype=F64), lambda: nets.LeakyReLU(0.1, dtype=F64),
                                  lambda: nets.Tanh(dtype=F64), lambda: nets.Sigmoid(dtype=F64)])
def test_activations(make):
    check_layer(make(), away_from_zero(rng_for(6).standard_normal((4, 5)) * 3))


def test_dropout_train_mode_fixed_mask():
    layer = nets.Dropout(0.4, dtype=F64)

    def forward(x):
        layer.rng = np.random.default_rng(7)  # the same mask on every call
        return layer.forward(x)

    y = check_layer(layer, rng_for(8).standard_normal((6, 5)), forward=forward)
    assert np.any(y == 0) and np.any(y != 0)


def test_embedding_params():
    layer = nets.Embedding(5, 3, rng=rng_for(9), dtype=F64)
    ids = np.array([[0, 2, 2], [4, 1, 0]])
    y = layer.forward(ids)
    r = rng_for(10).standard_normal(y.shape)
    assert layer.backward(r) is None
    assert_close(layer.grads["W"], numeric_grad(lambda: float(np.sum(layer.forward(ids) * r)), layer.params["W"]),
                 "Embedding dW")


def recurrent_case(layer, n, t, d, state):
    """Check dx, params, the initial state and the gradient on the final state, T >= 3."""
    rng = rng_for(11)
    x = rng.standard_normal((n, t, d))
    states = state if isinstance(state, tuple) else (state,)
    y = layer.forward(x, state)
    r = rng.standard_normal(y.shape)
    r_final = tuple(rng.standard_normal(s.shape) for s in states)

    def loss():
        hs = layer.forward(x, state)
        final = layer.final_state if isinstance(layer.final_state, tuple) else (layer.final_state,)
        return float(np.sum(hs * r) + sum(np.sum(f * rf) for f, rf in zip(final, r_final)))

    layer.forward(x, state)
    dx = layer.backward(r, r_final if isinstance(state, tuple) else r_final[0])
    dstate0 = layer.dstate0 if isinstance(layer.dstate0, tuple) else (layer.dstate0,)
    grads = {name: g.copy() for name, g in layer.grads.items()}
    assert_close(dx, numeric_grad(loss, x), f"{layer!r} dx")
    for name, p in layer.params.items():
        assert_close(grads[name], numeric_grad(loss, p), f"{layer!r} d{name}")
    for i, (s, ds) in enumerate(zip(states, dstate0)):
        assert_close(ds, numeric_grad(loss, s), f"{layer!r} dstate0[{i}]")


def test_rnn():
    rng = rng_for(12)
    recurrent_case(nets.RNN(3, 4, rng=rng, dtype=F64), 2, 4, 3, rng.standard_normal((2, 4)))


def test_lstm():
    rng = rng_for(13)
    state = (rng.standard_normal((2, 3)), rng.standard_normal((2, 3)))
    recurrent_case(nets.LSTM(3, 3, rng=rng, dtype=F64), 2, 5, 3, state)


@pytest.mark.parametrize("cls", [nets.RNN, nets.LSTM])
def test_recurrent_in_sequential_without_state(cls):
    rng = rng_for(14)
    model = nets.Sequential(cls(2, 3, rng=rng, dtype=F64), nets.Tanh(dtype=F64), dtype=F64)
    check_layer(model, rng.standard_normal((2, 3, 2)))
    check_sequential_params(model, rng.standard_normal((2, 3, 2)))


def check_sequential_params(model, x):
    y = model.forward(x)
    r = rng_for(15).standard_normal(y.shape)
    model.backward(r)
    grads = {name: g.copy() for name, _, g in model.parameters()}
    for name, p, _ in model.parameters():
        assert_close(grads[name], numeric_grad(lambda: float(np.sum(model.forward(x) * r)), p), f"Sequential {name}")


def test_sequential():
    rng = rng_for(16)
    model = nets.Sequential(
        nets.Conv2d(2, 3, 3, stride=2, padding=1, rng=rng, dtype=F64), nets.ReLU(dtype=F64),
        nets.Conv2d(3, 4, 2, rng=rng, dtype=F64), nets.MaxPool2d(2, dtype=F64), nets.Flatten(dtype=F64),
        nets.Linear(4 * 2 * 2, 5, rng=rng, dtype=F64), nets.Tanh(dtype=F64), nets.Linear(5, 2, rng=rng, dtype=F64),
        dtype=F64)
    x = rng.standard_normal((2, 2, 10, 10))
    check_layer(model, x)
    check_sequential_params(model, x)


# ---- losses -------------------------------------------------------------------------------------

def check_loss(loss, pred, *args, **kwargs):
    loss.forward(pred, *args, **kwargs)
    d = loss.backward()
    assert d.shape == pred.shape
    assert_close(d, numeric_grad(lambda: loss.forward(pred, *args, **kwargs), pred), f"{type(loss).__name__}")


def test_mse():
    rng = rng_for(20)
    check_loss(nets.MSE(), rng.standard_normal((4, 3)), rng.standard_normal((4, 3)))


def test_huber_both_regions():
    rng = rng_for(21)
    target = rng.standard_normal((5, 4))
    diff = rng.uniform(0.1, 0.8, (5, 4)) * rng.choice([-1, 1], (5, 4))
    diff[::2] *= 4  # some differences beyond delta, away from the kink at |d| = delta
    check_loss(nets.Huber(delta=1.0), target + diff, target)
    check_loss(nets.Huber(delta=0.5), target + diff, target)
    weights = rng.uniform(0.1, 1.0, (5, 4))  # prioritized replay's importance weights
    check_loss(nets.Huber(delta=1.0), target + diff, target, weights=weights)
    plain, weighted = nets.Huber(), nets.Huber()
    assert weighted.forward(target + diff, target, np.ones((5, 4))) == plain.forward(target + diff, target)


@pytest.mark.parametrize("weighted", [False, True])
def test_quantile_huber(weighted):
    """Both Huber regions, both signs of u; equal target atoms and weighted ones (the
    epsilon-greedy mixture); per-sample importance weights."""
    rng = rng_for(24)
    pred = rng.standard_normal((5, 4))
    target = pred[:, :1] + rng.uniform(0.1, 2.5, (5, 6)) * rng.choice([-1, 1], (5, 6))
    kwargs = {}
    if weighted:
        chance = rng.uniform(0.1, 1.0, (5, 6))
        kwargs = {"target_weights": chance / chance.sum(axis=1, keepdims=True), "weights": rng.uniform(0.1, 1, 5)}
    check_loss(nets.QuantileHuber(1.0), pred, target, **kwargs)
    loss = nets.QuantileHuber(1.0)
    value = loss.forward(pred, target, **kwargs)
    per_sample = loss.per_sample * kwargs.get("weights", 1.0)
    assert (loss.per_sample > 0).all() and value == pytest.approx(per_sample.mean(), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy(weighted):
    rng = rng_for(22)
    logits, labels = rng.standard_normal((6, 4)) * 2, rng.integers(0, 4, 6)
    kwargs = {"weights": rng.standard_normal(6)} if weighted else {}
    check_loss(nets.SoftmaxCrossEntropy(), logits, labels, **kwargs)


@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits(weighted):
    rng = rng_for(23)
    logits, target = rng.standard_normal((5, 3)) * 3, rng.uniform(0, 1, (5, 3))
    kwargs = {"weights": rng.uniform(0, 2, (5, 3))} if weighted else {}
    check_loss(nets.BCEWithLogits(), logits, target, **kwargs)


@pytest.mark.parametrize("weighted", [False, True])
def test_taken_action_huber_is_huber_on_the_gathered_values(weighted):
    """The fused loss against its unfused formula: gather q[rows, actions], nets.Huber, scatter the
    gradient into zeros; the same value, gradient and TD errors, also on a second call with other
    actions (the reused gradient array keeps nothing of the first)."""
    rng = np.random.default_rng(11)
    fused = nets.TakenActionHuber(1.0)
    for _ in range(2):
        q = (3 * rng.standard_normal((9, 4))).astype(np.float32)  # both Huber regions
        actions, target = rng.integers(4, size=9), rng.standard_normal(9).astype(np.float32)
        weights = rng.random(9).astype(np.float32) if weighted else None
        plain, rows = nets.Huber(1.0), np.arange(9)
        want = plain.forward(q[rows, actions], target, weights)
        dq_want = np.zeros_like(q)
        dq_want[rows, actions] = plain.backward()
        assert fused.forward(q, actions, target, weights) == want
        np.testing.assert_array_equal(fused.backward(), dq_want)
        np.testing.assert_array_equal(fused.diff, q[rows, actions] - target)
        np.testing.assert_array_equal(fused.taken, q[rows, actions])
    with pytest.raises(ValueError, match="actions"):
        fused.forward(q, actions[:3], target)


def test_taken_action_huber_gradient():
    rng = rng_for(23)
    q = rng.standard_normal((6, 3)) * 2
    actions, target = rng.integers(3, size=6), rng.standard_normal(6)
    check_loss(nets.TakenActionHuber(1.0), q, actions, target)
    check_loss(nets.TakenActionHuber(1.0), q, actions, target, weights=rng.uniform(0.1, 1.0, 6))
