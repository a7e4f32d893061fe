"""The dueling head (Wang et al. 2016): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').

Two streams read the same features: a value stream  in -> hidden -> ReLU -> 1  and an advantage
stream  in -> hidden -> ReLU -> n_actions. Subtracting the mean advantage makes V and A
identifiable (the paper's equation 9). One layer holding both streams, so a Sequential ends with it
and a checkpoint rebuilds it like any other layer.
"""
import numpy as np

from nets.layers import Layer, check_input, default_rng


def dueling_combine(value, adv):
    """(N, 1), (N, A) -> Q (N, A)."""
    return value + adv - adv.mean(axis=1, keepdims=True)


def dueling_combine_backward(dq):
    """dQ (N, A) -> (dvalue (N, 1), dadv (N, A)): each advantage also feeds every mean."""
    dvalue = dq.sum(axis=1, keepdims=True)  # (N, 1)
    dadv = dq - dq.mean(axis=1, keepdims=True)  # (N, A)
    return dvalue, dadv


class DuelingHead(Layer):
    """(N, in_features) -> Q (N, n_actions) through separate value and advantage streams."""

    def __init__(self, in_features, hidden, n_actions, *, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.in_features, self.hidden, self.n_actions = int(in_features), int(hidden), int(n_actions)
        if min(self.in_features, self.hidden, self.n_actions) < 1:
            raise ValueError(f"DuelingHead needs positive sizes, got in_features={in_features}, "
                             f"hidden={hidden}, n_actions={n_actions}")
        rng = default_rng(rng)
        # uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), as nets.Linear and PyTorch
        for stream, out in (("v", 1), ("a", self.n_actions)):
            for layer, (fan_in, fan_out) in enumerate(((self.in_features, self.hidden), (self.hidden, out)), 1):
                bound = 1.0 / np.sqrt(fan_in)
                self.add_param(f"W{stream}{layer}", rng.uniform(-bound, bound, (fan_in, fan_out)))
                self.add_param(f"b{stream}{layer}", rng.uniform(-bound, bound, fan_out))

    def config(self):
        return {"in_features": self.in_features, "hidden": self.hidden, "n_actions": self.n_actions}

    def _stream_forward(self, x, s):
        p = self.params
        h = np.maximum(x @ p[f"W{s}1"] + p[f"b{s}1"], 0)  # (N, hidden)
        return h, h @ p[f"W{s}2"] + p[f"b{s}2"]  # (N, hidden), (N, out)

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
        self.hv, value = self._stream_forward(x, "v")  # (N, 1)
        self.ha, adv = self._stream_forward(x, "a")  # (N, A)
        return dueling_combine(value, adv)  # (N, A)

    def backward(self, dq):
        dvalue, dadv = dueling_combine_backward(dq)
        return self._stream_backward(self.x, self.hv, dvalue, "v") + \
            self._stream_backward(self.x, self.ha, dadv, "a")  # (N, in)
