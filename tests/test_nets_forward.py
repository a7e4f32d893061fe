"""Forward values of every layer and loss against formulas written out here, element by element.

The gradient checks (test_nets_gradcheck.py) compare backward with finite differences of the code's
own forward, so a forward that computes the wrong thing consistently (a loss summed where it should be
averaged, LSTM gates in another order, dropout that forgets to rescale) passes them. These tests
compute what each forward should give from its definition, in plain Python loops over scalars (math,
not numpy's vectorised paths), and compare.
"""
import math

import numpy as np
import pytest

import nets
from reference import conv2d_reference, maxpool2d_reference

F64 = np.float64


def rng_for(seed):
    return np.random.default_rng(seed)


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def scalar_sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


# ----------------------------------------------------------------------------- dense layers and activations

def test_linear_is_x_times_w_plus_b():
    layer = nets.Linear(4, 3, rng=rng_for(0), dtype=F64)
    W, b = layer.params["W"], layer.params["b"]
    assert W.shape == (4, 3)  # (in, out): y = x @ W, not x @ W.T
    x = rng_for(1).standard_normal((5, 4))
    want = np.array([[b[o] + sum(x[n, i] * W[i, o] for i in range(4)) for o in range(3)] for n in range(5)])
    close(layer.forward(x), want)
    sparse = nets.Linear(4, 3, sparse_input=True, rng=rng_for(0), dtype=F64)
    x[:, 1] = 0.0
    want = np.array([[b[o] + sum(x[n, i] * W[i, o] for i in range(4)) for o in range(3)] for n in range(5)])
    close(sparse.forward(x), want)


ACTIVATIONS = [
    (lambda: nets.ReLU(dtype=F64), lambda v: v if v > 0 else 0.0),
    (lambda: nets.LeakyReLU(0.1, dtype=F64), lambda v: v if v > 0 else 0.1 * v),
    (lambda: nets.Tanh(dtype=F64), lambda v: (math.exp(v) - math.exp(-v)) / (math.exp(v) + math.exp(-v))),
    (lambda: nets.Sigmoid(dtype=F64), lambda v: 1.0 / (1.0 + math.exp(-v))),
]


@pytest.mark.parametrize("make, formula", ACTIVATIONS, ids=["relu", "leaky_relu", "tanh", "sigmoid"])
def test_activations_elementwise(make, formula):
    x = np.concatenate([rng_for(2).standard_normal(20) * 3, [0.0, -1e-3, 1e-3, 5.0, -5.0]])[None]  # (1, 25)
    close(make().forward(x), np.array([[formula(v) for v in x[0]]]))


def test_sigmoid_stays_finite_and_exact_far_from_zero():
    x = np.array([[-800.0, -40.0, 40.0, 800.0]])
    y = nets.Sigmoid(dtype=F64).forward(x)
    close(y, np.array([[scalar_sigmoid(v) for v in x[0]]]), tol=1e-300)
    assert y[0, 0] >= 0 and y[0, 3] == 1.0


def test_flatten_keeps_row_major_order():
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    y = nets.Flatten(dtype=F64).forward(x)
    assert y.shape == (2, 12) and [y[1, k] for k in range(12)] == [12.0 + k for k in range(12)]


def test_embedding_picks_rows():
    layer = nets.Embedding(5, 3, rng=rng_for(3), dtype=F64)
    ids = np.array([[4, 0], [2, 2]])
    y = layer.forward(ids)
    for n in range(2):
        for t in range(2):
            assert list(y[n, t]) == list(layer.params["W"][ids[n, t]])


# ----------------------------------------------------------------------------- dropout

def test_dropout_zeroes_a_fraction_p_and_scales_the_rest_by_1_over_1_minus_p():
    p = 0.3
    layer = nets.Dropout(p, rng=rng_for(4), dtype=F64)
    x = rng_for(5).uniform(1.0, 2.0, (200, 100))  # no zeros of its own
    y = layer.forward(x)
    kept = y != 0
    close(y[kept], x[kept] / (1 - p))  # inverted dropout: kept units are scaled up in training
    assert abs(1 - kept.mean() - p) < 0.01  # 20,000 draws: the dropped fraction is p within 1%
    assert abs(y.sum() / x.sum() - 1) < 0.01  # so the expected sum is unchanged
    layer.training = False  # what Sequential.eval() sets
    assert layer.forward(x) is x  # identity in eval mode, no rescaling there
    assert nets.Dropout(0.0, dtype=F64).forward(x) is x


# ----------------------------------------------------------------------------- losses

def test_mse_is_the_mean_over_every_element():
    pred, target = rng_for(6).standard_normal((4, 3)), rng_for(7).standard_normal((4, 3))
    want = sum((pred[i, j] - target[i, j]) ** 2 for i in range(4) for j in range(3)) / 12
    assert nets.MSE().forward(pred, target) == pytest.approx(want, rel=1e-12)


def huber_scalar(d, delta):
    return 0.5 * d * d if abs(d) <= delta else delta * (abs(d) - 0.5 * delta)


@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_huber_is_the_mean_of_smooth_l1_over_every_element(delta):
    pred = np.array([[0.1, -0.3, 2.0], [-3.0, 0.9, 0.45]])
    target = np.zeros_like(pred)
    want = sum(huber_scalar(d, delta) for d in pred.ravel()) / pred.size
    assert nets.Huber(delta).forward(pred, target) == pytest.approx(want, rel=1e-12)
    w = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0]])
    want = sum(wi * huber_scalar(d, delta) for d, wi in zip(pred.ravel(), w.ravel())) / pred.size
    assert nets.Huber(delta).forward(pred, target, w) == pytest.approx(want, rel=1e-12)


def test_softmax_and_log_softmax_rows():
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 999.0]])  # the second row overflows a naive exp
    for row, out, log_out in zip(z, nets.softmax(z), nets.log_softmax(z)):
        m = max(row)
        total = sum(math.exp(v - m) for v in row)
        close(out, [math.exp(v - m) / total for v in row])
        close(log_out, [v - m - math.log(total) for v in row])


def test_softmax_cross_entropy_is_the_mean_negative_log_likelihood_over_the_batch():
    logits = rng_for(8).standard_normal((5, 4)) * 2
    labels = np.array([0, 3, 1, 1, 2])

    def nll(row, label):
        return -(row[label] - math.log(sum(math.exp(v) for v in row)))

    want = sum(nll(logits[n], labels[n]) for n in range(5)) / 5
    assert nets.SoftmaxCrossEntropy().forward(logits, labels) == pytest.approx(want, rel=1e-12)
    w = np.array([1.0, -2.0, 0.5, 0.0, 3.0])  # policy gradient's advantages may be negative
    want = sum(w[n] * nll(logits[n], labels[n]) for n in range(5)) / 5
    assert nets.SoftmaxCrossEntropy().forward(logits, labels, w) == pytest.approx(want, rel=1e-12)


def test_bce_with_logits_is_the_mean_binary_cross_entropy_over_every_element():
    x = np.array([[-3.0, -0.2, 0.0], [0.7, 4.0, 60.0]])
    t = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])

    def bce(v, target):
        p = scalar_sigmoid(v)
        return -(target * math.log(p) + (1 - target) * math.log1p(-p)) if 0 < p < 1 else \
            (v if target == 0 else 0.0)  # p rounds to 1 at v = 60: -log(1 - p) = v + log(1 + e^-v)

    want = sum(bce(v, target) for v, target in zip(x.ravel(), t.ravel())) / x.size
    assert nets.BCEWithLogits().forward(x, t) == pytest.approx(want, rel=1e-12)
    w = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.5]])
    want = sum(wi * bce(v, target) for v, target, wi in zip(x.ravel(), t.ravel(), w.ravel())) / x.size
    assert nets.BCEWithLogits().forward(x, t, w) == pytest.approx(want, rel=1e-12)


def test_quantile_huber_sums_over_quantiles_and_averages_over_targets_and_samples():
    """Dabney et al.'s loss as Dopamine computes it: rho_tau(u) = |tau - [u < 0]| huber(u) / kappa,
    tau_i = (2i + 1) / 2K, summed over the K predicted quantiles, averaged over the M target atoms
    (or weighted by their probabilities), then averaged over samples (or weighted)."""
    kappa = 1.0
    pred = np.array([[-1.0, 0.2, 0.5, 3.0], [0.0, 0.1, 0.2, 0.3]])  # (B=2, K=4)
    target = np.array([[0.0, 2.5, -0.4], [1.0, -2.0, 0.1]])  # (B=2, M=3)
    probs = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    weights = np.array([0.5, 2.0])

    def per_sample(b, p=None):
        k, m = pred.shape[1], target.shape[1]
        total = 0.0
        for i in range(k):
            tau = (2 * i + 1) / (2 * k)
            for j in range(m):
                u = target[b, j] - pred[b, i]
                rho = abs(tau - (1.0 if u < 0 else 0.0)) * huber_scalar(u, kappa) / kappa
                total += rho * (1.0 / m if p is None else p[b, j])
        return total

    loss = nets.QuantileHuber(kappa)
    assert loss.forward(pred, target) == pytest.approx((per_sample(0) + per_sample(1)) / 2, rel=1e-12)
    want = (weights[0] * per_sample(0, probs) + weights[1] * per_sample(1, probs)) / 2
    assert loss.forward(pred, target, probs, weights) == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------- recurrent steps

def matvec(v, M, col):
    """sum_k v[k] M[k, col]."""
    return sum(v[k] * M[k, col] for k in range(len(v)))


def test_rnn_steps_are_tanh_of_input_plus_recurrent_plus_bias():
    n, t, d, h = 2, 4, 3, 5
    layer = nets.RNN(d, h, rng=rng_for(9), dtype=F64)
    Wx, Wh, b = layer.params["Wx"], layer.params["Wh"], layer.params["b"]
    x = rng_for(10).standard_normal((n, t, d))
    h0 = rng_for(11).standard_normal((n, h)) * 0.5
    out = layer.forward(x, h0)
    for a in range(n):
        state = list(h0[a])
        for s in range(t):
            state = [math.tanh(matvec(x[a, s], Wx, j) + matvec(state, Wh, j) + b[j]) for j in range(h)]
            close(out[a, s], state)
        close(layer.final_state[a], state)


def test_lstm_steps_with_the_gate_order_input_forget_cell_output():
    """z = x_t Wx + h_{t-1} Wh + b, cut into four H-wide blocks in the order i, f, g, o:
    i = sigmoid(z[0:H]), f = sigmoid(z[H:2H]), g = tanh(z[2H:3H]), o = sigmoid(z[3H:4H]);
    c_t = f c_{t-1} + i g; h_t = o tanh(c_t)."""
    n, t, d, h = 2, 4, 3, 5
    layer = nets.LSTM(d, h, rng=rng_for(12), dtype=F64)
    Wx, Wh, b = layer.params["Wx"], layer.params["Wh"], layer.params["b"]
    assert Wx.shape == (d, 4 * h) and Wh.shape == (h, 4 * h)
    b[h:2 * h] += 1.0  # a forget gate near 1 and the others not: a swapped order shows
    x = rng_for(13).standard_normal((n, t, d))
    h0, c0 = rng_for(14).standard_normal((n, h)) * 0.5, rng_for(15).standard_normal((n, h))
    out = layer.forward(x, (h0, c0))
    for a in range(n):
        hs, cs = list(h0[a]), list(c0[a])
        for s in range(t):
            z = [matvec(x[a, s], Wx, j) + matvec(hs, Wh, j) + b[j] for j in range(4 * h)]
            i = [scalar_sigmoid(v) for v in z[0:h]]
            f = [scalar_sigmoid(v) for v in z[h:2 * h]]
            g = [math.tanh(v) for v in z[2 * h:3 * h]]
            o = [scalar_sigmoid(v) for v in z[3 * h:4 * h]]
            cs = [f[k] * cs[k] + i[k] * g[k] for k in range(h)]
            hs = [o[k] * math.tanh(cs[k]) for k in range(h)]
            close(out[a, s], hs)
        close(layer.final_state[0][a], hs)
        close(layer.final_state[1][a], cs)


def test_recurrent_layers_start_from_zeros_without_a_state():
    x = rng_for(16).standard_normal((2, 3, 4))
    for cls, zeros in ((nets.RNN, np.zeros((2, 5))), (nets.LSTM, (np.zeros((2, 5)), np.zeros((2, 5))))):
        layer = cls(4, 5, rng=rng_for(17), dtype=F64)
        close(layer.forward(x), layer.forward(x, zeros))


# ----------------------------------------------------------------------------- convolution and pooling

@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), ((2, 1), (0, 2))])
def test_conv2d_is_the_cross_correlation_of_the_naive_loop(stride, padding):
    layer = nets.Conv2d(2, 3, (3, 2), stride, padding, rng=rng_for(18), dtype=F64)
    x = rng_for(19).standard_normal((2, 2, 6, 5))
    W, b = layer.params["W"], layer.params["b"]
    close(layer.forward(x), conv2d_reference(x, W, b, stride, padding), tol=1e-10)
    # one output by hand: not flipped (cross-correlation, as PyTorch), bias added once
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    i, j = 1, 1
    want = b[2] + sum(xp[1, c, i * sh + p, j * sw + q] * W[2, c, p, q]
                      for c in range(2) for p in range(3) for q in range(2))
    assert layer.forward(x)[1, 2, i, j] == pytest.approx(want, rel=1e-12)


def test_maxpool2d_takes_each_windows_maximum():
    x = rng_for(20).standard_normal((2, 3, 7, 6))
    close(nets.MaxPool2d(2).forward(x), maxpool2d_reference(x, 2))
    close(nets.MaxPool2d(3, stride=2).forward(x), maxpool2d_reference(x, 3, 2))
    assert nets.MaxPool2d(2).forward(x)[1, 2, 1, 2] == max(x[1, 2, 2:4, 4:6].ravel())
