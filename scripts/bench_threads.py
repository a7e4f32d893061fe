"""python -m scripts.bench threads: the default BLAS thread policy against 1 and 2 threads, on the
machine as it is and with a CPU-burning process beside it.

Two pieces of work, each timed in a fresh process (the default policy looks at the machine when a
command starts, as scripts.common.blas_threads does), polling the policy after every call as the
commands do: a DQN update (the shipped agent's recipe, batch 32, as scripts.train runs it) and a
batch-1 act (what evaluate and ship do every step). Both commands default to auto. Settings: the command's
default, 1 thread, 2 threads, and 2 threads with OPENBLAS_THREAD_TIMEOUT=4 (OpenBLAS's idle
threads sleep after 2^4 cycles instead of spinning). Rounds alternate the settings; each figure is
the median over rounds of a run's median time. Ratios are against 1 thread in the same condition.
The burner is a busy-loop process this benchmark starts and stops itself.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from scripts.common import fail, finite_float

WORKLOADS = {"update": "auto", "act": "auto"}  # workload -> the default of the commands that do it
SETTINGS = ("default", "1", "2", "2 timeout")


def add_arguments(parser):
    parser.add_argument("--seconds", type=finite_float, default=3.0, help="seconds each timed process runs (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all settings per condition (default 3)")
    parser.add_argument("--no-burner", action="store_true", help="only the machine as it is")
    parser.add_argument("--worker", choices=list(WORKLOADS), help=argparse.SUPPRESS)  # one timed process
    parser.add_argument("--setting", choices=SETTINGS, default="default", help=argparse.SUPPRESS)


# ----------------------------------------------------------------------------- one timed process

def run_worker(workload, setting, seconds):
    """In the worker process: time `workload` under `setting` for `seconds`; print one JSON line."""
    from agents import dqn
    from agents.replay import Batch
    from scripts.common import blas_threads
    flag = None if setting == "default" else int(setting.split()[0])
    with blas_threads(flag, default=WORKLOADS[workload]) as policy:
        rng = np.random.default_rng(0)
        if workload == "update":
            cfg = dqn.resolved(dqn.Config(game="pong", learning_starts=1000, buffer_size=10_000))
            learner = dqn.Learner(cfg, (4, 84, 84), 6, 1 / 255, rng)
            b = 32
            batch = Batch(rng.integers(0, 255, (b, 4, 84, 84), dtype=np.uint8), rng.integers(0, 6, b),
                          rng.random(b, dtype=np.float32), np.full(b, 0.99, np.float32),
                          rng.integers(0, 255, (b, 4, 84, 84), dtype=np.uint8))
            work = lambda: learner.update(batch)  # noqa: E731
        else:
            model = dqn.build_q_network((4, 84, 84), 6, "nature", 512, True, rng).eval()
            agent = dqn.QAgent(model, {}, 6, 1 / 255, eval_epsilon=0.05)
            obs = rng.integers(0, 255, (1, 4, 84, 84), dtype=np.uint8)
            work = lambda: agent.act(obs, explore=False)  # noqa: E731
        work()
        times, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
            policy.poll()  # as scripts.train's loop polls at every turn
        print(json.dumps({"ms": 1e3 * float(np.median(times)), "threads": policy.describe(),
                          "others": None if policy.others is None else round(policy.others, 2)}))


def timed(workload, setting, seconds):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT")}
    if setting == "2 timeout":
        env["OPENBLAS_THREAD_TIMEOUT"] = "4"  # read when OpenBLAS loads: a fresh process is needed
    proc = subprocess.run([sys.executable, "-m", "scripts.bench", "threads", "--worker", workload,
                           "--setting", setting, "--seconds", str(seconds)],
                          capture_output=True, text=True, env=env, timeout=600 + 20 * seconds)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {workload} {setting} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the table

BURNER = """
import os
parent = os.getppid()
while os.getppid() == parent:  # ends by itself when the benchmark that started it is gone
    for _ in range(100_000):
        pass
"""


def start_burner():
    """A process that keeps one core busy until stopped (stop_burner) or its parent ends."""
    return subprocess.Popen([sys.executable, "-c", BURNER])


def stop_burner(proc):
    proc.kill()
    proc.wait()


def measure(condition, args):
    """{workload: {setting: (median ms, what the default chose)}} for one condition."""
    samples = {w: {s: [] for s in SETTINGS} for w in WORKLOADS}
    chosen = {w: [] for w in WORKLOADS}
    for r in range(args.rounds):
        order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
        for setting in order:
            for workload in WORKLOADS:
                out = timed(workload, setting, args.seconds)
                samples[workload][setting].append(out["ms"])
                if setting == "default":
                    chosen[workload].append(out["threads"])
    result = {}
    for w in WORKLOADS:
        med = {s: float(np.median(v)) for s, v in samples[w].items()}
        result[w] = {"ms": {s: round(m, 3) for s, m in med.items()},
                     "over_1_thread": {s: round(m / med["1"], 2) for s, m in med.items()},
                     "default_chose": chosen[w]}
    return {"condition": condition, "load_average": round(os.getloadavg()[0], 2), **result}


def main(args):
    if args.worker:
        run_worker(args.worker, args.setting, args.seconds)
        return 0
    if args.seconds <= 0 or args.rounds < 1:
        fail(f"--seconds must be > 0 and --rounds >= 1, got {args.seconds:g} and {args.rounds}")
    print(f"BLAS threads: default against 1 and 2, {args.rounds} rounds of {args.seconds:g} s per setting; "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start")
    results = [measure("as it is", args)]
    if not args.no_burner:
        burner = start_burner()
        try:
            time.sleep(1.0)
            results.append(measure("with a burner", args))
        finally:
            stop_burner(burner)
    for res in results:
        print(f"\n{res['condition']} (load average {res['load_average']:.1f}): ms per call, and over 1 thread")
        print(f"  {'work':<8}" + "".join(f"{s:>13}" for s in SETTINGS) + "   default chose")
        for w in WORKLOADS:
            r = res[w]
            cells = "".join(f"{r['ms'][s]:>7.2f} {r['over_1_thread'][s]:>4.2f}x" for s in SETTINGS)
            print(f"  {w:<8}{cells}   {', '.join(r['default_chose'])}")
        print(json.dumps({"bench": "threads", **res}))
    return 0
