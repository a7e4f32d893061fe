"""Optimizers outside the layers: they take the model and update its parameters in place.

Update rules follow PyTorch's so results can be compared. State is updated in place (out=) to
avoid allocating per step; state_dict()/load_state_dict() let a run resume exactly.
"""
import numpy as np


class Optimizer:
    def __init__(self, model, lr):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr = float(lr)
        self.params = list(model.parameters())  # [(name, param, grad)], the arrays themselves
        self.t = 0
        self.state = {}  # slot name -> {param name -> array}

    def _slot(self, slot):
        if slot not in self.state:
            self.state[slot] = {name: np.zeros_like(p) for name, p, _ in self.params}
        return self.state[slot]

    def state_dict(self):
        arrays = {f"{slot}.{name}": a for slot, d in self.state.items() for name, a in d.items()}
        return {"t": self.t, "lr": self.lr}, arrays

    def load_state_dict(self, info, arrays):
        self.t = int(info["t"])
        self.lr = float(info.get("lr", self.lr))
        names = {name for name, _, _ in self.params}
        for key, value in arrays.items():
            slot, name = key.split(".", 1)
            if name not in names:
                raise ValueError(f"optimizer state for unknown parameter {name!r}")
            target = self._slot(slot)[name]
            if target.shape != value.shape:
                raise ValueError(f"optimizer state {key}: shape {value.shape}, parameter {target.shape}")
            target[...] = value

    def zero_grad(self):
        for _, _, g in self.params:
            g.fill(0)


class SGD(Optimizer):
    """p -= lr * (momentum buffer or grad)."""

    def __init__(self, model, lr, momentum=0.0):
        super().__init__(model, lr)
        self.momentum = float(momentum)

    def step(self):
        self.t += 1
        if self.momentum:
            buf = self._slot("momentum")
            for name, p, g in self.params:
                b = buf[name]
                if self.t == 1:
                    b[...] = g
                else:
                    b *= self.momentum
                    b += g
                p -= self.lr * b
        else:
            for _, p, g in self.params:
                p -= self.lr * g


class RMSProp(Optimizer):
    """PyTorch's RMSprop: v = decay*v + (1-decay)*g^2; p -= lr * g / (sqrt(v - mean^2) + eps)."""

    def __init__(self, model, lr, decay=0.99, eps=1e-8, centered=False):
        super().__init__(model, lr)
        self.decay, self.eps, self.centered = float(decay), float(eps), bool(centered)

    def step(self):
        self.t += 1
        sq = self._slot("square_avg")
        avg = self._slot("grad_avg") if self.centered else None
        for name, p, g in self.params:
            v = sq[name]
            v *= self.decay
            v += (1.0 - self.decay) * g * g
            if self.centered:
                m = avg[name]
                m *= self.decay
                m += (1.0 - self.decay) * g
                denom = np.sqrt(v - m * m)
            else:
                denom = np.sqrt(v)
            denom += self.eps
            p -= self.lr * g / denom


class Adam(Optimizer):
    """PyTorch's Adam: bias-corrected moments, eps added after the square root."""

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(model, lr)
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps = float(eps)
        self._tmp = {}

    def step(self):
        self.t += 1
        ms, vs = self._slot("m"), self._slot("v")
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        step_size = self.lr / c1
        for name, p, g in self.params:
            m, v = ms[name], vs[name]
            tmp = self._tmp.get(name)
            if tmp is None:
                tmp = self._tmp[name] = np.empty_like(p)
            # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g*g, all in place: no temporaries per step
            m *= self.b1
            np.multiply(g, 1.0 - self.b1, out=tmp)
            m += tmp
            v *= self.b2
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - self.b2
            v += tmp
            # p -= lr/c1 * m / (sqrt(v/c2) + eps)
            np.divide(v, c2, out=tmp)
            np.sqrt(tmp, out=tmp)
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp


def clip_grad_norm(model, max_norm):
    """Scale all grads so their global L2 norm is at most max_norm; return the norm before."""
    grads = [g for _, _, g in model.parameters()]
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    if total > max_norm and total > 0:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total
