"""scripts.bench nets --layers: where the batch-32 DQN forward spends its time, layer by layer."""
import numpy as np
import pytest

from scripts import bench_nets


@pytest.mark.parametrize("use_torch", [False, True])
def test_layer_rows_time_every_layer_and_each_convs_matmul(use_torch):
    if use_torch:
        pytest.importorskip("torch")
    rows = bench_nets.layer_rows(repeats=1, seed=0, torch_threads=1, use_torch=use_torch)
    names = [r["layer"] for r in rows]
    assert len(rows) == len(bench_nets.nature_dqn(np.random.default_rng(0)).layers)
    assert names[0] == "0 Conv2d 4->32 8x8/4" and names[2] == "2 Conv2d 32->64 4x4/2" and names[7] == "7 Linear"
    for r in rows:
        assert r["numpy_ms"] > 0
        assert (r["gemm_ms"] is not None) == ("Conv2d" in r["layer"])
        assert (r["torch_ms"] is not None) == use_torch
