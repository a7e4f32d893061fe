"""Weight initializations beyond the layers' own PyTorch-style uniform default."""
import numpy as np


def orthogonal(shape, gain=1.0, rng=None):
    """A (rows, cols) matrix with orthonormal rows or columns, times gain (Saxe et al. 2014; PyTorch's
    orthogonal_): the Q of a Gaussian matrix's QR decomposition, signs fixed by R's diagonal so that
    the draw is uniform over orthogonal matrices. shape may have more axes: rows is its first."""
    rng = rng if rng is not None else np.random.default_rng()
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))  # tall: QR gives orthonormal columns
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T  # (rows, cols) with orthonormal rows
    return (gain * q).reshape(shape)


def orthogonal_init(layer, gain=1.0, bias=0.0, rng=None):
    """Orthogonal weights and constant biases for a Linear (W: in x out) or Conv2d (W: out x in x kh x kw),
    as CleanRL's layer_init: PyTorch's weight is (out, in), so a Linear's is drawn that way and transposed."""
    W = layer.params["W"]
    if W.ndim == 2:  # Linear, (in, out)
        W[...] = orthogonal((W.shape[1], W.shape[0]), gain, rng).T
    else:  # Conv2d, (out, in, kh, kw)
        W[...] = orthogonal(W.shape, gain, rng)
    layer.params["b"][...] = bias
    return layer
