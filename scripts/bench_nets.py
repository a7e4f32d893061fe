"""python -m scripts.bench nets: the numpy networks the agents use, timed against PyTorch.

Rows: Karpathy's MLP 6400 -> 200 -> 1 at batch 4096 (forward, forward+backward) and the Nature-DQN
network on 4x84x84 (forward at batch 1 and 32, forward+backward at batch 32, one Adam step over
its parameters). numpy and PyTorch (2 threads, when importable) run the same networks with the
same weights and the same work: the DQN's first conv computes no input gradient in either, and
the MLP's backward computes the input gradient in both (nets.Linear always returns dx).
Each row's two timings are interleaved, so a busy machine slows both alike: trust the ratios.

--layers adds where the batch-32 forward's time goes, layer by layer: each numpy layer's forward,
for a conv the matmul alone on columns made ready beforehand (what im2col costs is the difference),
and PyTorch's same layer.
"""
import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_info

import nets
from scripts.common import (UsageError, add_blas_threads_flag, add_kernel_flag, at_least_one, blas_kernel, blas_threads,
                            fail, kernel_runs, seed_value)

# the speed targets for numpy/PyTorch (time ratios), by row name
TARGETS = {"mlp fwd+bwd b4096": 1.0, "dqn fwd b1": 1.0, "dqn fwd b32": 1.5, "dqn fwd+bwd b32": 1.0,
           "dqn adam step": 1.0}


def add_arguments(parser):
    parser.add_argument("--repeats", type=at_least_one, default=15, help="timed samples per row (median is reported)")
    parser.add_argument("--no-torch", action="store_true", help="time numpy only, even if PyTorch is importable")
    parser.add_argument("--seed", type=seed_value, default=0, help="seed for weights and inputs")
    parser.add_argument("--torch-threads", type=at_least_one, default=2,
                        help="PyTorch threads (on a busy machine compare 1 against --blas-threads 1)")
    parser.add_argument("--layers", action="store_true",
                        help="also time the Nature-DQN forward at batch 32 layer by layer (numpy, its matmul alone, PyTorch)")
    add_blas_threads_flag(parser, "as many as --torch-threads, so both sides run alike")
    add_kernel_flag(parser)


def mlp(rng):
    return nets.Sequential(nets.Linear(6400, 200, rng=rng), nets.ReLU(), nets.Linear(200, 1, rng=rng))


def nature_dqn(rng, actions=6):
    return nets.Sequential(
        nets.Conv2d(4, 32, 8, stride=4, input_grad=False, rng=rng), nets.ReLU(),
        nets.Conv2d(32, 64, 4, stride=2, rng=rng), nets.ReLU(),
        nets.Conv2d(64, 64, 3, stride=1, rng=rng), nets.ReLU(),
        nets.Flatten(), nets.Linear(64 * 7 * 7, 512, rng=rng), nets.ReLU(), nets.Linear(512, actions, rng=rng))


def train_step_flops(model, x):
    """Multiply-adds x2 of one forward+backward: forward, weight gradient and (unless skipped) dx."""
    total = 0
    for layer in model.layers:
        y = layer.forward(x)
        if isinstance(layer, (nets.Conv2d, nets.Linear)):
            w = layer.params["W"]
            macs = (y.size // y.shape[1]) * w.size  # (N*Ho*Wo or N) * (out*in*kh*kw)
            total += 2 * macs * (2 + getattr(layer, "input_grad", True))
        x = y
    return total


def gemm_gflops(repeats, size=2048):
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    ms = median_ms(lambda: a @ a, repeats)
    return 2 * size ** 3 / (ms * 1e-3) / 1e9


def _sample(fn, inner):
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def _inner_count(fn, min_seconds=0.005):
    """How many calls make one sample last about min_seconds (short rows need several)."""
    once = _sample(fn, 1)
    return max(1, int(min_seconds / max(once, 1e-7)))


def median_ms(fn, repeats):
    fn()
    inner = _inner_count(fn)
    return 1e3 * float(np.median([_sample(fn, inner) for _ in range(repeats)]))


def time_interleaved(fns, repeats):
    """Medians (ms) of each function (None for a None), their samples interleaved so background load
    hits all alike."""
    inners = [_inner_count(fn) if fn else 0 for fn in fns]
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, inner, samples in zip(fns, inners, times):
            if fn:
                samples.append(_sample(fn, inner))
    return [1e3 * float(np.median(samples)) if samples else None for samples in times]


def time_pair(np_fn, torch_fn, repeats):
    """Medians (ms) of numpy and PyTorch (None without it), interleaved."""
    return tuple(time_interleaved([np_fn, torch_fn], repeats))


def numpy_cases(seed):
    """name -> zero-argument function doing that row's work in numpy."""
    rng = np.random.default_rng(seed)
    mlp_net, dqn = mlp(rng), nature_dqn(rng)
    x_mlp = rng.random((4096, 6400), dtype=np.float32)
    dy_mlp = np.full((4096, 1), 1 / 4096, np.float32)
    x1, x32 = rng.random((1, 4, 84, 84), dtype=np.float32), rng.random((32, 4, 84, 84), dtype=np.float32)
    dy32 = np.full((32, 6), 1 / 32, np.float32)
    adam = nets.Adam(dqn, lr=1e-4)

    def mlp_step():
        mlp_net.forward(x_mlp)
        mlp_net.backward(dy_mlp)

    def dqn_step():
        dqn.forward(x32)
        dqn.backward(dy32)

    dqn_step()  # grads in place for the Adam row
    cases = {
        "mlp fwd b4096": lambda: mlp_net.forward(x_mlp),
        "mlp fwd+bwd b4096": mlp_step,
        "dqn fwd b1": lambda: dqn.forward(x1),
        "dqn fwd b32": lambda: dqn.forward(x32),
        "dqn fwd+bwd b32": dqn_step,
        "dqn adam step": adam.step,
    }
    return cases, (mlp_net, dqn, x_mlp, dy_mlp, x1, x32, dy32)


def torch_cases(numpy_nets, threads=2):
    """The same rows in PyTorch with the same weights and inputs, or None if torch is missing."""
    try:
        import torch
    except ImportError:
        return None, None
    torch.set_num_threads(threads)
    tnn = torch.nn
    mlp_net, dqn, x_mlp, dy_mlp, x1, x32, dy32 = numpy_nets
    t_mlp = tnn.Sequential(tnn.Linear(6400, 200), tnn.ReLU(), tnn.Linear(200, 1))
    t_dqn = tnn.Sequential(
        tnn.Conv2d(4, 32, 8, stride=4), tnn.ReLU(), tnn.Conv2d(32, 64, 4, stride=2), tnn.ReLU(),
        tnn.Conv2d(64, 64, 3, stride=1), tnn.ReLU(), tnn.Flatten(), tnn.Linear(3136, 512), tnn.ReLU(),
        tnn.Linear(512, 6))
    with torch.no_grad():
        for ours, theirs in [(mlp_net, t_mlp), (dqn, t_dqn)]:
            for layer, t_layer in zip(ours.layers, theirs):
                if "W" in layer.params:
                    w = layer.params["W"]
                    t_layer.weight.copy_(torch.from_numpy(w.T.copy() if isinstance(layer, nets.Linear) else w))
                    t_layer.bias.copy_(torch.from_numpy(layer.params["b"]))
    tx_mlp = torch.from_numpy(x_mlp).requires_grad_(True)  # nets.Linear computes dx, so torch does too
    tdy_mlp, tx1, tx32, tdy32 = (torch.from_numpy(a) for a in (dy_mlp, x1, x32, dy32))
    adam = torch.optim.Adam(t_dqn.parameters(), lr=1e-4)

    def no_grad(net, x):
        def run():
            with torch.no_grad():
                net(x)
        return run

    def step(net, x, dy):
        def run():
            net.zero_grad(set_to_none=True)
            net(x).backward(dy)
        return run

    step(t_dqn, tx32, tdy32)()  # grads in place for the Adam row
    cases = {
        "mlp fwd b4096": no_grad(t_mlp, tx_mlp),
        "mlp fwd+bwd b4096": step(t_mlp, tx_mlp, tdy_mlp),
        "dqn fwd b1": no_grad(t_dqn, tx1),
        "dqn fwd b32": no_grad(t_dqn, tx32),
        "dqn fwd+bwd b32": step(t_dqn, tx32, tdy32),
        "dqn adam step": adam.step,
    }
    return cases, torch.__version__


def layer_rows(repeats, seed, torch_threads, use_torch=True):
    """The Nature-DQN forward at batch 32, one row per layer: numpy's forward, for a conv its matmul
    alone (columns already copied), and PyTorch's same layer on the same input (None without torch)."""
    rng = np.random.default_rng(seed)
    dqn = nature_dqn(rng).eval()
    torch = None
    if use_torch:
        try:
            import torch
            torch.set_num_threads(torch_threads)
        except ImportError:
            pass
    x = rng.random((32, 4, 84, 84), dtype=np.float32)
    rows = []
    for i, layer in enumerate(dqn.layers):
        name = f"{i} {type(layer).__name__}"
        if isinstance(layer, nets.Conv2d):
            (kh, kw), stride = layer.kernel_size, layer.stride
            name += f" {layer.in_channels}->{layer.out_channels} {kh}x{kw}/{stride[0]}"
        np_ms, gemm_ms, torch_ms = time_interleaved(
            [lambda: layer.forward(x), matmul_alone(layer, x), torch and torch_twin(torch, layer, x)], repeats)
        rows.append({"layer": name, "numpy_ms": round(np_ms, 3), "gemm_ms": None if gemm_ms is None else round(gemm_ms, 3),
                     "torch_ms": None if torch_ms is None else round(torch_ms, 3)})
        x = layer.forward(x)
    return rows


def matmul_alone(layer, x):
    """A Conv2d's matmuls on its input rows copied beforehand, as a function (None for other layers):
    the shifted matmuls of space to depth where the layer takes that path, else im2col's one."""
    if not isinstance(layer, nets.Conv2d):
        return None
    rows = layer._block_rows(x)
    if rows is not None:
        rows, blocks = rows.copy(), layer._weight_blocks().copy()  # their own: the layer reuses its buffers
        offsets, buffers = layer._offsets(layer._grid(x.shape)[1]), nets.conv._Buffers()
        return lambda: nets.conv.shifted_matmul(rows, blocks, offsets, buffers)
    windows, cols, _ = layer._windows(x)
    cols = np.ascontiguousarray(windows).reshape(cols.shape)  # its own copy: the layer reuses its buffer
    w = layer._weight_matrix()
    return lambda: cols @ w


def torch_twin(torch, layer, x):
    """The same layer in PyTorch applied to x, as a function (None for a layer it lacks)."""
    kind = type(layer).__name__
    if kind == "Conv2d":
        twin = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride)
    elif kind == "Linear":
        twin = torch.nn.Linear(*layer.params["W"].shape)
    elif kind in ("ReLU", "Flatten"):
        twin = getattr(torch.nn, kind)()
    else:
        return None
    tx = torch.from_numpy(np.ascontiguousarray(x))

    def run():
        with torch.no_grad():
            twin(tx)
    return run


def print_layer_rows(rows):
    print("\nthe dqn fwd b32 row, layer by layer (matmul: the conv's matmuls alone, its input rows ready)")
    print(f"{'layer':<26}{'numpy ms':>10}{'matmul ms':>11}{'torch ms':>10}{'ratio':>8}")
    for r in rows:
        gemm = f"{r['gemm_ms']:.2f}" if r["gemm_ms"] is not None else "-"
        torch_ms = f"{r['torch_ms']:.2f}" if r["torch_ms"] is not None else "-"
        ratio = f"{r['numpy_ms'] / r['torch_ms']:.2f}" if r["torch_ms"] else "-"
        print(f"{r['layer']:<26}{r['numpy_ms']:>10.2f}{gemm:>11}{torch_ms:>10}{ratio:>8}")


def blas_description():
    parts = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} x{i.get('num_threads')}"
             for i in threadpool_info() if i.get("user_api") == "blas"]
    return "BLAS: " + "; ".join(parts)


def run(repeats=15, use_torch=True, seed=0, torch_threads=2):
    """Time every row; return (rows, gemm GFLOP/s, DQN step FLOPs)."""
    np_fns, data = numpy_cases(seed)
    torch_fns, _ = torch_cases(data, torch_threads) if use_torch else (None, None)
    rows = []
    for name, np_fn in np_fns.items():
        np_ms, torch_ms = time_pair(np_fn, torch_fns[name] if torch_fns else None, repeats)
        rows.append({"name": name, "numpy_ms": round(np_ms, 3),
                     "torch_ms": None if torch_ms is None else round(torch_ms, 3),
                     "ratio": None if torch_ms is None else round(np_ms / torch_ms, 2)})
    flops = train_step_flops(data[1], data[5])
    return rows, gemm_gflops(repeats), flops


def measure(args):
    """The rows (and --layers) at the kernel this process has; prints them and returns [the JSON result]."""
    load = os.getloadavg()[0]
    print(f"nets bench: numpy {np.__version__}, {os.cpu_count()} cpus, load average {load:.2f} at start"
          + (" (busy machine: absolute times are noisy, ratios less so)" if load > 0.5 else ""))
    print(blas_description())
    try:
        with blas_threads(args.blas_threads or args.torch_threads) as threads:
            print(f"numpy with {threads.threads} BLAS threads")
            rows, gemm, flops = run(args.repeats, not args.no_torch, args.seed, args.torch_threads)
            layers = layer_rows(args.repeats, args.seed, args.torch_threads, not args.no_torch) if args.layers else None
    except UsageError as e:
        fail(str(e))
    have_torch = rows[0]["torch_ms"] is not None
    if have_torch:
        import torch
        print(f"PyTorch {torch.__version__} with {torch.get_num_threads()} threads")
    else:
        print("PyTorch not importable (or --no-torch): numpy only")
    print(f"\n{'row':<20}{'numpy ms':>10}{'torch ms':>10}{'ratio':>8}{'target':>8}")
    for r in rows:
        torch_ms = f"{r['torch_ms']:.2f}" if have_torch else "-"
        ratio = f"{r['ratio']:.2f}" if have_torch else "-"
        target = f"<={TARGETS[r['name']]:.1f}" if r["name"] in TARGETS else "-"
        print(f"{r['name']:<20}{r['numpy_ms']:>10.2f}{torch_ms:>10}{ratio:>8}{target:>8}")
    step = next(r for r in rows if r["name"] == "dqn fwd+bwd b32")
    step_gflops = flops / (step["numpy_ms"] * 1e-3) / 1e9
    line = (f"\nnumpy float32 GEMM 2048x2048: {gemm:.0f} GFLOP/s; dqn fwd+bwd b32 ({flops / 1e9:.2f} GFLOP): "
            f"numpy {step_gflops:.0f} GFLOP/s")
    if have_torch:
        line += f", PyTorch {flops / (step['torch_ms'] * 1e-3) / 1e9:.0f} GFLOP/s"
    print(line)
    if layers:
        print_layer_rows(layers)
    result = {"bench": "nets", "rows": rows, "gemm_gflops": round(gemm, 1),
              "dqn_step_gflops": round(step_gflops, 1), **({"layers": layers} if layers else {}),
              "blas": blas_kernel()}
    print(json.dumps(result), flush=True)
    return [result]


def summary(r):
    """A result's figures in one line, for the side-by-side of --kernel both."""
    step = next(row for row in r["rows"] if row["name"] == "dqn fwd+bwd b32")
    text = f"GEMM 2048x2048 {r['gemm_gflops']:.0f} GFLOP/s, dqn fwd+bwd b32 {r['dqn_step_gflops']:.0f} GFLOP/s"
    return text + (f", numpy/torch {step['ratio']:.2f}" if step["ratio"] else "")


def main(args):
    return kernel_runs(args, lambda: measure(args), summary)
