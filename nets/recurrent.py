"""Recurrent layers, the book's chapter on sequences: a tanh RNN and an LSTM.

Both take (N, T, D) and return every hidden state (N, T, H). forward(x, state=None) starts from
`state` (zeros if None) and leaves the last state in `layer.final_state`; backward(dh, dstate=None)
takes the gradient on every hidden state (and optionally on the final state), backpropagates
through the whole sequence, returns dx (N, T, D) and leaves the gradient on the initial state in
`layer.dstate0`. The input projections of all T steps are one matmul before the loop, and the
weight gradients one matmul after it: only the h @ Wh part has to walk the sequence.
"""
import numpy as np

from nets.layers import Layer, check_input, default_rng, sigmoid


def _check_state(layer, state, n, what):
    if not isinstance(state, np.ndarray) or state.shape != (n, layer.hidden_size):
        got = state.shape if isinstance(state, np.ndarray) else type(state).__name__
        raise ValueError(f"{type(layer).__name__} {what} must have shape {(n, layer.hidden_size)}, got {got}")
    return state


class _Recurrent(Layer):
    """Shared set-up: params Wx (D, gates*H), Wh (H, gates*H), b (gates*H,), PyTorch's init
    uniform(-1/sqrt(H), 1/sqrt(H))."""

    gates = 1

    def __init__(self, input_size, hidden_size, *, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        d, h, g = self.input_size, self.hidden_size, self.gates * self.hidden_size
        bound = 1.0 / np.sqrt(h)
        rng = default_rng(rng)
        self.add_param("Wx", rng.uniform(-bound, bound, (d, g)))
        self.add_param("Wh", rng.uniform(-bound, bound, (h, g)))
        self.add_param("b", rng.uniform(-bound, bound, g))
        self.final_state = None
        self.dstate0 = None

    def config(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size}

    def _project_inputs(self, x):
        """x @ Wx + b for all steps at once: (N, T, D) -> (N, T, gates*H)."""
        check_input(self, x, 3, self.input_size)
        n, t, d = x.shape
        if t == 0:
            raise ValueError(f"{type(self).__name__} needs at least one time step, got shape {x.shape}")
        self.x = x
        return (x.reshape(n * t, d) @ self.params["Wx"] + self.params["b"]).reshape(n, t, -1)

    def _weight_grads(self, da, h_prev):
        """Fill grads from the pre-activation gradients da (N, T, G) and the states h_prev (N, T, H)
        each step started from; return dx (N, T, D)."""
        n, t, d = self.x.shape
        da2 = da.reshape(n * t, -1)  # (N*T, G)
        np.matmul(self.x.reshape(n * t, d).T, da2, out=self.grads["Wx"])  # (D, G)
        np.matmul(h_prev.reshape(n * t, -1).T, da2, out=self.grads["Wh"])  # (H, G)
        np.sum(da2, axis=0, out=self.grads["b"])  # (G,)
        return (da2 @ self.params["Wx"].T).reshape(n, t, d)  # (N, T, D)

    def _check_dh(self, dh):
        n, t, _ = self.x.shape
        if dh.shape != (n, t, self.hidden_size):
            raise ValueError(f"{type(self).__name__}.backward expects dh of shape {(n, t, self.hidden_size)}, "
                             f"got {dh.shape}")


class RNN(_Recurrent):
    """h_t = tanh(x_t @ Wx + h_{t-1} @ Wh + b). state: h0 (N, H)."""

    def forward(self, x, state=None):
        a = self._project_inputs(x)  # (N, T, H)
        n, t, _ = x.shape
        h = np.zeros((n, self.hidden_size), self.dtype) if state is None else _check_state(self, state, n, "state")
        self.h0 = h
        hs = np.empty((n, t, self.hidden_size), self.dtype)  # (N, T, H)
        wh = self.params["Wh"]
        for s in range(t):
            h = np.tanh(a[:, s] + h @ wh)  # (N, H)
            hs[:, s] = h
        self.hs = hs
        self.final_state = h
        return hs

    def backward(self, dh, dstate=None):
        self._check_dh(dh)
        n, t, hsize = dh.shape
        dnext = np.zeros((n, hsize), self.dtype) if dstate is None else _check_state(self, dstate, n, "dstate")
        da = np.empty_like(self.hs)  # (N, T, H): gradient on the pre-activations
        wh_t = self.params["Wh"].T
        for s in reversed(range(t)):
            dh_s = dh[:, s] + dnext  # (N, H): from the output at s and from step s+1
            da[:, s] = dh_s * (1.0 - self.hs[:, s] ** 2)
            dnext = da[:, s] @ wh_t
        self.dstate0 = dnext
        h_prev = np.concatenate([self.h0[:, None], self.hs[:, :-1]], axis=1)  # (N, T, H)
        return self._weight_grads(da, h_prev)


class LSTM(_Recurrent):
    """Gates in the order input, forget, cell, output:
    i, f, o = sigmoid(.), g = tanh(.) of x_t @ Wx + h_{t-1} @ Wh + b (split in four H-wide blocks);
    c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t). state: (h0, c0), each (N, H)."""

    gates = 4

    def forward(self, x, state=None):
        a = self._project_inputs(x)  # (N, T, 4H)
        n, t, _ = x.shape
        hsize = self.hidden_size
        if state is None:
            h = c = np.zeros((n, hsize), self.dtype)
        else:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise ValueError("LSTM state must be a pair (h0, c0)")
            h, c = (_check_state(self, s, n, name) for s, name in zip(state, ("h0", "c0")))
        self.h0, self.c0 = h, c
        self.gate_values = np.empty((n, t, 4 * hsize), self.dtype)  # (N, T, 4H): i, f, g, o
        self.cs = np.empty((n, t, hsize), self.dtype)  # (N, T, H)
        self.hs = np.empty((n, t, hsize), self.dtype)  # (N, T, H)
        wh = self.params["Wh"]
        for s in range(t):
            z = a[:, s] + h @ wh  # (N, 4H)
            gv = self.gate_values[:, s]
            gv[:, :2 * hsize] = sigmoid(z[:, :2 * hsize])  # i, f
            gv[:, 2 * hsize:3 * hsize] = np.tanh(z[:, 2 * hsize:3 * hsize])  # g
            gv[:, 3 * hsize:] = sigmoid(z[:, 3 * hsize:])  # o
            i, f, g, o = np.split(gv, 4, axis=1)
            c = f * c + i * g  # (N, H)
            h = o * np.tanh(c)  # (N, H)
            self.cs[:, s], self.hs[:, s] = c, h
        self.final_state = (h, c)
        return self.hs

    def backward(self, dh, dstate=None):
        self._check_dh(dh)
        n, t, hsize = dh.shape
        if dstate is None:
            dh_next = dc_next = np.zeros((n, hsize), self.dtype)
        else:
            if not isinstance(dstate, (tuple, list)) or len(dstate) != 2:
                raise ValueError("LSTM dstate must be a pair (dh, dc)")
            dh_next, dc_next = (_check_state(self, s, n, name) for s, name in zip(dstate, ("dh", "dc")))
        c_prev_all = np.concatenate([self.c0[:, None], self.cs[:, :-1]], axis=1)  # (N, T, H)
        da = np.empty_like(self.gate_values)  # (N, T, 4H): gradient on the pre-activations
        wh_t = self.params["Wh"].T
        for s in reversed(range(t)):
            i, f, g, o = np.split(self.gate_values[:, s], 4, axis=1)
            tanh_c = np.tanh(self.cs[:, s])
            dh_s = dh[:, s] + dh_next  # (N, H)
            dc = dc_next + dh_s * o * (1.0 - tanh_c ** 2)  # (N, H)
            di, df, dg, do = np.split(da[:, s], 4, axis=1)  # views into da
            di[...] = dc * g * i * (1.0 - i)
            df[...] = dc * c_prev_all[:, s] * f * (1.0 - f)
            dg[...] = dc * i * (1.0 - g * g)
            do[...] = dh_s * tanh_c * o * (1.0 - o)
            dc_next = dc * f
            dh_next = da[:, s] @ wh_t  # (N, H)
        self.dstate0 = (dh_next, dc_next)
        h_prev = np.concatenate([self.h0[:, None], self.hs[:, :-1]], axis=1)  # (N, T, H)
        return self._weight_grads(da, h_prev)
