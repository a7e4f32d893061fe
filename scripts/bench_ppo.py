"""python -m scripts.bench ppo: PPO's real rollout + update loop, its envs alone, and PyTorch beside it.

Three measurements in one run, on the same vector env settings: (1) the envs alone, random actions;
(2) agents.ppo.train for --rounds rounds after one warm-up round (its seconds per part come from its
metrics: agents.ppo.PARTS); (3) where torch is importable, the same loop written with torch (same network
shape, rollout length, epochs, minibatches, Adam, gradient clipping; GAE is the project's numpy
function in both), with as many torch threads as numpy has BLAS threads (--blas-threads), timed by
the same parts. A table gives each part's milliseconds per training step side by side with their
ratio; the last row is the numpy/torch time ratio per training step (below 1: numpy is faster).
Trust ratios, not seconds.
Where the environment pins OpenBLAS's kernel (OPENBLAS_CORETYPE), it all runs again with OpenBLAS's
own choice for this CPU (--kernel).
"""
import importlib.util
import json
import math
import os
import tempfile
import time
import warnings

import numpy as np

import envs
from agents import ppo
from agents.run import Run, Stopwatch, config_dict
from scripts.common import (UsageError, add_blas_threads_flag, add_kernel_flag, blas_kernel, blas_threads, fail,
                            kernel_runs, seed_value)


def add_arguments(parser):
    parser.add_argument("--game", default="pong", help="game (default pong; CartPole-v1 times the MLP)")
    parser.add_argument("--network", default="auto", help="nature, small or mlp (default: the agent's own)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds timed after a warm-up round (default 4)")
    parser.add_argument("--num-envs", type=int, default=8, help="envs stepped together (default 8)")
    parser.add_argument("--num-steps", type=int, default=128, help="steps per env in a rollout (default 128)")
    parser.add_argument("--epochs", type=int, default=ppo.Config.epochs,
                        help=f"passes over each rollout (default {ppo.Config.epochs}, the agent's)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop")
    parser.add_argument("--seed", type=seed_value, default=0)
    add_blas_threads_flag(parser, "auto, decided once at the start; torch gets as many threads")
    add_kernel_flag(parser)


def make_config(args):
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    per_round = args.num_envs * args.num_steps
    return ppo.resolved(ppo.Config(game=args.game, network=args.network, num_envs=args.num_envs,
                                   num_steps=args.num_steps, epochs=args.epochs, seed=args.seed,
                                   total_steps=per_round * (args.rounds + 1), checkpoint_minutes=1e6))


def env_steps_per_second(cfg, seconds=3.0):
    venv = envs.make_vector(cfg.game, cfg.preset, cfg.num_envs, sticky=cfg.sticky, training=False)
    rng = np.random.default_rng(0)
    venv.reset(seed=0)
    n = int(venv.single_action_space.n)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(rng.integers(n, size=cfg.num_envs))
        steps += cfg.num_envs
    rate = steps / (time.perf_counter() - start)
    venv.close()
    return rate


PARTS = ppo.PARTS  # where a training step's time goes, as agents.ppo.train logs it


def per_step(rounds, cfg):
    """[{part: seconds} per round] -> (seconds per training step, {part: seconds per step})."""
    steps = len(rounds) * cfg.num_envs * cfg.num_steps
    parts = {part: sum(r.get(part, 0.0) for r in rounds) / steps for part in PARTS}
    return sum(parts.values()), parts


def numpy_loop(cfg):
    """per_step() of agents.ppo.train's rounds, the warm-up round left out."""
    rows = []
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a curve with no finished games
        run = Run(os.path.join(folder, "run"), config_dict(cfg), {}, cfg.checkpoint_minutes, message=lambda t: None)
        ppo.train(cfg, run, callback=lambda m: rows.append(m["seconds"]) if m["event"] == "update" else None)
    return per_step(rows[1:], cfg)


def torch_network(torch, obs_shape, n_actions, network, hidden):
    nn = torch.nn
    if network == "mlp":
        d = int(np.prod(obs_shape))

        class Towers(nn.Module):
            def __init__(self):
                super().__init__()
                self.actor = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                           nn.Linear(hidden, n_actions))
                self.critic = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                            nn.Linear(hidden, 1))

            def forward(self, x):
                return torch.cat([self.actor(x), self.critic(x)], dim=1)
        return Towers()
    c, h, w = obs_shape
    convs = ((32, 8, 4), (64, 4, 2), (64, 3, 1)) if network == "nature" else ((16, 8, 4), (32, 4, 2))
    layers = []
    for out, k, s in convs:
        layers += [nn.Conv2d(c, out, k, stride=s), nn.ReLU()]
        c, h, w = out, (h - k) // s + 1, (w - k) // s + 1
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, n_actions + 1)]
    return nn.Sequential(*layers)


def torch_loop(cfg, rounds, threads):
    """The same rollout + update in PyTorch; per_step() of its rounds after a warm-up one."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    venv = envs.make_vector(cfg.game, cfg.preset, cfg.num_envs, sticky=cfg.sticky, training=False)
    space = venv.single_observation_space
    scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
    n_actions = int(venv.single_action_space.n)
    net = torch_network(torch, space.shape, n_actions, cfg.network, cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    T, N = cfg.num_steps, cfg.num_envs
    obs, _ = venv.reset(seed=cfg.seed)
    buf_obs = np.zeros((T, N, *space.shape), space.dtype)
    actions, logp, values, rewards, dones = (np.zeros((T, N), d) for d in (np.int64, np.float32, np.float32,
                                                                          np.float32, np.float32))
    times = []
    for _ in range(rounds + 1):
        clock = Stopwatch()
        with torch.no_grad():
            for t in range(T):
                out = net(torch.from_numpy(np.asarray(obs, np.float32) * np.float32(scale)))
                dist = torch.distributions.Categorical(logits=out[:, :-1])
                a = dist.sample()
                buf_obs[t], actions[t], logp[t], values[t] = obs, a.numpy(), dist.log_prob(a).numpy(), out[:, -1].numpy()
                clock.mark("act")
                obs, r, term, trunc, _ = venv.step(a.numpy())
                clock.mark("env")
                rewards[t], dones[t] = np.sign(r), term | trunc
                clock.mark("other")
            last = net(torch.from_numpy(np.asarray(obs, np.float32) * np.float32(scale)))[:, -1].numpy()
            clock.mark("act")
        next_values = np.concatenate([values[1:], last[None]])
        adv, returns = ppo.gae(rewards, values, next_values, dones, dones, cfg.gamma, cfg.gae_lambda)
        n = T * N
        b_obs = torch.from_numpy(buf_obs.reshape(n, *space.shape))
        b = [torch.from_numpy(x.reshape(n)) for x in (actions, logp, adv, returns, values)]
        size = n // cfg.minibatches
        clock.mark("other")
        for _ in range(cfg.epochs):
            order = torch.randperm(n)
            for s in range(0, n, size):
                idx = order[s:s + size]
                out = net(b_obs[idx].float() * scale)
                dist = torch.distributions.Categorical(logits=out[:, :-1])
                new_logp = dist.log_prob(b[0][idx])
                ratio = (new_logp - b[1][idx]).exp()
                mb_adv = (b[2][idx] - b[2][idx].mean()) / (b[2][idx].std() + 1e-8)
                pg = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
                v = out[:, -1]
                v_clip = b[4][idx] + (v - b[4][idx]).clamp(-cfg.clip, cfg.clip)
                v_loss = 0.5 * torch.max((v - b[3][idx]) ** 2, (v_clip - b[3][idx]) ** 2).mean()
                loss = pg - cfg.ent_coef * dist.entropy().mean() + cfg.vf_coef * v_loss
                clock.mark("forward")
                opt.zero_grad()
                loss.backward()
                clock.mark("backward")
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                opt.step()
                clock.mark("optimizer")
            clock.mark("other")
        times.append(clock.totals)
    venv.close()
    return per_step(times[1:], cfg)


def main(args):
    try:
        cfg = make_config(args)
    except ValueError as e:
        fail(str(e).splitlines()[0])
    def run():
        try:
            with blas_threads(args.blas_threads) as policy:  # decided once: the two loops run at the same count
                return [compare(cfg, args, policy.threads)]
        except UsageError as e:
            fail(str(e))

    def summary(r):
        ratio = r["numpy_over_torch"]
        threads = f"{r['threads']} BLAS thread{'s' if r['threads'] > 1 else ''}"
        return f"numpy/torch {ratio:.2f} at {threads}" if ratio else f"numpy alone at {threads}: no PyTorch run"
    return kernel_runs(args, run, summary)


def compare(cfg, args, threads):
    """The three measurements at `threads` BLAS (and torch) threads; prints the rows and the JSON line,
    and returns its dict."""
    blas = blas_kernel()
    print(f"PPO on {cfg.game} ({cfg.network} network, {cfg.num_envs} envs x {cfg.num_steps} steps, {cfg.epochs} "
          f"epochs of {cfg.minibatches} minibatches), {args.rounds} rounds timed; BLAS threads {threads}, "
          f"OpenBLAS kernel {blas['kernel']}")
    rows = [{"name": "envs alone, random actions", "steps_per_s": round(env_steps_per_second(cfg), 1)}]
    loops = {"numpy": numpy_loop(cfg)}
    if not args.no_torch:
        if importlib.util.find_spec("torch") is None:  # optional: only this comparison needs it
            print("  (torch is not installed: no PyTorch comparison)")
        else:
            loops["torch"] = torch_loop(cfg, args.rounds, threads)
    for name, (total, parts) in loops.items():
        rows.append({"name": f"{'numpy' if name == 'numpy' else 'PyTorch'} PPO training",
                     "steps_per_s": round(1 / total, 1),
                     "rollout_ms_per_step": round(1e3 * sum(parts[p] for p in PARTS[:3]), 3),
                     "update_ms_per_step": round(1e3 * sum(parts[p] for p in PARTS[3:]), 3),
                     "ms_per_step": {p: round(1e3 * parts[p], 3) for p in PARTS}})
    for row in rows:
        extra = ""
        if "rollout_ms_per_step" in row:
            extra = f"   rollout {row['rollout_ms_per_step']:.3f} ms/step, update {row['update_ms_per_step']:.3f} ms/step"
        print(f"  {row['name']:<28} {row['steps_per_s']:>9,.1f} steps/s{extra}")
    names = list(loops)
    print("  ms per training step   " + "".join(f"{n:>9}" for n in names) + ("   numpy/torch" if len(names) > 1 else ""))
    for part in PARTS + ("total",):
        ms = [1e3 * (loops[n][0] if part == "total" else loops[n][1][part]) for n in names]
        ratio = f"   {ms[0] / ms[1]:11.2f}" if len(ms) > 1 and ms[1] > 0 else ""
        print(f"    {part:<20}" + "".join(f"{v:9.3f}" for v in ms) + ratio)
    ratio = None
    if "torch" in loops:
        ratio = round(loops["numpy"][0] / loops["torch"][0], 3)
        print(f"  numpy/torch time per training step: {ratio:.2f}")
    result = {"bench": "ppo", "game": cfg.game, "network": cfg.network, "threads": threads, "rows": rows,
              "numpy_over_torch": ratio if ratio is None or math.isfinite(ratio) else None, "blas": blas}
    print(json.dumps(result), flush=True)
    return result
