"""scripts.common's BLAS thread policy (what every command runs its numpy with) and bench threads."""
import json
import os
import subprocess
import sys

import pytest
from threadpoolctl import threadpool_info

from scripts import common
from scripts.common import ThreadPolicy, UsageError, blas_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blas_counts():
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


class FakeMachine:
    """cpu_clock() readings of a machine whose other processes keep `others` cores busy."""

    def __init__(self, others):
        self.others, self.t = others, 1000.0

    def clock(self):
        self.t += 2.5  # every reading is a poll interval later
        return self.t * (self.others + 0.5), self.t * 0.5, self.t  # busy, own (half a core), wall


@pytest.fixture
def machine(monkeypatch):
    fake = FakeMachine(0.0)
    monkeypatch.setattr(common, "cpu_clock", fake.clock)
    monkeypatch.setattr(common, "usable_cpus", lambda: 2)
    monkeypatch.setattr(ThreadPolicy, "START_SECONDS", 0.0)
    monkeypatch.setattr(ThreadPolicy, "POLL_SECONDS", 0.0)  # every poll looks (the fake clock is not time.monotonic)
    return fake


@pytest.mark.parametrize("others, threads", [(0.0, 2), (0.2, 2), (0.3, 1), (1.0, 1), (1.9, 1)])
def test_auto_leaves_the_cores_other_processes_use(machine, others, threads):
    machine.others = others
    policy = ThreadPolicy()
    assert policy.threads == threads and policy.describe() == f"auto ({threads} now)"
    assert blas_counts() == {threads}
    policy.restore()


def test_auto_follows_the_machine_at_each_poll_and_restores_the_limits_it_found(machine):
    before = blas_counts()
    policy = ThreadPolicy()
    assert policy.threads == 2
    machine.others = 1.0  # a process starts mid-run
    assert policy.poll() == 1 and blas_counts() == {1}
    machine.others = 0.0
    assert policy.poll() == 2 and policy.changes == 2
    policy.restore()
    assert blas_counts() == before


def test_poll_waits_for_its_interval(machine, monkeypatch):
    policy = ThreadPolicy()
    machine.others = 1.0
    monkeypatch.setattr(ThreadPolicy, "POLL_SECONDS", 1e9)
    assert policy.poll() == 2  # not looked again yet
    policy.restore()


def test_a_number_or_an_inherited_openblas_num_threads_is_fixed(machine, monkeypatch):
    machine.others = 1.5
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with blas_threads(2) as policy:
        assert policy.threads == 2 and policy.poll() == 2 and policy.describe() == "2"
    with blas_threads(None, default=1) as policy:
        assert policy.threads == 1 and not policy.auto
    with blas_threads() as policy:
        assert policy.auto and policy.threads == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with blas_threads() as policy:
        assert policy.threads == 2 and not policy.auto
    with pytest.raises(UsageError, match="--blas-threads"):
        with blas_threads(0):
            pass


def test_the_machine_is_read_from_proc_stat_where_there_is_one():
    now = common.cpu_clock()
    if now is None:
        pytest.skip("no /proc/stat here")
    busy, own, wall = now
    assert busy >= 0 and own > 0 and wall > 0
    later = common.cpu_clock()
    assert common.others_cpu(now, later) is None or common.others_cpu(now, later) >= 0


def test_bench_threads_worker_times_one_piece_of_work():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-m", "scripts.bench", "threads", "--worker", "act", "--setting", "2",
                           "--seconds", "0.2"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ms"] > 0 and out["threads"] == "2"


def test_evaluation_games_poll_the_policy_after_every_step():
    """scripts.evaluate and ship hand the policy's poll to agents.evaluation.evaluate."""
    import numpy as np

    import envs
    from agents import dqn
    from agents.evaluation import evaluate
    rng = np.random.default_rng(0)
    agent = dqn.QAgent(dqn.build_q_network((4,), 2, "mlp", 8, True, rng).eval(),
                       envs.env_spec("CartPole-v1", "classic", False), 2, 1.0, eval_epsilon=0.05)
    polls = []
    summary = evaluate(agent, 2, sticky=False, between_steps=lambda: polls.append(1))
    assert len(polls) == sum(summary["returns"]) > 0  # CartPole: one point per step
