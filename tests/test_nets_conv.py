"""The fast Conv2d and MaxPool2d against their slow loop references: values and gradients."""
import numpy as np
import pytest

import nets
from reference import conv2d_reference, conv2d_reference_backward, maxpool2d_reference, maxpool2d_reference_backward

CASES = [  # n, c, h, w, out, kernel, stride, padding
    (2, 3, 7, 6, 4, 3, 1, 0),
    (2, 3, 9, 8, 5, 3, 2, 1),
    (1, 2, 8, 8, 3, (2, 3), (2, 1), (1, 2)),
    (3, 4, 12, 12, 2, 4, 4, 0),
    (2, 1, 5, 7, 2, 5, 1, 2),
    (1, 4, 20, 20, 3, 8, 4, 0),  # the Nature-DQN first layer's kernel and stride
    (2, 5, 9, 9, 4, 3, 3, 1),
    (2, 2, 10, 11, 3, 2, 3, 1),  # kernel smaller than the stride: some inputs get no gradient
    # kernels of whole strides: by space to depth where the stride divides the unpadded input
    (2, 3, 8, 9, 4, (4, 3), (2, 3), 0),
    (3, 8, 10, 10, 5, 4, 2, 0),
    (2, 3, 11, 9, 4, 4, 2, 1),  # by im2col: padding, sizes the stride does not divide
    (2, 3, 10, 13, 4, 6, 3, 0),
    (3, 16, 20, 20, 5, 4, 2, 0),  # more than 8 channels
]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c,h,w,out,kernel,stride,padding", CASES)
def test_conv_matches_reference(dtype, n, c, h, w, out, kernel, stride, padding):
    rng = np.random.default_rng(h * 100 + w * 10 + c)
    layer = nets.Conv2d(c, out, kernel, stride, padding, rng=rng, dtype=dtype)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    y = layer.forward(x)
    assert y.dtype == dtype
    W, b = layer.params["W"].astype(np.float64), layer.params["b"].astype(np.float64)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, conv2d_reference(x64, W, b, stride, padding), **TOL[dtype])
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = conv2d_reference_backward(x64, W, dy.astype(np.float64), stride, padding)
    assert dx.dtype == dtype and layer.grads["W"].dtype == dtype
    np.testing.assert_allclose(dx, dx_ref, **TOL[dtype])
    np.testing.assert_allclose(layer.grads["W"], dw_ref, **TOL[dtype])
    np.testing.assert_allclose(layer.grads["b"], db_ref, **TOL[dtype])


def test_conv_buffers_reused_across_shapes_stay_correct():
    """Reused buffers: switching batch shapes back and forth must not leak stale values."""
    rng = np.random.default_rng(1)
    layer = nets.Conv2d(2, 3, 3, stride=2, padding=2, rng=rng, dtype=np.float64)
    W, b = layer.params["W"], layer.params["b"]
    for shape in [(2, 2, 9, 9), (1, 2, 6, 7), (2, 2, 9, 9), (2, 2, 9, 9)]:
        x = rng.standard_normal(shape)
        y = layer.forward(x)
        np.testing.assert_allclose(y, conv2d_reference(x, W, b, 2, 2), rtol=1e-10, atol=1e-12)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        np.testing.assert_allclose(dx, conv2d_reference_backward(x, W, dy, 2, 2)[0], rtol=1e-10, atol=1e-12)


def test_conv_outputs_are_not_overwritten_by_later_calls():
    rng = np.random.default_rng(2)
    layer = nets.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64)
    x1, x2 = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 5, 5))
    y1 = layer.forward(x1)
    dx1 = layer.backward(np.ones_like(y1))
    y1_copy, dx1_copy = y1.copy(), dx1.copy()
    y2 = layer.forward(x2)
    layer.backward(2 * np.ones_like(y2))
    np.testing.assert_array_equal(y1, y1_copy)
    np.testing.assert_array_equal(dx1, dx1_copy)


def test_conv_follows_the_weights_after_an_update():
    rng = np.random.default_rng(3)
    layer = nets.Conv2d(2, 2, 3, rng=rng, dtype=np.float64)
    x = rng.standard_normal((1, 2, 5, 5))
    layer.forward(x)
    layer.params["W"] += 1.0  # in place, as optimizers do
    np.testing.assert_allclose(layer.forward(x), conv2d_reference(x, layer.params["W"], layer.params["b"]),
                               rtol=1e-10)


def test_conv_accepts_other_input_dtypes_and_keeps_its_own():
    layer = nets.Conv2d(1, 2, 2, rng=np.random.default_rng(4))
    x = np.arange(2 * 16, dtype=np.float64).reshape(2, 1, 4, 4)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("bad", [(2, 3, 8), (2, 2, 8, 8), (1, 3, 2, 2)])
def test_conv_bad_shapes_name_them(bad):
    layer = nets.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=str(bad).replace("(", r"\(").replace(")", r"\)")):
        layer.forward(np.zeros(bad, np.float32))


def test_conv_bad_dy_shape_names_it():
    layer = nets.Conv2d(1, 2, 3)
    layer.forward(np.zeros((2, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 2, 3, 3\).*\(2, 2, 4, 4\)"):
        layer.backward(np.zeros((2, 2, 4, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,shape", [(2, None, (2, 3, 8, 8)), (3, 2, (2, 2, 9, 8)),
                                                 (3, 1, (1, 2, 6, 6)), ((2, 3), (1, 2), (2, 1, 7, 9)),
                                                 (2, None, (1, 1, 7, 5))])
def test_maxpool_matches_reference(dtype, kernel, stride, shape):
    rng = np.random.default_rng(5)
    layer = nets.MaxPool2d(kernel, stride, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, maxpool2d_reference(x, kernel, stride))
    dy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(layer.backward(dy), maxpool2d_reference_backward(x, dy, kernel, stride),
                               rtol=1e-6, atol=1e-6)


def test_maxpool_ties_send_the_gradient_to_the_first_maximum():
    layer = nets.MaxPool2d(2)
    x = np.ones((1, 1, 2, 2), np.float32)
    layer.forward(x)
    dx = layer.backward(np.full((1, 1, 1, 1), 3.0, np.float32))
    np.testing.assert_array_equal(dx, [[[[3.0, 0.0], [0.0, 0.0]]]])
    np.testing.assert_array_equal(dx, maxpool2d_reference_backward(x, np.full((1, 1, 1, 1), 3.0, np.float32), 2))


def test_maxpool_bad_shapes_name_them():
    with pytest.raises(ValueError, match=r"\(1, 1, 1, 4\)"):
        nets.MaxPool2d(2).forward(np.zeros((1, 1, 1, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        nets.MaxPool2d(2).forward(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("channels", [3, 12])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("layout", ["nchw", "nhwc memory", "strided"])
def test_conv_input_layouts_give_the_same_result(channels, padding, layout):
    """The fast path copies few-channel NCHW input per channel, uses NHWC-memory input in place when
    unpadded, and copies anything else whole: all must agree with the reference."""
    rng = np.random.default_rng(6)
    layer = nets.Conv2d(channels, 4, 3, stride=2, padding=padding, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, channels, 9, 8))
    if layout == "nhwc memory":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=3)[..., ::2]
    x_before = x.copy()
    y = layer.forward(x)
    W, b = layer.params["W"], layer.params["b"]
    np.testing.assert_allclose(y, conv2d_reference(x, W, b, 2, padding), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx_ref, dw_ref, _ = conv2d_reference_backward(x, W, dy, 2, padding)
    np.testing.assert_allclose(layer.backward(dy), dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(x, x_before)  # the input itself is never written


@pytest.mark.parametrize("layout", ["nchw", "every other image", "every other channel", "nhwc memory"])
def test_space_to_depth_reads_any_layout_with_contiguous_rows(layout):
    """Space to depth reads pixels a block row at a time: batches and channels may be strided views
    (taken that way), rows that are not contiguous go by im2col; every one agrees with the reference."""
    rng = np.random.default_rng(8)
    layer = nets.Conv2d(3, 4, 4, stride=2, rng=rng, dtype=np.float64)
    x = rng.standard_normal((4, 6, 8, 10))
    x = {"nchw": x[:2, :3], "every other image": x[::2, :3], "every other channel": x[:2, ::2],
         "nhwc memory": np.ascontiguousarray(x[:2, :3].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)}[layout]
    x_before = x.copy()
    y = layer.forward(x)
    assert layer.blocked == (layout != "nhwc memory")
    W, b = layer.params["W"], layer.params["b"]
    np.testing.assert_allclose(y, conv2d_reference(x, W, b, 2, 0), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx_ref, dw_ref, db_ref = conv2d_reference_backward(x, W, dy, 2, 0)
    np.testing.assert_allclose(layer.backward(dy), dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], db_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(x, x_before)


# ---- the large-columns path and the shared-input forward (DQN's speed-ups): the same numbers ------

@pytest.mark.parametrize("n,c,h,w,out,kernel,stride,padding", [(5, 4, 22, 22, 3, 8, 4, 0), (3, 3, 9, 8, 5, 3, 2, 1)])
def test_conv_in_pieces_gives_the_same_numbers(monkeypatch, n, c, h, w, out, kernel, stride, padding):
    """Columns larger than WHOLE_BYTES go a few images at a time (CHUNK_BYTES): the same output, bit
    for bit, and the same gradients, as all at once."""
    rng = np.random.default_rng(7)
    layer = nets.Conv2d(c, out, kernel, stride, padding, rng=rng)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    dy = rng.standard_normal(layer.output_shape(x.shape)).astype(np.float32)
    whole = layer.forward(x).copy()
    dx_whole, dw_whole = layer.backward(dy).copy(), layer.grads["W"].copy()
    monkeypatch.setattr(nets.conv, "WHOLE_BYTES", 0)
    for chunk in (1, 3000, 10 ** 9):  # one image, a few, all of them per piece
        monkeypatch.setattr(nets.conv, "CHUNK_BYTES", chunk)
        np.testing.assert_array_equal(layer.forward(x), whole)
        np.testing.assert_array_equal(layer.backward(dy), dx_whole)
        np.testing.assert_array_equal(layer.grads["W"], dw_whole)


@pytest.mark.parametrize("out", [16, 32])
def test_atari_first_layer_goes_by_space_to_depth_and_agrees_with_im2col(out):
    """The frames layer (8x8 stride 4 on 84x84) takes the space-to-depth path on a contiguous batch;
    the same numbers as im2col, which it takes on a batch whose rows are not contiguous."""
    rng = np.random.default_rng(11)
    layer = nets.Conv2d(4, out, 8, 4, input_grad=True, rng=rng)
    x = rng.random((3, 4, 84, 84), dtype=np.float32)
    dy = rng.standard_normal((3, out, 20, 20)).astype(np.float32)
    fast = layer.forward(x).copy()
    assert layer.blocked
    dx_fast, dw_fast, db_fast = layer.backward(dy).copy(), layer.grads["W"].copy(), layer.grads["b"].copy()
    columns_apart = np.empty((3, 4, 84, 84, 2), np.float32)[..., 0]  # the same numbers, every other float
    columns_apart[...] = x
    slow = layer.forward(columns_apart)
    assert not layer.blocked
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx_fast, layer.backward(dy), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw_fast, layer.grads["W"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(db_fast, layer.grads["b"], rtol=1e-5, atol=1e-4)


def nature_trunk(rng, dueling=False):
    from agents.dqn import build_q_network
    return build_q_network((4, 36, 36), 5, "nature", 16, dueling, rng)


@pytest.mark.parametrize("dueling", [False, True])
def test_shared_input_forward_equals_separate_forwards(dueling):
    """Double DQN's target and online networks on one s': one im2col and one matmul for both first
    convs, and every output the same as two separate forwards (pieces included), up to float32
    rounding: OpenBLAS may block a matmul twice as wide differently (bit-equal on one machine of this
    kind, 1.5e-8 apart on another, with the same kernel)."""
    rng = np.random.default_rng(3)
    a, b = nature_trunk(rng, dueling).eval(), nature_trunk(rng, dueling).eval()
    x = rng.random((6, 4, 36, 36), dtype=np.float32)
    shared = nets.forward_shared_input([a, b], x)
    np.testing.assert_allclose(shared[0], a.forward(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shared[1], b.forward(x), rtol=1e-5, atol=1e-6)
    firsts = nets.conv.shared_input_forward([a.layers[0], b.layers[0]], x)
    np.testing.assert_allclose(firsts[1], b.layers[0].forward(x), rtol=1e-5, atol=1e-6)


def test_shared_input_forward_falls_back_and_refuses_mismatched_convs():
    rng = np.random.default_rng(4)
    mlps = [nets.Sequential(nets.Linear(3, 4, rng=rng), nets.ReLU()) for _ in range(2)]
    x = rng.standard_normal((2, 3)).astype(np.float32)
    for out, model in zip(nets.forward_shared_input(mlps, x), mlps):
        np.testing.assert_array_equal(out, model.forward(x))
    trained = [nature_trunk(rng), nature_trunk(rng)]  # in training mode: a backward may come, so no sharing
    x4 = rng.random((2, 4, 36, 36), dtype=np.float32)
    for out, model in zip(nets.forward_shared_input(trained, x4), trained):
        np.testing.assert_array_equal(out, model.forward(x4))
    with pytest.raises(ValueError, match="same configuration"):
        nets.conv.shared_input_forward([nets.Conv2d(4, 3, 3, rng=rng), nets.Conv2d(4, 3, 3, stride=2, rng=rng)],
                                       rng.standard_normal((1, 4, 8, 8)).astype(np.float32))


def test_relu_in_eval_mode_gives_the_training_values_and_no_backward():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32).transpose(0, 2, 3, 1)  # a strided view too
    relu = nets.ReLU()
    trained = relu.forward(x)
    relu.training = False
    np.testing.assert_array_equal(relu.forward(x), trained)
    with pytest.raises(TypeError):
        relu.backward(np.ones_like(x))  # no mask kept in eval mode: a backward there is a mistake
