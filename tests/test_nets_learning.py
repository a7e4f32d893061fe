"""The stack learns: XOR with an MLP, recall-the-first-symbol with an LSTM, and the optimizers
follow PyTorch's update rules (written out by hand here in float64: torch is not needed)."""
import numpy as np
import pytest

import nets


def test_mlp_learns_xor():
    rng = np.random.default_rng(0)
    model = nets.Sequential(nets.Linear(2, 8, rng=rng), nets.Tanh(), nets.Linear(8, 1, rng=rng))
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    loss, opt = nets.BCEWithLogits(), nets.Adam(model, lr=0.05)
    for _ in range(300):
        value = loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
    assert value < 0.05
    np.testing.assert_array_equal(model.forward(x) > 0, y > 0.5)


def test_quantile_huber_learns_the_quantiles_of_each_inputs_returns():
    """QR-DQN's loss regresses quantiles: a Linear layer on one-hot inputs learns, at the midpoints
    tau_i = (2i + 1) / 10, the quantiles of an exponential(1) return for input 0 and of a
    uniform(2, 4) one for input 1, from samples alone. A small kappa (delta) makes its minimizer
    the plain quantile; kappa = 1 (QR-DQN's) would give a Huber quantile between it and the mean."""
    rng = np.random.default_rng(5)
    model = nets.Sequential(nets.Linear(2, 5, rng=rng))
    loss, opt = nets.QuantileHuber(delta=0.01), nets.Adam(model, lr=0.01)
    x = np.eye(2, dtype=np.float32)[np.arange(32) % 2]  # (32, 2): half the rows each input
    for _ in range(2000):
        target = np.where(x[:, :1] > 0, rng.exponential(1.0, (32, 64)), rng.uniform(2.0, 4.0, (32, 64)))
        loss.forward(model.forward(x), target.astype(np.float32))
        model.backward(loss.backward())
        opt.step()
    tau = (np.arange(5) + 0.5) / 5
    got = model.forward(np.eye(2, dtype=np.float32))  # (2, 5)
    np.testing.assert_allclose(got[0], -np.log(1 - tau), atol=0.08)
    np.testing.assert_allclose(got[1], 2.0 + 2.0 * tau, atol=0.08)


def test_lstm_recalls_the_first_symbol():
    """Sequences of 6 random symbols out of 4; predict the first one after reading the last."""
    rng = np.random.default_rng(1)
    vocab, steps, hidden = 4, 6, 16
    embed = nets.Embedding(vocab, 8, rng=rng)
    lstm = nets.LSTM(8, hidden, rng=rng)
    head = nets.Linear(hidden, vocab, rng=rng)
    model = nets.Sequential(embed, lstm)  # for the optimizer: parameters of embed and lstm
    loss = nets.SoftmaxCrossEntropy()
    opts = [nets.Adam(model, lr=0.02), nets.Adam(nets.Sequential(head), lr=0.02)]

    def logits(ids):
        hs = model.forward(ids)  # (N, T, H)
        return head.forward(hs[:, -1])  # (N, vocab)

    for _ in range(250):
        ids = rng.integers(0, vocab, (32, steps))
        loss.forward(logits(ids), ids[:, 0])
        dlast = head.backward(loss.backward())  # (N, H)
        dh = np.zeros((ids.shape[0], steps, hidden), np.float32)
        dh[:, -1] = dlast
        model.backward(dh)
        for opt in opts:
            opt.step()
    test_ids = rng.integers(0, vocab, (500, steps))
    accuracy = np.mean(logits(test_ids).argmax(axis=1) == test_ids[:, 0])
    assert accuracy >= 0.9


# ---- optimizers against PyTorch's update rules --------------------------------------------------

def setup(steps=4):
    """A one-layer model in float64, its initial params, and a fixed gradient for each step."""
    rng = np.random.default_rng(2)
    model = nets.Sequential(nets.Linear(3, 2, rng=rng, dtype=np.float64), dtype=np.float64)
    grads = [{name: rng.standard_normal(p.shape) for name, p, _ in model.parameters()} for _ in range(steps)]
    start = {name: p.copy() for name, p, _ in model.parameters()}
    return model, grads, start


def run(model, opt, grads):
    for step_grads in grads:
        for name, _, g in model.parameters():
            g[...] = step_grads[name]
        opt.step()
    return {name: p for name, p, _ in model.parameters()}


def assert_params(got, want):
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_torch_rule(momentum):
    model, grads, p = setup()
    got = run(model, nets.SGD(model, lr=0.1, momentum=momentum), grads)
    buf = {}
    for t, g in enumerate(grads):  # torch.optim.SGD, dampening 0, no nesterov
        for k in p:
            if momentum:
                buf[k] = g[k].copy() if t == 0 else momentum * buf[k] + g[k]
                p[k] = p[k] - 0.1 * buf[k]
            else:
                p[k] = p[k] - 0.1 * g[k]
    assert_params(got, p)


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_matches_torch_rule(centered):
    model, grads, p = setup()
    lr, alpha, eps = 0.01, 0.99, 1e-8
    got = run(model, nets.RMSProp(model, lr=lr, decay=alpha, eps=eps, centered=centered), grads)
    sq = {k: np.zeros_like(v) for k, v in p.items()}
    avg = {k: np.zeros_like(v) for k, v in p.items()}
    for g in grads:  # torch.optim.RMSprop, no momentum
        for k in p:
            sq[k] = alpha * sq[k] + (1 - alpha) * g[k] ** 2
            if centered:
                avg[k] = alpha * avg[k] + (1 - alpha) * g[k]
                denom = np.sqrt(sq[k] - avg[k] ** 2) + eps
            else:
                denom = np.sqrt(sq[k]) + eps
            p[k] = p[k] - lr * g[k] / denom
    assert_params(got, p)


def test_centered_rmsprop_stays_finite_under_a_constant_gradient():
    """DeepMind's RMSProp (the DQN option) on a gradient that never changes: v - m*m is then zero up to
    float32 rounding, and a negative rounding under the square root used to turn every weight into NaN."""
    rng = np.random.default_rng(0)
    model = nets.Sequential(nets.Linear(100, 100, rng=rng))
    for _, _, g in model.parameters():
        g[...] = rng.standard_normal(g.shape)
    start = {name: p.copy() for name, p, _ in model.parameters()}
    opt = nets.RMSProp(model, lr=1e-4, decay=0.95, eps=0.01, centered=True)
    with np.errstate(invalid="raise"):
        for _ in range(300):
            opt.step()
    for name, p, g in model.parameters():
        assert p.dtype == np.float32 and np.isfinite(p).all(), name
        assert (np.sign(start[name] - p) == np.sign(g)).all(), name  # every step went downhill


def test_adam_matches_torch_rule():
    model, grads, p = setup(steps=5)
    lr, (b1, b2), eps = 0.003, (0.9, 0.999), 1e-8
    got = run(model, nets.Adam(model, lr=lr, betas=(b1, b2), eps=eps), grads)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, g in enumerate(grads, start=1):  # torch.optim.Adam, no weight decay, no amsgrad
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            denom = np.sqrt(v[k]) / np.sqrt(1 - b2 ** t) + eps
            p[k] = p[k] - (lr / (1 - b1 ** t)) * m[k] / denom
    assert_params(got, p)


def test_adam_in_pieces_is_bit_identical(monkeypatch):
    """Pieces of 4 elements (the 3x2 weight is cut mid-row): the same bits as the whole-array update."""
    model, grads, _ = setup(steps=4)
    start = {name: p.copy() for name, p, _ in model.parameters()}
    monkeypatch.setattr(nets.Adam, "CHUNK", 1 << 30)
    want = {k: v.copy() for k, v in run(model, nets.Adam(model, lr=0.003), grads).items()}
    model.load_state_dict(start)
    monkeypatch.setattr(nets.Adam, "CHUNK", 4)
    opt = nets.Adam(model, lr=0.003)
    got = run(model, opt, grads)
    assert len(opt._pieces) == 3  # W in 4 + 2, b whole
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("make", [
    lambda m: nets.SGD(m, lr=0.1), lambda m: nets.SGD(m, lr=0.1, momentum=0.9),
    lambda m: nets.RMSProp(m, lr=0.01), lambda m: nets.RMSProp(m, lr=0.01, centered=True),
    lambda m: nets.Adam(m, lr=0.01)], ids=["sgd", "sgd-momentum", "rmsprop", "rmsprop-centered", "adam"])
def test_optimizer_step_allocates_no_parameter_sized_arrays(make):
    """After the first step (state and scratch), a step updates in place: numpy reports its
    allocations to tracemalloc, and a 4 MB weight would show as a 4 MB peak."""
    import tracemalloc
    rng = np.random.default_rng(0)
    model = nets.Sequential(nets.Linear(1000, 1000, rng=rng))
    for _, _, g in model.parameters():
        g[...] = rng.standard_normal(g.shape)
    opt = make(model)
    opt.step()
    tracemalloc.start()
    try:
        opt.step()
        opt.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"a step allocated {peak} bytes at its peak"


def test_adam_state_round_trip_resumes_exactly():
    model, grads, _ = setup(steps=4)
    opt = nets.Adam(model, lr=0.01)
    run(model, opt, grads[:2])
    info, arrays = opt.state_dict()
    saved = {name: p.copy() for name, p, _ in model.parameters()}
    arrays = {k: a.copy() for k, a in arrays.items()}
    want = run(model, opt, grads[2:])
    model2, _, _ = setup()
    model2.load_state_dict(saved)
    opt2 = nets.Adam(model2, lr=0.01)
    opt2.load_state_dict(info, arrays)
    got = run(model2, opt2, grads[2:])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_clip_grad_norm():
    model, grads, _ = setup(steps=1)
    for name, _, g in model.parameters():
        g[...] = grads[0][name]
    norm = np.sqrt(sum(np.sum(g ** 2) for g in grads[0].values()))
    assert nets.clip_grad_norm(model, 0.5) == pytest.approx(norm)
    after = np.sqrt(sum(np.sum(g ** 2) for _, _, g in model.parameters()))
    assert after == pytest.approx(0.5, rel=1e-5)
