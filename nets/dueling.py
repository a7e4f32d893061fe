"""The dueling head (Wang et al. 2016): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').

Two streams read the same features: a value stream  in -> hidden -> ReLU -> 1  and an advantage
stream  in -> hidden -> ReLU -> n_actions. Subtracting the mean advantage makes V and A
identifiable (the paper's equation 9). One layer holding both streams, so a Sequential ends with it
and a checkpoint rebuilds it like any other layer.

With atoms K > 1 each action has K outputs (a distributional head: K quantiles of the return, as
Rainbow combines its atoms): V is (N, K), A is (N, A, K), the mean is over actions for each atom,
and the output is (N, A*K), action-major.
"""
import numpy as np

from nets.layers import Layer, check_input, default_rng


def dueling_combine(value, adv):
    """(N, K), (N, A*K) -> Q (N, A*K); K = 1 is the paper's (N, 1), (N, A) -> (N, A)."""
    n, k = value.shape
    a = adv.reshape(n, -1, k)  # (N, A, K)
    return (value[:, None, :] + a - a.mean(axis=1, keepdims=True)).reshape(n, -1)


def dueling_combine_backward(dq, k=1):
    """dQ (N, A*K) -> (dvalue (N, K), dadv (N, A*K)): each advantage also feeds every mean."""
    n = dq.shape[0]
    d = dq.reshape(n, -1, k)  # (N, A, K)
    dvalue = d.sum(axis=1)  # (N, K)
    dadv = (d - d.mean(axis=1, keepdims=True)).reshape(n, -1)  # (N, A*K)
    return dvalue, dadv


class DuelingHead(Layer):
    """(N, in_features) -> Q (N, n_actions * atoms) through separate value and advantage streams."""

    def __init__(self, in_features, hidden, n_actions, atoms=1, *, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.in_features, self.hidden, self.n_actions = int(in_features), int(hidden), int(n_actions)
        self.atoms = int(atoms)
        if min(self.in_features, self.hidden, self.n_actions, self.atoms) < 1:
            raise ValueError(f"DuelingHead needs positive sizes, got in_features={in_features}, "
                             f"hidden={hidden}, n_actions={n_actions}, atoms={atoms}")
        rng = default_rng(rng)
        # uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), as nets.Linear and PyTorch
        for stream, out in (("v", self.atoms), ("a", self.n_actions * self.atoms)):
            for layer, (fan_in, fan_out) in enumerate(((self.in_features, self.hidden), (self.hidden, out)), 1):
                bound = 1.0 / np.sqrt(fan_in)
                self.add_param(f"W{stream}{layer}", rng.uniform(-bound, bound, (fan_in, fan_out)))
                self.add_param(f"b{stream}{layer}", rng.uniform(-bound, bound, fan_out))

    @staticmethod
    def size_bound(config):
        """Parameters a config makes (nets.build checks it before building); config's numbers are
        already known to be finite and >= 0."""
        i, h, a, k = (max(int(config.get(name, 1)), 1) for name in ("in_features", "hidden", "n_actions", "atoms"))
        return 2 * (i + 1) * h + (h + 1) * k * (1 + a)  # both streams' hidden layers, then V (K) and A (A*K)

    def config(self):
        config = {"in_features": self.in_features, "hidden": self.hidden, "n_actions": self.n_actions}
        return config if self.atoms == 1 else {**config, "atoms": self.atoms}  # files from before atoms load

    def _stream_forward(self, x, s):
        p = self.params
        h = x @ p[f"W{s}1"]  # (N, hidden)
        h += p[f"b{s}1"]
        np.maximum(h, 0, out=h)  # in place: no temporaries of the batch's size
        out = h @ p[f"W{s}2"]  # (N, out)
        out += p[f"b{s}2"]
        return h, out

    def _stream_backward(self, x, h, dout, s):
        p, g = self.params, self.grads
        np.matmul(h.T, dout, out=g[f"W{s}2"])  # (hidden, out)
        np.sum(dout, axis=0, out=g[f"b{s}2"])
        dh = (dout @ p[f"W{s}2"].T) * (h > 0)  # (N, hidden)
        np.matmul(x.T, dh, out=g[f"W{s}1"])  # (in, hidden)
        np.sum(dh, axis=0, out=g[f"b{s}1"])
        return dh @ p[f"W{s}1"].T  # (N, in)

    def forward(self, x):
        check_input(self, x, 2, self.in_features)
        self.x = x  # (N, in)
        self.hv, value = self._stream_forward(x, "v")  # (N, K)
        self.ha, adv = self._stream_forward(x, "a")  # (N, A*K)
        return dueling_combine(value, adv)  # (N, A*K)

    def backward(self, dq):
        dvalue, dadv = dueling_combine_backward(dq, self.atoms)
        return self._stream_backward(self.x, self.hv, dvalue, "v") + \
            self._stream_backward(self.x, self.ha, dadv, "a")  # (N, in)
