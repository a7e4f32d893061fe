"""Convolution and max pooling on NCHW batches: the book's convolution chapter, made fast.

Fast paths (Conv2d):
- Space to depth, for a kernel of whole strides on an unpadded input of few channels that the
  stride divides (the Atari torsos' first layer, 8x8 stride 4 on 84x84 frames): each stride x
  stride block of pixels becomes one row of numbers, in one copy straight from NCHW, and the
  convolution turns into a stride-1 one of (kh/stride) x (kw/stride) blocks. Over the flattened
  rows each kernel block reads one contiguous stretch, so the convolution is a few matmuls on
  shifted views of the same array, with no im2col copy (the outputs that would wrap past a row's
  end are computed and dropped).
- im2col otherwise: inside the layer the batch is NHWC, im2col columns are in (kh, kw, C) order and
  the whole convolution is one matmul. col2im in backward adds one slice per kernel offset, grouped
  by stride phase.
Buffers of the same shape are reused across calls. The slow, obviously correct loop twins the tests
compare against live in tests/reference.py.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from nets.layers import Layer, check_input, default_rng


def _pair(v, name):
    """An int or a pair of ints -> (int, int); ValueError otherwise."""
    pair = (v, v) if np.isscalar(v) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) for p in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(pair[0]), int(pair[1])


def _unpair(p):
    """(k, k) -> k for a tidy config; otherwise a list (JSON has no tuples)."""
    return p[0] if p[0] == p[1] else list(p)


def conv_output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


class _Buffers:
    """Arrays reused across calls of the same shape: allocating ~25 MB of temporaries per step
    costs more than the arithmetic (fresh pages fault in on first touch). Keyed by shape, so DQN's
    alternating batch-1 acting and batch-32 learning each keep their own."""

    max_arrays = 16  # a few names times a few batch sizes; past that start over

    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype, zero=False):
        key = (name, shape, np.dtype(dtype).str)
        a = self._arrays.get(key)
        if a is None:
            if len(self._arrays) >= self.max_arrays:
                self._arrays.clear()
            a = self._arrays[key] = np.zeros(shape, dtype)
        elif zero:
            a.fill(0)
        return a


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as PyTorch) on (N, C, H, W) -> (N, out, Ho, Wo).

    W: (out, in, kh, kw), b: (out,), init uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch.
    input_grad=False (for a first layer fed with data) skips dx: backward returns None.
    Each forward takes space to depth when the input allows it, im2col otherwise (the module's
    docstring); both give the same numbers up to float rounding.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, input_grad=True,
                 *, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.input_grad = bool(input_grad)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"Conv2d needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                             f"{self.kernel_size}, {self.stride}, {self.padding}")
        kh, kw = self.kernel_size
        bound = 1.0 / np.sqrt(self.in_channels * kh * kw)
        rng = default_rng(rng)
        self.add_param("W", rng.uniform(-bound, bound, (self.out_channels, self.in_channels, kh, kw)))
        self.add_param("b", rng.uniform(-bound, bound, self.out_channels))
        self.buffers = _Buffers()
        self.cols = None  # the forward's input as matmul rows (im2col or space to depth), for backward
        self.blocked = False  # whether the last forward went by space to depth
        (sh, sw) = self.stride
        whole = kh % sh == 0 and kw % sw == 0 and sh * sw > 1
        self.blocks = (kh // sh, kw // sw) if whole else None  # the kernel in stride-sized blocks

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": _unpair(self.kernel_size), "stride": _unpair(self.stride),
                "padding": _unpair(self.padding), "input_grad": self.input_grad}

    def output_shape(self, x_shape):
        """(N, C, H, W) -> (N, out, Ho, Wo), ValueError naming the shapes if it does not fit."""
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"Conv2d kernel {self.kernel_size} with padding {self.padding} does not fit "
                             f"input shape {tuple(x_shape)}")
        return n, self.out_channels, conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)

    def forward(self, x):
        rows = self._block_rows(x)
        self.blocked = rows is not None
        if self.blocked:
            self.cols, self.x_shape = rows, x.shape
            return blocks_forward([self], rows, x.shape)[0]
        windows, cols, (n, o, ho, wo) = self._windows(x)
        self.cols, self.x_shape = cols, x.shape
        y = im2col_matmul(windows, cols, self._weight_matrix())  # (N*Ho*Wo, out)
        y += self.params["b"]
        # The NCHW result is a view of the NHWC matmul output: no copy here, and the next conv's
        # NHWC transpose of it is a plain contiguous read.
        return y.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)  # (N, out, Ho, Wo)

    def _grid(self, x_shape):
        """(R, Q): the blocks of stride size down and across an unpadded input."""
        (sh, sw) = self.stride
        return x_shape[2] // sh, x_shape[3] // sw

    def _block_rows(self, x):
        """x (N, C, H, W) -> its space-to-depth rows (N*R*Q, sh*C*sw), one per block of sh x sw
        pixels, in (row in block, C, column in block) order (a reused buffer); None when x does not
        allow it (a kernel not of whole strides, padding, a size the stride does not divide, more
        than 8 channels, another dtype, or pixels not contiguous along a row): im2col then.

        One copy straight from NCHW: each block row's sw pixels are contiguous, so they move as one
        item of sw floats (a void dtype), measured 2.5x faster than NHWC first and the blocks after."""
        if not self.blocks or self.padding != (0, 0) or getattr(x, "ndim", 0) != 4 or x.dtype != self.dtype:
            return None
        n, c, h, w = x.shape
        (sh, sw) = self.stride
        if c != self.in_channels or c > 8 or h % sh or w % sw or x.strides[3] != x.itemsize:
            return None  # (16 and 32 channels measured slower this way than by im2col)
        self.output_shape(x.shape)  # ValueError if the kernel does not fit
        r, q = h // sh, w // sw
        item = np.dtype((np.void, sw * x.itemsize))  # sw pixels of one block row
        s = x.strides
        pixels = as_strided(x, (n, c, r, sh, q * sw), (s[0], s[1], sh * s[2], s[2], s[3]))
        rows = self.buffers.get("blocks_in", (n, r, q, sh, c, sw), self.dtype)
        np.copyto(rows.view(item)[..., 0], pixels.view(item).transpose(0, 2, 4, 3, 1))  # (N, R, Q, sh, C)
        return rows.reshape(n * r * q, sh * c * sw)

    def _weight_blocks(self):
        """W as one (sh*C*sw, out) matrix per kernel block, (a*b, sh*C*sw, out) for a x b blocks,
        rows in _block_rows's order (a reused buffer)."""
        (sh, sw), (a, b) = self.stride, self.blocks
        c, o = self.in_channels, self.out_channels
        wb = self.buffers.get("blocks_w", (a, b, sh, c, sw, o), self.dtype)
        np.copyto(wb, self.params["W"].reshape(o, c, a, sh, b, sw).transpose(2, 4, 3, 1, 5, 0))
        return wb.reshape(a * b, sh * c * sw, o)

    def _offsets(self, q):
        """How many rows apart each kernel block reads, on a grid q blocks wide."""
        a, b = self.blocks
        return [i * q + j for i in range(a) for j in range(b)]

    def _windows(self, x):
        """x (N, C, H, W) -> (windows (N, Ho, Wo, kh, kw, C) strided view, the reused im2col buffer
        (N*Ho*Wo, kh*kw*C), the output shape (N, out, Ho, Wo)); ValueError if x does not fit."""
        check_input(self, x, 4, self.in_channels, axis=1)
        n, c, h, w = x.shape
        out_shape = self.output_shape(x.shape)
        _, _, ho, wo = out_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        # NHWC inside: every kernel row of a window is then kw*C contiguous numbers, which makes the
        # im2col copy 3 to 20 times faster than NCHW's (C, kh, kw) order.
        xp = self._padded_nhwc(x)  # (N, Hp, Wp, C)
        s = xp.strides
        windows = as_strided(xp, (n, ho, wo, kh, kw, c), (s[0], sh * s[1], sw * s[2], s[1], s[2], s[3]))
        cols = self.buffers.get("cols", (n * ho * wo, kh * kw * c), self.dtype)  # (N*Ho*Wo, kh*kw*C)
        return windows, cols, out_shape

    def _padded_nhwc(self, x):
        """x (N, C, H, W) as a zero-padded NHWC array (a reused buffer, or x's own memory)."""
        n, c, h, w = x.shape
        ph, pw = self.padding
        nhwc = x.transpose(0, 2, 3, 1)  # (N, H, W, C)
        if ph == pw == 0 and nhwc.flags.c_contiguous and nhwc.dtype == self.dtype:
            return nhwc  # a previous conv's output is NHWC in memory already: nothing to copy
        xp = self.buffers.get("x", (n, h + 2 * ph, w + 2 * pw, c), self.dtype)
        # Only the interior is written, so the zero border of a reused buffer stays zero.
        inner = xp[:, ph:ph + h, pw:pw + w, :]
        if x.flags.c_contiguous and c <= 8:
            # Few channels (the 4 stacked frames): one copy per channel runs over whole contiguous
            # planes; numpy's whole-array transpose would step C numbers at a time (4x slower).
            for ch in range(c):
                inner[..., ch] = x[:, ch]
        else:
            inner[...] = nhwc
        return xp

    def _weight_matrix(self):
        """W as (kh*kw*C, out), rows in the same (kh, kw, C) order as the columns (a reused buffer)."""
        kh, kw = self.kernel_size
        w = self.buffers.get("weights", (kh, kw, self.in_channels, self.out_channels), self.dtype)
        np.copyto(w, self.params["W"].transpose(2, 3, 1, 0))
        return w.reshape(-1, self.out_channels)

    def backward(self, dy):
        n, c, h, w = self.x_shape
        _, o, ho, wo = expected = self.output_shape(self.x_shape)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if dy.shape != expected:
            raise ValueError(f"Conv2d.backward expects dy of shape {expected}, got {dy.shape}")
        if self.blocked:
            return self._backward_blocks(dy)
        # dy from the layer above is usually an NCHW view of NHWC memory: this reshape is then free.
        dy2 = dy.transpose(0, 2, 3, 1).reshape(n * ho * wo, o)  # (N*Ho*Wo, out)
        # dW transposed, (out, K) = dy2.T @ cols, measured 15-20% faster than cols.T @ dy2 here.
        dw = self.buffers.get("dw", (o, kh * kw * c), self.dtype)  # reused: no parameter-sized array per step
        np.matmul(dy2.T, self.cols, out=dw)  # (out, kh*kw*C)
        self.grads["W"][...] = dw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        np.sum(dy2, axis=0, out=self.grads["b"])
        if not self.input_grad:
            return None
        # dcols as one (N*Ho*Wo, C) block per kernel offset: the blocks are then contiguous for
        # col2im below (a batched matmul, as fast here as the single (N*Ho*Wo, kh*kw*C) one).
        w_offsets = self.buffers.get("offsets", (kh, kw, o, c), self.dtype)
        np.copyto(w_offsets, self.params["W"].transpose(2, 3, 0, 1))
        w_offsets = w_offsets.reshape(kh * kw, o, c)  # (kh*kw, out, C)
        dcols = self.buffers.get("dcols", (kh * kw, n * ho * wo, c), self.dtype)
        np.matmul(dy2, w_offsets, out=dcols)  # (kh*kw, N*Ho*Wo, C)
        dx = col2im(dcols.reshape(kh, kw, n, ho, wo, c), (n, h + 2 * ph, w + 2 * pw, c), self.stride,
                    self.buffers)  # (N, Hp', Wp', C), a fresh array
        return dx[:, ph:ph + h, pw:pw + w, :].transpose(0, 3, 1, 2)  # (N, C, H, W)

    def _backward_blocks(self, dy):
        """backward of the space-to-depth forward: each kernel block's dW from its shifted rows, and
        dx by adding each block's share back at its offset, then undoing space to depth."""
        n, c, h, w = self.x_shape
        _, o, ho, wo = dy.shape
        (kh, kw), (sh, sw), (a, b) = self.kernel_size, self.stride, self.blocks
        r, q = self._grid(self.x_shape)
        rows = self.cols  # (M, sh*C*sw) from forward
        m, k = rows.shape
        offsets = self._offsets(q)
        span = m - offsets[-1]  # every output's row lies below it
        # dy on the forward's (R, Q) grid, zero where the dropped outputs were: only the valid
        # corner is ever written, so a reused buffer stays zero elsewhere.
        grid = self.buffers.get("blocks_dy", (n, r, q, o), self.dtype)
        grid[:, :ho, :wo] = dy.transpose(0, 2, 3, 1)
        dy2 = grid.reshape(m, o)  # (M, out)
        # rows.T @ dy: measured 1.5x faster at 2 threads than dy.T @ rows, the same at one
        dwb = self.buffers.get("blocks_dw", (a * b, k, o), self.dtype)
        for i, off in enumerate(offsets):
            np.matmul(rows[off:off + span].T, dy2[:span], out=dwb[i])  # (sh*C*sw, out)
        self.grads["W"][...] = dwb.reshape(a, b, sh, c, sw, o).transpose(5, 3, 0, 2, 1, 4).reshape(o, c, kh, kw)
        np.sum(dy2, axis=0, out=self.grads["b"])
        if not self.input_grad:
            return None
        wb = self._weight_blocks()  # (a*b, sh*C*sw, out)
        drows = self.buffers.get("blocks_drows", (m, k), self.dtype)
        np.matmul(dy2, wb[0].T, out=drows)
        if len(offsets) > 1:
            part = self.buffers.get("blocks_dpart", (span, k), self.dtype)
            for i in range(1, len(offsets)):
                np.matmul(dy2[:span], wb[i].T, out=part)
                drows[offsets[i]:offsets[i] + span] += part
        dx = np.empty((n, c, r, sh, q, sw), self.dtype)  # fresh: the caller may keep it
        np.copyto(dx, drows.reshape(n, r, q, sh, c, sw).transpose(0, 4, 1, 3, 2, 5))
        return dx.reshape(n, c, h, w)


def blocks_forward(layers, rows, x_shape):
    """Conv2d layers of one configuration on the same space-to-depth rows (_block_rows of an input
    of x_shape): one shifted_matmul with their weight blocks side by side. Returns their outputs
    (N, out, Ho, Wo): the valid corner of the (R, Q) grid of blocks, NCHW views of one array."""
    first = layers[0]
    (n, o, ho, wo), (r, q) = first.output_shape(x_shape), first._grid(x_shape)
    blocks = np.concatenate([layer._weight_blocks() for layer in layers], axis=2)  # (a*b, K, L*out)
    y = shifted_matmul(rows, blocks, first._offsets(q), first.buffers)  # (N*R*Q, L*out)
    y += np.concatenate([layer.params["b"] for layer in layers])
    y = y.reshape(n, r, q, len(layers), o)[:, :ho, :wo]
    return [y[:, :, :, i].transpose(0, 3, 1, 2) for i in range(len(layers))]  # L x (N, out, Ho, Wo)


def shifted_matmul(rows, blocks, offsets, buffers):
    """y[i] = sum_k rows[i + offsets[k]] @ blocks[k]: a stride-1 convolution over flattened rows,
    one matmul per kernel block on a shifted view. rows (M, K), blocks (len(offsets), K, out),
    offsets[0] == 0 and increasing. y (M, out) is fresh; its rows from M - offsets[-1] on hold
    partial sums (outputs that wrap past the grid, never read)."""
    m = rows.shape[0]
    span = m - offsets[-1]
    y = np.empty((m, blocks.shape[2]), np.result_type(rows, blocks))
    np.matmul(rows, blocks[0], out=y)
    if len(offsets) > 1:
        part = buffers.get("blocks_part", (span, blocks.shape[2]), y.dtype)
        for k in range(1, len(offsets)):
            np.matmul(rows[offsets[k]:offsets[k] + span], blocks[k], out=part)
            y[:span] += part
    return y


CHUNK_BYTES = 1 << 19  # columns copied and multiplied a piece at a time, in L2, when they are large
WHOLE_BYTES = 1 << 22  # up to this size all at once (one matmul call: fewer thread handovers)


def im2col_matmul(windows, cols, w):
    """cols <- windows (N, Ho, Wo, kh, kw, C) as rows, and cols @ w (kh*kw*C, out) -> (N*Ho*Wo, out).

    Large columns (DQN's first conv at batch 32: 13 MB) go a few images at a time, each piece
    multiplied right after it is copied, while it is still in cache: measured 10-15% quicker on that
    layer, with the same numbers (each output row is the same dot products)."""
    n = windows.shape[0]
    rows_per_image = cols.shape[0] // n
    per = max(1, CHUNK_BYTES // max(cols[:rows_per_image].nbytes, 1)) if cols.nbytes > WHOLE_BYTES else n
    if per >= n:
        np.copyto(cols.reshape(windows.shape), windows)
        return cols @ w
    y = np.empty((cols.shape[0], w.shape[1]), np.result_type(cols, w))  # (N*Ho*Wo, out)
    pieces = cols.reshape(windows.shape)
    for i in range(0, n, per):
        rows = slice(i * rows_per_image, min(i + per, n) * rows_per_image)
        np.copyto(pieces[i:i + per], windows[i:i + per])
        np.matmul(cols[rows], w, out=y[rows])
    return y


def shared_input_forward(layers, x):
    """Several Conv2d layers of one shape on the same input x (N, C, H, W): one im2col and one matmul
    with their weight matrices side by side. Double DQN's target and online networks both read s'.
    Returns their outputs (N, out, Ho, Wo), views of one array; caches nothing for backward."""
    first = layers[0]
    if any(type(layer) is not Conv2d or layer.config() != first.config() or layer.dtype != first.dtype
           for layer in layers):
        raise ValueError("shared_input_forward needs Conv2d layers of the same configuration and dtype")
    rows = first._block_rows(x)
    if rows is not None:
        return blocks_forward(layers, rows, x.shape)
    windows, cols, (n, o, ho, wo) = first._windows(x)
    weights = np.concatenate([layer._weight_matrix() for layer in layers], axis=1)  # (kh*kw*C, L*out)
    y = im2col_matmul(windows, cols, weights)  # (N*Ho*Wo, L*out)
    y += np.concatenate([layer.params["b"] for layer in layers])
    y = y.reshape(n, ho, wo, len(layers), o)
    return [y[:, :, :, i].transpose(0, 3, 1, 2) for i in range(len(layers))]  # L x (N, out, Ho, Wo)


def col2im(dcols, padded_shape, stride, buffers):
    """Sum the window gradients dcols (kh, kw, N, Ho, Wo, C) back onto the padded NHWC input.

    One slice-add per kernel offset (never np.add.at). Rows and columns are first gathered by
    stride phase (row % sh, col % sw): within a phase, consecutive windows touch consecutive rows,
    so every add runs over long contiguous stretches instead of C numbers at a time (3x faster
    here). One strided copy then interleaves the phases into a fresh (N, hs*sh, ws*sw, C) array,
    NHWC in memory like the forward output, covering padded_shape (extra rows and columns at the
    end when the stride does not divide it).
    """
    kh, kw, n, ho, wo, c = dcols.shape
    sh, sw = stride
    hs, ws = -(-padded_shape[1] // sh), -(-padded_shape[2] // sw)  # rows, columns per phase
    phases = buffers.get("phases", (sh, sw, n, hs, ws, c), dcols.dtype, zero=True)
    for i in range(kh):
        for j in range(kw):
            (a, p), (b, q) = divmod(i, sh), divmod(j, sw)  # padded row = (r + a) * sh + p for output row r
            phases[p, q, :, a:a + ho, b:b + wo, :] += dcols[i, j]
    dx = np.empty((n, hs * sh, ws * sw, c), dcols.dtype)  # fresh: the phases buffer is reused
    dx.reshape(n, hs, sh, ws, sw, c)[...] = phases.transpose(2, 3, 0, 4, 1, 5)
    return dx


class MaxPool2d(Layer):
    """Max over kernel_size windows, stride defaults to kernel_size; (N, C, H, W) -> (N, C, Ho, Wo).

    The gradient goes to the first maximum of each window (as PyTorch)."""

    def __init__(self, kernel_size, stride=None, *, dtype=np.float32):
        super().__init__(dtype)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"MaxPool2d needs kernel_size and stride >= 1, got {self.kernel_size}, {self.stride}")

    def config(self):
        return {"kernel_size": _unpair(self.kernel_size), "stride": _unpair(self.stride)}

    def forward(self, x):
        check_input(self, x, 4)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if h < kh or w < kw:
            raise ValueError(f"MaxPool2d kernel {self.kernel_size} does not fit input shape {x.shape}")
        ho, wo = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
        s = x.strides
        windows = as_strided(x, (n, c, ho, wo, kh, kw), (s[0], s[1], sh * s[2], sw * s[3], s[2], s[3]))
        flat = windows.reshape(n, c, ho, wo, kh * kw)  # (N, C, Ho, Wo, kh*kw), a copy
        self.argmax = flat.argmax(axis=-1)  # (N, C, Ho, Wo)
        self.x_shape = x.shape
        return np.take_along_axis(flat, self.argmax[..., None], axis=-1)[..., 0]  # (N, C, Ho, Wo)

    def backward(self, dy):
        n, c, h, w = self.x_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ho, wo = self.argmax.shape[2:]
        if dy.shape != self.argmax.shape:
            raise ValueError(f"MaxPool2d.backward expects dy of shape {self.argmax.shape}, got {dy.shape}")
        dx = np.zeros(self.x_shape, dy.dtype)  # (N, C, H, W)
        # One strided slice-add per window offset (overlapping windows add up correctly).
        for i in range(kh):
            for j in range(kw):
                dx[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += dy * (self.argmax == i * kw + j)
        return dx
