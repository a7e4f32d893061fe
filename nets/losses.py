"""Losses, each the mean over the batch: value = loss.forward(pred, target); dpred = loss.backward()."""
import numpy as np


def _check_same_shape(name, pred, target):
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred shape {pred.shape} and target shape {target.shape} differ")


class MSE:
    """mean((pred - target)^2) over every element."""

    def forward(self, pred, target):
        _check_same_shape("MSE", pred, target)
        self.diff = pred - target
        return float(np.mean(self.diff * self.diff))

    def backward(self):
        return (2.0 / self.diff.size) * self.diff


class Huber:
    """Smooth L1 with threshold delta (PyTorch's HuberLoss), mean over every element.

    Optional per-element weights (prioritized replay's importance weights) scale each term."""

    def __init__(self, delta=1.0):
        self.delta = float(delta)

    def forward(self, pred, target, weights=None):
        _check_same_shape("Huber", pred, target)
        self.diff = pred - target
        self.weights = None if weights is None else np.asarray(weights, dtype=pred.dtype)
        if self.weights is not None:
            _check_same_shape("Huber weights", pred, self.weights)
        a = np.abs(self.diff)
        quad = np.minimum(a, self.delta)
        loss = 0.5 * quad * quad + self.delta * (a - quad)
        if self.weights is not None:
            loss = loss * self.weights
        return float(np.mean(loss))

    def backward(self):
        d = np.clip(self.diff, -self.delta, self.delta)
        if self.weights is not None:
            d = d * self.weights
        return d / self.diff.size


class TakenActionHuber(Huber):
    """DQN's TD loss: Huber on the values of the taken actions only, the gather and the scatter
    included. forward(q (B, A), actions (B,), target (B,), weights=None) gives the same number as
    Huber().forward(q[rows, actions], target, weights); backward() gives dq (B, A), zero except at
    the taken actions, in an array reused by the next call. After forward, taken (B,) holds the taken
    actions' values and diff (B,) their TD errors, taken - target."""

    def __init__(self, delta=1.0):
        super().__init__(delta)
        self._dq = None

    def forward(self, q, actions, target, weights=None):
        if q.ndim != 2 or np.shape(actions) != q.shape[:1]:
            raise ValueError(f"TakenActionHuber: q (B, A) and actions (B,) needed, got {q.shape}, {np.shape(actions)}")
        self.rows, self.actions = np.arange(len(q)), np.asarray(actions)
        self.taken = q[self.rows, self.actions]  # (B,)
        if self._dq is None or self._dq.shape != q.shape or self._dq.dtype != q.dtype:
            self._dq = np.zeros_like(q)
        return super().forward(self.taken, target, weights)

    def backward(self):
        dq = self._dq  # (B, A): zero everywhere but the taken actions, which are all overwritten
        dq.fill(0)
        dq[self.rows, self.actions] = super().backward()
        return dq


class QuantileHuber:
    """QR-DQN's quantile regression loss (Dabney et al. 2018), kappa = delta.

    pred (B, K) holds K quantiles of a return, at the midpoints tau_i = (2i + 1) / 2K; target
    (B, M) holds M atoms of the target distribution with probabilities target_weights (B, M)
    (rows sum to 1; default 1/M each). Each pair (i, j) costs |tau_i - [u < 0]| huber(u) / kappa,
    u = target_j - pred_i: under-estimates cost tau_i, over-estimates 1 - tau_i, so pred_i moves
    to the tau_i-quantile of the targets. A sample's loss sums over i and averages over j
    (Dopamine's); the value is the mean over samples, each scaled by its optional weight (B,)."""

    def __init__(self, delta=1.0):
        self.delta = float(delta)

    def forward(self, pred, target, target_weights=None, weights=None):
        if pred.ndim != 2 or target.ndim != 2 or pred.shape[0] != target.shape[0]:
            raise ValueError(f"QuantileHuber: pred (B, K) and target (B, M) needed, got {pred.shape}, {target.shape}")
        n, k = pred.shape
        if target_weights is not None:
            _check_same_shape("QuantileHuber target_weights", target, target_weights)
        u = target[:, None, :] - pred[:, :, None]  # (B, K, M)
        tau = ((np.arange(k) + 0.5) / k).astype(pred.dtype)[None, :, None]  # (1, K, 1)
        # |tau_i - [u < 0]| = 1/2 + (tau_i - 1/2) sign(u): tau_i above, 1 - tau_i below (the value
        # at u = 0 does not matter: huber and its slope are 0 there). Faster than np.where on bools.
        self.slope = np.sign(u)  # (B, K, M)
        self.slope *= tau - 0.5
        self.slope += 0.5
        self.slope *= (1.0 / target.shape[1]) if target_weights is None else target_weights[:, None, :]
        self.clipped = np.clip(u, -self.delta, self.delta)  # huber'(u), kept for backward
        # huber(u) = c (u - c/2) with c = clip(u): u^2/2 inside [-delta, delta], delta (|u| - delta/2) outside
        u -= 0.5 * self.clipped
        u *= self.clipped
        u *= self.slope
        self.per_sample = u.sum(axis=(1, 2)) / self.delta  # (B,)
        self.weights = None if weights is None else np.asarray(weights, dtype=pred.dtype)
        if self.weights is not None:
            _check_same_shape("QuantileHuber weights", self.per_sample, self.weights)
        loss = self.per_sample if self.weights is None else self.per_sample * self.weights
        return float(np.mean(loss))

    def backward(self):
        """dloss/dpred (B, K)."""
        d = np.einsum("bkm,bkm->bk", self.slope, self.clipped) * (-1.0 / self.delta)  # (B, K)
        if self.weights is not None:
            d *= self.weights[:, None]
        return (d / d.shape[0]).astype(self.slope.dtype, copy=False)


def log_softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class SoftmaxCrossEntropy:
    """Logits (N, K) and integer labels (N,): mean of -log softmax(logits)[label].

    Optional per-example weights (N,) scale each term (policy gradient uses advantages here)."""

    def forward(self, logits, labels, weights=None):
        labels = np.asarray(labels)
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"SoftmaxCrossEntropy: logits shape {logits.shape} needs labels of shape "
                             f"({logits.shape[0] if logits.ndim else '?'},), got {labels.shape}")
        n = logits.shape[0]
        logp = log_softmax(logits)  # (N, K)
        self.probs = np.exp(logp)
        self.labels = labels
        self.weights = None if weights is None else np.asarray(weights, dtype=logits.dtype)
        nll = -logp[np.arange(n), labels]  # (N,)
        if self.weights is not None:
            nll = nll * self.weights
        return float(nll.mean())

    def backward(self):
        n = self.probs.shape[0]
        d = self.probs.copy()
        d[np.arange(n), self.labels] -= 1.0
        if self.weights is not None:
            d *= self.weights[:, None]
        return d / n


class BCEWithLogits:
    """Binary cross-entropy on logits, numerically stable, mean over every element."""

    def forward(self, logits, target, weights=None):
        _check_same_shape("BCEWithLogits", logits, target)
        self.logits, self.target = logits, target
        self.weights = None if weights is None else np.asarray(weights, dtype=logits.dtype)
        # log(1 + exp(-|x|)) + max(x, 0) - x*t
        loss = np.logaddexp(0.0, -np.abs(logits)) + np.maximum(logits, 0) - logits * target
        if self.weights is not None:
            loss = loss * self.weights
        return float(np.mean(loss))

    def backward(self):
        e = np.exp(-np.abs(self.logits))
        sig = np.where(self.logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        d = (sig - self.target).astype(self.logits.dtype, copy=False)
        if self.weights is not None:
            d = d * self.weights
        return d / self.logits.size
