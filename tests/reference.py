"""Slow loop references for the fast layers in nets/, obviously correct, for the tests alone.

Every fast path has a slow twin here (STYLE.md 7): plain Python loops over every output element,
written from the definitions, never from the fast code.
"""
import numpy as np


def pair(v, name):
    """An int or a pair of ints -> (int, int)."""
    p = (v, v) if np.isscalar(v) else tuple(v)
    if len(p) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(p[0]), int(p[1])


def _pad(x, padding):
    ph, pw = pair(padding, "padding")
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d_reference(x, W, b, stride=1, padding=0):
    """out[n, o, i, j] = b[o] + sum over c, p, q of xpad[n, c, i*sh + p, j*sw + q] * W[o, c, p, q]."""
    sh, sw = pair(stride, "stride")
    xp = _pad(x, padding)
    n, _, hp, wp = xp.shape
    o, _, kh, kw = W.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    out = np.zeros((n, o, ho, wo), dtype=np.result_type(x, W))
    for a in range(n):
        for f in range(o):
            for i in range(ho):
                for j in range(wo):
                    patch = xp[a, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    out[a, f, i, j] = np.sum(patch * W[f]) + b[f]
    return out


def conv2d_reference_backward(x, W, dy, stride=1, padding=0):
    """(dx, dW, db) of conv2d_reference for upstream gradient dy, by the same loops."""
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    xp = _pad(x, padding)
    dxp, dW = np.zeros_like(xp), np.zeros_like(W)
    n, o, ho, wo = dy.shape
    kh, kw = W.shape[2:]
    for a in range(n):
        for f in range(o):
            for i in range(ho):
                for j in range(wo):
                    window = (a, slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
                    dW[f] += dy[a, f, i, j] * xp[window]
                    dxp[window] += dy[a, f, i, j] * W[f]
    dx = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return dx, dW, dy.sum(axis=(0, 2, 3))


def maxpool2d_reference(x, kernel_size, stride=None):
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride")
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((n, c, ho, wo), x.dtype)
    for a in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    out[a, ch, i, j] = x[a, ch, i * sh:i * sh + kh, j * sw:j * sw + kw].max()
    return out


def maxpool2d_reference_backward(x, dy, kernel_size, stride=None):
    """dx: each window's gradient goes to its first maximum (row-major order)."""
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride")
    dx = np.zeros_like(x)
    n, c, ho, wo = dy.shape
    for a in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    window = x[a, ch, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    p, q = np.unravel_index(np.argmax(window), window.shape)
                    dx[a, ch, i * sh + p, j * sw + q] += dy[a, ch, i, j]
    return dx
