"""python -m scripts.bench dqn --vs-torch: the DQN loop of a recipe in numpy and in PyTorch, side by side.

Two loops in one process, each with its own env (same seed) and replay buffer: the project's
(agents.dqn: Acting, the replay buffer, Learner.update) and the same loop with PyTorch networks, as a
CleanRL-style torch DQN writes it: torch.no_grad() for acting and for the targets, the online
network's forward on s, smooth_l1_loss on the taken actions, one backward, clip_grad_norm_, one Adam
step. Env stepping, the replay buffer and the epsilon-greedy draw are the same code in both, so the
comparison is of everything a network touches. Both loops first fill their buffers with random
actions (timed: the warm-up row), then learn one update every train_freq steps at a fixed epsilon.

Chunks of the two loops alternate, at 1 thread and then at 2 (threadpoolctl for OpenBLAS,
torch.set_num_threads for torch), so a busy machine slows both alike. Each part's figure is its
median over the chunks, in ms per update; the ratio is numpy's median chunk time over torch's.
Where the environment pins OpenBLAS's kernel (OPENBLAS_CORETYPE), the whole measurement runs again
with OpenBLAS's own choice for this CPU (--kernel): torch always picks its own.
"""
import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

import envs
from agents import dqn
from agents.replay import final_observations, make_buffer
from agents.run import Stopwatch
from scripts.common import blas_kernel, kernel_runs

PARTS = ("act", "env", "replay_add", "sample", "forward", "backward", "optimizer", "other")

# The two recipes timed by default: CleanRL's dqn_atari as the issue of this benchmark states it
# (Double DQN targets, 1-step, uniform replay, Adam 1e-4, batch 32, an update every 4 steps) and
# the shipped Pong agent's (checkpoints/pong-dqn.md: dueling head and 3-step returns besides).
RECIPES = {
    "cleanrl": dict(double=True, dueling=False, n_step=1, lr=1e-4, batch_size=32, train_freq=4),
    "shipped": dict(double=True, dueling=True, n_step=3, lr=1e-4, batch_size=32, train_freq=4),
}


def recipe_config(name, game, warmup, updates, seed):
    """A resolved dqn.Config of a recipe, its buffer big enough for the whole benchmark."""
    steps = warmup + 4 * updates * RECIPES[name]["train_freq"]
    return dqn.resolved(dqn.Config(game=game, seed=seed, learning_starts=warmup, eval_every=0,
                                   buffer_size=max(2 * steps, 10_000), **RECIPES[name]))


class Loop:
    """One env, its replay buffer and acting; subclasses bring the networks."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.venv = envs.make_vector(cfg.game, cfg.preset, 1, sticky=cfg.sticky, training=False)
        space = self.venv.single_observation_space
        self.obs_shape, self.n_actions = space.shape, int(self.venv.single_action_space.n)
        self.obs_scale = dqn.obs_scale_of(space)
        self.replay = make_buffer(cfg, space.shape, space.dtype, self.rng)
        self.clock = Stopwatch()
        self.acting = dqn.Acting(cfg, self.venv, self.rng, cfg.seed, self.clock)
        self.replay.start(self.acting.obs)
        self.steps = 0

    def chunk(self, steps, eps, learn):
        """steps agent steps at epsilon eps, learning every train_freq steps when learn;
        returns {part: seconds}."""
        self.clock.totals = {}
        self.clock.last = time.perf_counter()
        for _ in range(steps):
            s, _ = self.acting.step(self.actor, eps)
            self.replay.add(s.actions, s.rewards, s.terminal, s.ended, s.next_obs,
                            final_observations(s.info, s.next_obs, s.ended))
            self.clock.mark("replay_add")
            self.steps += 1
            if learn and self.steps % self.cfg.train_freq == 0:
                batch = self.replay.sample(self.cfg.batch_size)
                self.clock.mark("sample")
                self.update(batch)
            if learn and self.steps % self.cfg.target_update == 0:
                self.sync()
            self.clock.mark("other")
        return dict(self.clock.totals)

    def close(self):
        self.venv.close()


class NumpyLoop(Loop):
    name = "numpy"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.learner = dqn.Learner(cfg, self.obs_shape, self.n_actions, self.obs_scale, self.rng)
        self.actor = self.learner.online.eval()

    def update(self, batch):
        self.learner.update(batch, self.clock)

    def sync(self):
        self.learner.sync_target()


def torch_q_network(torch, obs_shape, n_actions, hidden, dueling):
    """Nature's network in torch, with the dueling head (V + A - mean A) when asked."""
    nn = torch.nn
    c, h, w = obs_shape
    trunk = nn.Sequential(nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten())
    for k, s in ((8, 4), (4, 2), (3, 1)):
        h, w = (h - k) // s + 1, (w - k) // s + 1
    features = 64 * h * w
    if not dueling:
        return nn.Sequential(trunk, nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))

    class Dueling(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = trunk
            self.value = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.adv = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))

        def forward(self, x):
            f = self.trunk(x)
            a = self.adv(f)
            return self.value(f) + a - a.mean(dim=1, keepdim=True)
    return Dueling()


class TorchLoop(Loop):
    """The same loop with torch networks, written as CleanRL's dqn_atari.py writes its update."""
    name = "torch"

    def __init__(self, cfg, torch):
        super().__init__(cfg)
        self.torch = torch
        torch.manual_seed(cfg.seed)
        self.online = torch_q_network(torch, self.obs_shape, self.n_actions, cfg.hidden, cfg.dueling)
        self.target = torch_q_network(torch, self.obs_shape, self.n_actions, cfg.hidden, cfg.dueling)
        self.target.load_state_dict(self.online.state_dict())
        self.opt = torch.optim.Adam(self.online.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        loop = self

        class Actor:  # Acting's model: obs already scaled to float32 -> Q (N, A) as numpy
            def forward(self, x):
                with torch.no_grad():
                    return loop.online(torch.from_numpy(x)).numpy()
        self.actor = Actor()

    def update(self, batch):
        torch, cfg = self.torch, self.cfg
        scale = float(self.obs_scale)
        with torch.no_grad():
            x_next = torch.from_numpy(batch.next_obs).float() * scale  # (B, C, H, W)
            q_next = self.target(x_next)  # (B, A)
            best = self.online(x_next).argmax(dim=1) if cfg.double else q_next.argmax(dim=1)
            bootstrap = q_next.gather(1, best[:, None]).squeeze(1)  # (B,)
            y = torch.from_numpy(batch.returns) + torch.from_numpy(batch.discounts) * bootstrap
        q = self.online(torch.from_numpy(batch.obs).float() * scale)  # (B, A)
        q_taken = q.gather(1, torch.from_numpy(batch.actions)[:, None]).squeeze(1)  # (B,)
        loss = torch.nn.functional.smooth_l1_loss(q_taken, y)  # Huber, delta 1
        self.clock.mark("forward")
        self.opt.zero_grad()
        loss.backward()
        self.clock.mark("backward")
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.online.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.clock.mark("optimizer")

    def sync(self):
        self.target.load_state_dict(self.online.state_dict())


def per_update(chunks, updates_per_chunk):
    """Median ms per update of each part and of the whole chunk."""
    out = {part: round(1e3 * float(np.median([c.get(part, 0.0) for c in chunks])) / updates_per_chunk, 3)
           for part in PARTS}
    out["total"] = round(1e3 * float(np.median([sum(c.values()) for c in chunks])) / updates_per_chunk, 3)
    return out


def time_recipe(name, args, torch):
    """Warm-up and learning chunks of both loops, alternating, at each thread count -> result dict."""
    cfg = recipe_config(name, args.game, args.warmup, args.updates, args.seed)
    loops = [NumpyLoop(cfg), TorchLoop(cfg, torch)]
    per_chunk = max(1, args.chunk)  # updates per chunk
    result = {"recipe": name, "train_freq": cfg.train_freq, "double": cfg.double, "dueling": cfg.dueling,
              "n_step": cfg.n_step, "epsilon": args.epsilon, "updates": args.updates, "threads": {}}
    try:
        with threadpool_limits(1, user_api="blas"):
            torch.set_num_threads(1)
            warm = {loop.name: [] for loop in loops}
            for k, start in enumerate(range(0, cfg.learning_starts, 250)):  # epsilon 1 until learning starts
                for loop in loops[::1 - 2 * (k % 2)]:  # who goes first alternates: no order bias
                    n = min(250, cfg.learning_starts - start)
                    warm[loop.name].append(n / sum(loop.chunk(n, 1.0, learn=False).values()))
            result["warmup_steps_per_s"] = {k: round(float(np.median(v)), 1) for k, v in warm.items()}
        for threads in args.threads:
            with threadpool_limits(threads, user_api="blas"):
                torch.set_num_threads(threads)
                chunks = {loop.name: [] for loop in loops}
                for loop in loops:  # one untimed chunk each: buffers and thread pools in place
                    loop.chunk(per_chunk * cfg.train_freq, args.epsilon, learn=True)
                for k in range(max(1, args.updates // per_chunk)):
                    for loop in loops[::1 - 2 * (k % 2)]:
                        chunks[loop.name].append(loop.chunk(per_chunk * cfg.train_freq, args.epsilon, learn=True))
            parts = {k: per_update(v, per_chunk) for k, v in chunks.items()}
            learn = {k: sum(p[x] for x in ("forward", "backward", "optimizer")) for k, p in parts.items()}
            result["threads"][threads] = {
                "ms_per_update": parts,
                "ratio": round(parts["numpy"]["total"] / parts["torch"]["total"], 3),
                "ratio_update_only": round(learn["numpy"] / learn["torch"], 3)}
    finally:
        for loop in loops:
            loop.close()
    return result


def print_result(r):
    w = r["warmup_steps_per_s"]
    print(f"\nrecipe {r['recipe']}: double {r['double']}, dueling {r['dueling']}, {r['n_step']}-step; "
          f"learning at epsilon {r['epsilon']}")
    print(f"  warm-up (random actions, 1 thread): numpy {w['numpy']:,.0f} steps/s, torch {w['torch']:,.0f} steps/s")
    for threads, t in r["threads"].items():
        print(f"  {threads} thread{'s' if threads > 1 else ''}: ms per update (= {r['train_freq']} agent steps)")
        print(f"    {'part':<12}{'numpy':>9}{'torch':>9}")
        for part in PARTS + ("total",):
            print(f"    {part:<12}{t['ms_per_update']['numpy'][part]:>9.2f}{t['ms_per_update']['torch'][part]:>9.2f}")
        print(f"    numpy/torch: whole loop {t['ratio']:.2f}, forward+backward+optimizer {t['ratio_update_only']:.2f}")


def main(args):
    """Run --recipe (or both) at each --kernel and print the parts, the ratios and one JSON line per
    recipe and kernel."""
    try:
        import torch
    except ImportError:
        print("bench dqn --vs-torch needs PyTorch (pip install torch, CPU build); it is used only here")
        return 2
    names = list(RECIPES) if args.recipe == "both" else [args.recipe]

    def run():
        blas = blas_kernel()
        print(f"DQN loop, numpy against PyTorch {torch.__version__} on {args.game}: {args.warmup} warm-up steps, then "
              f"{args.updates} updates per thread count in chunks of {args.chunk}; OpenBLAS kernel {blas['kernel']}; "
              f"load average {os.getloadavg()[0]:.1f} at start (trust the ratios, not the times)")
        results = []
        for name in names:
            r = {"bench": "dqn-vs-torch", **time_recipe(name, args, torch), "blas": blas}
            print_result(r)
            print(json.dumps(r), flush=True)
            results.append(r)
        return results

    def summary(r):
        return f"{r['recipe']} numpy/torch " + ", ".join(
            f"{t['ratio']:.2f} at {threads} thread{'s' if int(threads) > 1 else ''}" for threads, t in r["threads"].items())
    return kernel_runs(args, run, summary)
