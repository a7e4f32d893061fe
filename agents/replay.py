"""Experience replay that stores every Atari frame once and rebuilds the frame stacks when it samples.

Layout: one circular buffer per env, `slots` long, so each env's steps sit in order and a frame
stack is just the slots before one. A slot holds the newest frame of one observation (obs[-1] of a
(4, 84, 84) stack: 7 KB, an eighth of storing obs and next_obs as stacks) and, once the env has
stepped from it, the transition taken there: action, reward, and two flags kept apart (SB3's
handle_timeout_termination, CleanRL's real_next_obs): `terminal`, no bootstrap (the game ended, or a
life was lost when that counts as terminal); `end`, the env's episode ended and the env reset: the
next slot holds the episode's final frame (info["final_obs"]), then the new episode's first. A
truncated episode (time limit) is end without terminal: it bootstraps from that final frame.

Stacks never reach across an episode start: frames before a slot flagged `first` are zeros, exactly
as the env pads an episode's first observations, so a rebuilt stack equals what the agent saw
(tests/test_replay.py checks it against a real AtariVectorEnv). Observations that are not frame
stacks (CartPole's 4 floats) use the same code with stack=1.
"""
import json
import os
from typing import NamedTuple, Optional

import numpy as np

from agents.sumtree import SumTree
from envs.atari import frame_stack
from nets.npzfile import HEADER_KEY, write_npz

FORMAT = "grok-arcade.replay"
FORMAT_VERSION = 1
CHUNK_SLOTS = 100_000  # slots per saved frames array: 700 MB of 84x84 frames, under npzfile's 4 GiB cap


class Batch(NamedTuple):
    obs: np.ndarray  # (B, *obs_shape) in the env's dtype (uint8 frame stacks)
    actions: np.ndarray  # (B,) int64
    returns: np.ndarray  # (B,) float32: the n-step discounted reward sum
    discounts: np.ndarray  # (B,) float32: gamma^m, or 0 when the return ended in a terminal
    next_obs: np.ndarray  # (B, *obs_shape): the observation to bootstrap from
    weights: Optional[np.ndarray] = None  # (B,) float32 importance weights (prioritized replay only)
    index: Optional[np.ndarray] = None  # (B,) int64 slots sampled, env * slots + slot (prioritized only)


def slots_per_env(capacity, num_envs, stack, n_step):
    """The slots of each env's circular buffer; ValueError when they cannot hold a stack and an n-step return."""
    slots = int(capacity) // int(num_envs)
    if slots < stack + n_step + 1:
        raise ValueError(f"capacity {capacity} over {num_envs} envs leaves {slots} slots each; "
                         f"need more than stack + n_step = {stack + n_step}")
    return slots


class ReplayBuffer:
    """capacity slots split evenly over num_envs circular buffers.

    start(obs) once after every venv.reset(); add(...) after every venv.step(...); sample(B);
    with prioritized=True, update_priorities(batch.index, td_errors) after learning from a batch.

    Prioritized replay (Schaul et al. 2016): each slot has a priority in a sum tree (agents/sumtree.py),
    and sample() draws transition i with probability p_i / sum p, stratified as Schaul's paper does (one
    draw from each of B equal slices of the total). A new transition gets the largest priority seen so
    far, so it is replayed at least once soon; update_priorities() then sets p_i = (|TD error| + eps) **
    alpha. Slots without a transition (a final frame, a slot being written) have priority 0; the few
    drawn slots whose n-step future or stack frames are not stored (the newest and oldest of each env)
    are drawn again. The batch carries importance weights (N p_i) ** -beta divided by the batch's
    largest, which the learner multiplies into the loss."""

    def __init__(self, capacity, obs_shape, obs_dtype=np.uint8, num_envs=1, stack=1, n_step=1,
                 gamma=0.99, rng=None, prioritized=False, alpha=0.5, priority_eps=1e-6):
        obs_shape = tuple(int(d) for d in obs_shape)
        if stack > 1 and obs_shape[0] != stack:
            raise ValueError(f"stack={stack} needs observations of shape ({stack}, ...), got {obs_shape}")
        self.slots = slots_per_env(capacity, num_envs, stack, n_step)
        if n_step < 1 or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"n_step must be >= 1 and gamma in [0, 1], got {n_step}, {gamma}")
        self.obs_shape, self.obs_dtype = obs_shape, np.dtype(obs_dtype)
        self.frame_shape = obs_shape[1:] if stack > 1 else obs_shape
        self.num_envs, self.stack, self.n_step, self.gamma = int(num_envs), int(stack), int(n_step), float(gamma)
        self.rng = rng if rng is not None else np.random.default_rng()
        shape = (self.num_envs, self.slots)
        # np.zeros maps pages lazily: 1M frames take their 7 GB only as they are written
        self.frames = np.zeros(shape + self.frame_shape, self.obs_dtype)  # (E, S, *frame)
        self.actions = np.zeros(shape, np.int32)
        self.rewards = np.zeros(shape, np.float32)
        self.terminal = np.zeros(shape, bool)
        self.end = np.zeros(shape, bool)
        self.first = np.zeros(shape, bool)
        self.has_transition = np.zeros(shape, bool)
        self.pos = np.zeros(self.num_envs, np.int64)  # next slot to write, per env
        self.count = np.zeros(self.num_envs, np.int64)  # slots written, at most self.slots
        self._outputs = {}
        self.prioritized, self.alpha, self.priority_eps = bool(prioritized), float(alpha), float(priority_eps)
        if self.prioritized and not (0.0 <= self.alpha <= 1.0 and self.priority_eps > 0):
            raise ValueError(f"prioritized replay needs alpha in [0, 1] and eps > 0, got {alpha}, {priority_eps}")
        self.tree = SumTree(self.num_envs * self.slots) if self.prioritized else None
        self.max_priority = 1.0  # what a new transition gets: the largest priority so far

    def empty_like(self):
        """A new, empty buffer with every setting of this one (its rng shared)."""
        return ReplayBuffer(self.slots * self.num_envs, self.obs_shape, self.obs_dtype, self.num_envs, self.stack,
                            self.n_step, self.gamma, self.rng, self.prioritized, self.alpha, self.priority_eps)

    # ------------------------------------------------------------------ writing
    def __len__(self):
        """Transitions stored (an upper bound on what can be sampled)."""
        return int(self.has_transition.sum())

    def _frame(self, obs):
        return obs[-1] if self.stack > 1 else obs

    def _write(self, e, obs, first):
        s = self.pos[e]
        self.frames[e, s] = self._frame(obs)
        self.first[e, s] = first
        self.has_transition[e, s] = self.terminal[e, s] = self.end[e, s] = False
        self.rewards[e, s] = 0.0
        if self.tree is not None:
            self.tree.set(e * self.slots + s, 0.0)
        self.pos[e] = (s + 1) % self.slots
        self.count[e] = min(self.count[e] + 1, self.slots)

    def start(self, obs):
        """First observations (E, *obs_shape) after a reset. If an env's last episode was cut off
        (a resumed run resets its envs), its last transition is marked truncated: it bootstraps
        from the frame it led to, and no n-step return runs into the new episode."""
        for e in range(self.num_envs):
            last = (self.pos[e] - 2) % self.slots
            if self.count[e] >= 2 and self.has_transition[e, last]:
                self.end[e, last] = True
            self._write(e, obs[e], first=True)

    def add(self, actions, rewards, terminal, ended, next_obs, final_obs=None):
        """One vector step: actions, rewards (as the learner wants them, e.g. clipped), terminal (no
        bootstrap), ended (the env reset: terminated or truncated), next_obs from venv.step (for
        an ended env, the new episode's first observation) and final_obs (the ended episodes'
        last observations; rows of envs that did not end are ignored). All (E, ...)."""
        for e in range(self.num_envs):
            s = (self.pos[e] - 1) % self.slots
            self.actions[e, s] = actions[e]
            self.rewards[e, s] = rewards[e]
            self.terminal[e, s] = terminal[e]
            self.end[e, s] = ended[e]
            self.has_transition[e, s] = True
            if self.tree is not None:
                self.tree.set(e * self.slots + s, self.max_priority)
            if ended[e]:
                if final_obs is None:
                    raise ValueError("an episode ended but add() got no final_obs")
                self._write(e, final_obs[e], first=False)
                self._write(e, next_obs[e], first=True)
            else:
                self._write(e, next_obs[e], first=False)

    # ------------------------------------------------------------------ reading
    def _out(self, name, shape):
        """An output array reused across calls: a fresh 1 MB batch costs more in page faults than
        the gather itself (measured 2 ms against 0.3 ms)."""
        a = self._outputs.get(name)
        if a is None or a.shape != shape:
            a = self._outputs[name] = np.empty(shape, self.obs_dtype)
        return a

    def stacks(self, env, slot, name="obs"):
        """Observations ending at the given slots, rebuilt: env, slot (B,) -> (B, *obs_shape), in an
        array that the next call with the same name overwrites."""
        frames = self.frames.reshape((-1,) + self.frame_shape)  # (E*S, *frame): one flat index per slot
        if self.stack == 1:
            return np.take(frames, env * self.slots + slot, axis=0, out=self._out(name, (len(slot),) + self.obs_shape))
        back = np.arange(self.stack - 1, -1, -1)  # (K,): 3, 2, 1, 0 slots back
        idx = (slot[:, None] - back) % self.slots  # (B, K), oldest first
        out = self._out(name, (len(slot),) + self.obs_shape)  # (B, K, H, W)
        np.take(frames, env[:, None] * self.slots + idx, axis=0, out=out)
        # frame j (j slots back) is visible unless an episode starts at one of the j newer slots
        firsts = self.first[env[:, None], idx]  # (B, K)
        starts_after = np.cumsum(firsts[:, ::-1], axis=1)[:, ::-1] - firsts  # (B, K): starts among newer slots
        out[starts_after > 0] = 0
        return out

    def n_step_returns(self, env, slot):
        """-> returns (B,), discounts (B,), bootstrap slots (B,) for transitions at (env, slot)."""
        b = len(slot)
        returns = np.zeros(b, np.float32)
        steps = np.zeros(b, np.int64)
        alive = np.ones(b, bool)
        cut_by_terminal = np.zeros(b, bool)
        for k in range(self.n_step):
            s = (slot + k) % self.slots
            returns += alive * (self.gamma ** k) * self.rewards[env, s]
            steps += alive
            cut_by_terminal |= alive & self.terminal[env, s]
            alive &= ~(self.terminal[env, s] | self.end[env, s])
        discounts = np.where(cut_by_terminal, 0.0, self.gamma ** steps).astype(np.float32)
        return returns, discounts, (slot + steps) % self.slots

    def sampleable(self):
        """Transitions whose n-step future and earlier stack frames are all still stored."""
        return int(np.sum(np.maximum(self.count - self.stack - self.n_step + 1, 0)))

    def sample(self, batch_size, beta=0.4):
        """A batch of transitions as a Batch of arrays: uniform, or by priority with importance
        weights (N p_i) ** -beta when prioritized. Its obs and next_obs arrays are reused by the
        next sample(): use them (or copy them) before sampling again.

        n-step returns: G = r_t + g r_{t+1} + ... + g^{m-1} r_{t+m-1}, m <= n, stopping after the first
        terminal or end; the bootstrap is from the observation at slot t+m, discounted by g^m, or
        nothing when the stop was terminal. The batch holds that discount, so the learner's target is
        returns + discounts * max_a Q(next_obs, a)."""
        low = self.n_step  # age 0 is the newest slot, the one the env is at now
        high = self.count - self.stack  # older slots may lack the frames of their stack
        if np.any(high < low):
            raise ValueError(f"replay buffer too small to sample: {self.count.tolist()} slots per env, "
                             f"need more than {self.stack + self.n_step}")
        if self.tree is not None:
            return self._sample_prioritized(batch_size, beta, low, high)
        env = self.rng.integers(self.num_envs, size=batch_size)
        slot = np.zeros(batch_size, np.int64)
        todo = np.arange(batch_size)
        while len(todo):  # redraw the few picks that land on a final-frame slot
            age = self.rng.integers(low, high[env[todo]] + 1)
            slot[todo] = (self.pos[env[todo]] - 1 - age) % self.slots
            todo = todo[~self.has_transition[env[todo], slot[todo]]]
        return self._batch(env, slot)

    def _batch(self, env, slot, weights=None):
        returns, discounts, next_slot = self.n_step_returns(env, slot)
        index = None if weights is None else env * self.slots + slot
        return Batch(self.stacks(env, slot), self.actions[env, slot].astype(np.int64), returns, discounts,
                     self.stacks(env, next_slot, "next_obs"), weights, index)

    def _sample_prioritized(self, batch_size, beta, low, high):
        total = self.tree.total
        if not total > 0:
            raise ValueError("prioritized replay holds no transition with a priority above 0")
        u = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)  # (B,) one per slice
        index = self.tree.find(u)  # (B,)
        for _ in range(100):  # redraw picks too new for their n-step future or too old for their stack
            env, slot = np.divmod(index, self.slots)
            age = (self.pos[env] - 1 - slot) % self.slots
            bad = np.flatnonzero((age < low) | (age > high[env]) | ~self.has_transition[env, slot])
            if not len(bad):
                break
            index[bad] = self.tree.find(self.rng.random(len(bad)) * total)
        else:
            raise ValueError("prioritized replay: no sampleable transition found in 100 draws")
        probs = self.tree.get(index) / total  # (B,)
        weights = (self.sampleable() * probs) ** -float(beta)
        return self._batch(env, slot, (weights / weights.max()).astype(np.float32))

    def update_priorities(self, index, td_errors):
        """After learning from a prioritized batch: p = (|TD error| + eps) ** alpha for its slots."""
        if self.tree is None:
            raise ValueError("update_priorities needs a buffer made with prioritized=True")
        p = (np.abs(np.asarray(td_errors, np.float64)) + self.priority_eps) ** self.alpha  # (B,)
        if not np.all(np.isfinite(p)):
            raise ValueError("update_priorities got TD errors that are not finite")
        env, slot = np.divmod(np.asarray(index, np.int64), self.slots)
        p = np.where(self.has_transition[env, slot], p, 0.0)  # a slot rewritten since is left at 0
        self.tree.set(index, p)
        self.max_priority = max(self.max_priority, float(p.max()))

    # ------------------------------------------------------------------ saving
    def state(self):
        """(arrays, header) for nets.npzfile.write_npz; frames in chunks under the file format's cap."""
        used = int(self.count.max())
        arrays = {name: getattr(self, name)[:, :used] for name in
                  ("actions", "rewards", "terminal", "end", "first", "has_transition")}
        arrays.update(pos=self.pos, count=self.count)
        if self.tree is not None:
            arrays["priorities"] = self.tree.leaves().reshape(self.num_envs, self.slots)[:, :used]
        for k, lo in enumerate(range(0, used, CHUNK_SLOTS)):
            arrays[f"frames.{k}"] = self.frames[:, lo:lo + CHUNK_SLOTS]
        header = {"format": FORMAT, "version": FORMAT_VERSION, "slots": self.slots, "used": used,
                  "num_envs": self.num_envs, "obs_shape": list(self.obs_shape),
                  "dtype": self.obs_dtype.str, "stack": self.stack}
        if self.tree is not None:
            header["max_priority"] = self.max_priority
        return arrays, header

    def save(self, path, step):
        """Write the buffer to path (.npz, atomically) with the agent step it belongs to."""
        arrays, header = self.state()
        write_npz(path, arrays, {**header, "step": int(step)})

    def load(self, path):
        """Fill this buffer from a file written from state(). One array is read at a time (np.load
        is lazy), so loading needs the buffer's memory plus one chunk. ValueError if it does not fit."""
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(z[HEADER_KEY].tobytes().decode("utf-8"))
            want = {"format": FORMAT, "version": FORMAT_VERSION, "slots": self.slots, "num_envs": self.num_envs,
                    "obs_shape": list(self.obs_shape), "dtype": self.obs_dtype.str, "stack": self.stack}
            wrong = {k: header.get(k) for k, v in want.items() if header.get(k) != v}
            if wrong:
                raise ValueError(f"{path}: replay buffer does not match this run: {wrong}")
            used = int(header["used"])
            for name in ("actions", "rewards", "terminal", "end", "first", "has_transition"):
                target = getattr(self, name)
                target[:, :used] = z[name].astype(target.dtype, copy=False)
            for k, lo in enumerate(range(0, used, CHUNK_SLOTS)):
                self.frames[:, lo:lo + CHUNK_SLOTS] = z[f"frames.{k}"]
            self.pos[:] = z["pos"]
            self.count[:] = z["count"]
            if self.tree is not None:
                self._load_priorities(z, header, used)
        return header

    def _load_priorities(self, z, header, used):
        """Saved priorities, or (a file from a uniform run) the same priority for every transition."""
        leaves = np.zeros((self.num_envs, self.slots))
        if "priorities" in z.files:
            leaves[:, :used] = z["priorities"]
            self.max_priority = float(header.get("max_priority", max(leaves.max(), 1.0)))
        else:
            self.max_priority = 1.0
            leaves[:, :used] = self.max_priority
        leaves[~self.has_transition] = 0.0
        self.tree.fill(leaves.reshape(-1))


# ----------------------------------------------------------------------------- a DQN run's buffer

class SharedReplay:
    """The learner's replay: one ReplayBuffer per actor, sampled as one (uniform over transitions)."""

    def __init__(self, buffers, rng):
        self.buffers, self.rng = buffers, rng

    def __len__(self):
        return sum(len(b) for b in self.buffers)

    def sampleable(self):
        return sum(b.sampleable() for b in self.buffers)

    def add_chunk(self, b, chunk):
        """An actor's chunk (agents.dqn.DQNWorker.collect: arrays over (T, N) of newest frames, the
        final frames of ended episodes apart) into buffer b, step by step as LocalEnvs adds them."""
        buf = self.buffers[b]
        if chunk["start"] is not None:
            buf.start(chunk["start"])
        finals = {tuple(at): frame for at, frame in zip(chunk["final_at"].tolist(), chunk["final_frames"])}
        for t in range(len(chunk["actions"])):
            final = None
            if chunk["ended"][t].any():
                final = chunk["next"][t].copy()
                for i in np.flatnonzero(chunk["ended"][t]):
                    final[i] = finals[(t, int(i))]
            buf.add(chunk["actions"][t], chunk["rewards"][t], chunk["terminal"][t], chunk["ended"][t],
                    chunk["next"][t], final)

    def sample(self, batch_size, beta=None):  # beta: prioritized replay's, which runs single-process only
        weights = np.array([b.sampleable() for b in self.buffers], np.float64)
        counts = self.rng.multinomial(batch_size, weights / weights.sum())
        parts = [b.sample(int(c)) for b, c in zip(self.buffers, counts) if c > 0]
        return Batch(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in Batch._fields
                        if getattr(parts[0], f) is not None})  # uniform parts: no weights or index



def make_buffer(cfg, obs_shape, obs_dtype, rng):
    """A DQN run's replay buffer (cfg: agents.dqn.Config): frame stacks rebuilt on the deepmind
    preset, priorities if asked."""
    return ReplayBuffer(cfg.buffer_size, obs_shape, obs_dtype, cfg.num_envs, frame_stack(cfg.preset), cfg.n_step,
                        cfg.gamma, rng, prioritized=cfg.prioritized, alpha=cfg.priority_alpha)


def final_observations(info, next_obs, ended):
    """The last observation of each episode that ended this step (rows of other envs: next_obs): with
    same-step autoreset, next_obs already holds the new episode's first one, info["final_obs"] the last."""
    if not ended.any():
        return next_obs
    final = info.get("final_obs")
    if final is None:
        raise ValueError("the vector env reported no info['final_obs'] for an ended episode")
    out = np.array(next_obs, copy=True)
    for i in np.flatnonzero(ended):
        out[i] = final[i]
    return out


def buffer_path(run):
    return os.path.join(run.dir, "replay.npz")


def restore_buffer(buffer, run):
    """Fill buffer from the run's replay.npz when there is one that fits; otherwise say that it refills.
    A file older than the checkpoint is still good experience, so it is used all the same."""
    path = buffer_path(run)
    if not os.path.exists(path):
        run.message("no saved replay buffer: refilling it before learning again")
        return buffer
    try:
        header = buffer.load(path)
    except Exception as e:  # a damaged file (zip, JSON, shapes) must not stop the run: refill instead
        run.message(f"could not load {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                    f"refilling the replay buffer")
        return buffer.empty_like()
    if header.get("step") != run.step:
        run.message(f"{path} was saved at step {header.get('step')}, the checkpoint at {run.step}: using it")
    return buffer


def save_buffer(buffer, run):
    """Write the buffer to the run's replay.npz; a failure is said through run.message."""
    try:
        buffer.save(buffer_path(run), run.step)
    except OSError as e:
        run.message(f"could not write {buffer_path(run)}: {e.strerror or e}")
