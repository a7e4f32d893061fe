"""agents.replay: stacks rebuilt exactly as the env showed them, episode ends, n-step returns, sampling."""

import numpy as np
import pytest

from agents.replay import Batch, ReplayBuffer
from nets.npzfile import write_npz

GAMMA = 0.9


class FakeFrames:
    """num_envs envs whose frames are unique numbers (never 0), stacked 4 deep with zero padding at
    each episode start, as AtariVectorEnv does. Episode e of an env lasts lengths[e] steps and ends
    terminated or truncated by kinds[e]; a life is lost (terminal, no reset) at step 3 of each episode."""

    def __init__(self, num_envs, lengths, kinds, frame=(2, 2)):
        self.num_envs, self.lengths, self.kinds, self.frame = num_envs, lengths, kinds, frame
        self.counter = 0
        self.episode = [0] * num_envs
        self.t = [0] * num_envs
        self.stack = [None] * num_envs

    def _new_frame(self):
        self.counter += 1
        return np.full(self.frame, self.counter % 250 + 1, np.uint8)

    def _begin(self, e):
        self.stack[e] = np.zeros((4,) + self.frame, np.uint8)
        self.stack[e][-1] = self._new_frame()
        self.t[e] = 0

    def reset(self):
        for e in range(self.num_envs):
            self._begin(e)
        return np.stack(self.stack)

    def step(self):
        """-> rewards, terminal (learner), ended, next_obs, final_obs."""
        rewards = np.zeros(self.num_envs, np.float32)
        terminal = np.zeros(self.num_envs, bool)
        ended = np.zeros(self.num_envs, bool)
        final = np.zeros((self.num_envs, 4) + self.frame, np.uint8)
        for e in range(self.num_envs):
            self.stack[e] = np.concatenate([self.stack[e][1:], self._new_frame()[None]])
            self.t[e] += 1
            rewards[e] = self.counter % 7 - 3
            length = self.lengths[self.episode[e] % len(self.lengths)]
            kind = self.kinds[self.episode[e] % len(self.kinds)]
            if self.t[e] == length:
                ended[e] = True
                terminal[e] = kind == "terminated"
                final[e] = self.stack[e]
                self.episode[e] += 1
                self._begin(e)
            elif self.t[e] == 3:
                terminal[e] = True  # a lost life: terminal for the learner, the stack goes on
        return rewards, terminal, ended, np.stack(self.stack), final


def fill(buffer, env, steps, rng):
    """Play env into buffer; returns {(e, slot): (obs, action, reward, terminal, ended, true next obs)}."""
    buffer.start(env.reset())
    return fill_more(buffer, env, steps, rng)


def fill_more(buffer, env, steps, rng):
    """fill() without the reset: go on playing the same episodes."""
    log = {}
    for _ in range(steps):
        obs = np.stack(env.stack)
        actions = rng.integers(4, size=env.num_envs)
        slots = (buffer.pos - 1) % buffer.slots
        rewards, terminal, ended, next_obs, final = env.step()
        buffer.add(actions, rewards, terminal, ended, next_obs, final)
        for e in range(env.num_envs):
            true_next = final[e] if ended[e] else next_obs[e]
            log[(e, int(slots[e]))] = (obs[e].copy(), actions[e], rewards[e], terminal[e], ended[e], true_next.copy())
    return log


def sampleable_slots(buffer, e):
    ages = np.arange(buffer.n_step, buffer.count[e] - buffer.stack + 1)
    slots = (buffer.pos[e] - 1 - ages) % buffer.slots
    return slots[buffer.has_transition[e, slots]]


@pytest.mark.parametrize("capacity", [10_000, 2 * 57])  # the second wraps around many times
def test_stacks_match_what_the_env_showed(capacity):
    env = FakeFrames(2, lengths=[9, 2, 5, 14], kinds=["terminated", "truncated", "truncated", "terminated"])
    buffer = ReplayBuffer(capacity, (4, 2, 2), np.uint8, num_envs=2, stack=4, n_step=1, gamma=GAMMA)
    log = fill(buffer, env, 300, np.random.default_rng(0))
    checked = 0
    for e in range(2):
        slots = sampleable_slots(buffer, e)
        assert len(slots) > 20
        envs_ = np.full(len(slots), e)
        obs = buffer.stacks(envs_, slots).copy()
        returns, discounts, next_slots = buffer.n_step_returns(envs_, slots)
        next_obs = buffer.stacks(envs_, next_slots, "next")
        for k, slot in enumerate(slots):
            o, a, r, terminal, ended, true_next = log[(e, int(slot))]
            np.testing.assert_array_equal(obs[k], o)
            np.testing.assert_array_equal(next_obs[k], true_next)  # the final obs, not the new episode's
            assert buffer.actions[e, slot] == a and returns[k] == pytest.approx(r)
            assert discounts[k] == pytest.approx(0.0 if terminal else GAMMA)
            checked += 1
    assert checked > 40


def test_episode_start_is_zero_padded_and_never_mixes_episodes():
    env = FakeFrames(1, lengths=[6], kinds=["terminated"])
    buffer = ReplayBuffer(1000, (4, 2, 2), np.uint8, stack=4)
    fill(buffer, env, 30, np.random.default_rng(0))
    firsts = np.flatnonzero(buffer.first[0, :buffer.count[0]])
    assert len(firsts) >= 4
    start = firsts[2]
    stacks = buffer.stacks(np.zeros(3, int), np.array([start, start + 1, start + 2]))
    # at an episode's first step only the newest frame is set: nothing from the previous episode
    assert (stacks[0, :3] == 0).all() and (stacks[0, 3] != 0).all()
    assert (stacks[1, :2] == 0).all() and (stacks[1, 2:] != 0).all()
    assert (stacks[2, :1] == 0).all() and (stacks[2, 1:] != 0).all()
    # the slot before an episode start holds the last episode's final frame and is never sampled
    assert not buffer.has_transition[0, start - 1]


def test_terminal_and_truncated_kept_apart():
    env = FakeFrames(1, lengths=[5, 5], kinds=["terminated", "truncated"])
    buffer = ReplayBuffer(1000, (4, 2, 2), np.uint8, stack=4, gamma=GAMMA)
    fill(buffer, env, 10, np.random.default_rng(0))
    ends = np.flatnonzero(buffer.end[0])
    assert len(ends) == 2
    terminated_slot, truncated_slot = ends
    assert buffer.terminal[0, terminated_slot] and not buffer.terminal[0, truncated_slot]
    _, discounts, next_slots = buffer.n_step_returns(np.zeros(2, int), ends)
    assert discounts[0] == 0.0  # no bootstrap after termination
    assert discounts[1] == pytest.approx(GAMMA)  # truncation bootstraps ...
    assert next_slots[1] == truncated_slot + 1 and not buffer.first[0, truncated_slot + 1]  # ... from the final frame


def test_n_step_returns_stop_at_terminal_and_end():
    n, gamma = 3, 0.5
    buffer = ReplayBuffer(100, (3,), np.float32, stack=1, n_step=n, gamma=gamma)
    obs = np.zeros((1, 3), np.float32)
    buffer.start(obs)
    # step:        0  1  2  3  4  5  6  7  8
    rewards =     [1, 2, 4, 8, 16, 32, 64, 128, 256]
    terminal =    [0, 0, 1, 0, 0, 0, 0, 0, 0]  # a terminal (life lost) after step 2
    ended =       [0, 0, 0, 0, 0, 1, 0, 0, 0]  # a truncated episode end after step 5
    for t in range(9):
        final = np.full((1, 3), 100 + t, np.float32)
        buffer.add([t % 2], [rewards[t]], [bool(terminal[t])], [bool(ended[t])], np.full((1, 3), t + 1, np.float32), final)
    # slots: 0..5 steps 0..5, slot 6 the final frame of the truncated episode, 7.. the next episode
    slots = np.array([0, 1, 2, 3, 4, 5, 7])
    returns, discounts, next_slots = buffer.n_step_returns(np.zeros(len(slots), int), slots)
    np.testing.assert_allclose(returns, [1 + 1 + 1, 2 + 2, 4, 8 + 8 + 8, 16 + 16, 32, 64 + 64 + 64])
    np.testing.assert_allclose(discounts, [0, 0, 0, gamma ** 3, gamma ** 2, gamma, gamma ** 3])
    np.testing.assert_array_equal(next_slots, [3, 3, 3, 6, 6, 6, 10])
    # the truncated episode bootstraps from its final observation
    assert buffer.frames[0, 6, 0] == 105


def test_sample_shapes_dtypes_and_consistency():
    env = FakeFrames(2, lengths=[7, 11], kinds=["terminated", "truncated"], frame=(84, 84))
    buffer = ReplayBuffer(5000, (4, 84, 84), np.uint8, num_envs=2, stack=4, n_step=1, gamma=GAMMA,
                          rng=np.random.default_rng(1))
    log = fill(buffer, env, 100, np.random.default_rng(0))  # fewer than 250 frames: every stack unique
    batch = buffer.sample(32)
    assert isinstance(batch, Batch)
    assert batch.obs.shape == batch.next_obs.shape == (32, 4, 84, 84) and batch.obs.dtype == np.uint8
    assert batch.actions.shape == (32,) and batch.actions.dtype == np.int64
    assert batch.returns.dtype == batch.discounts.dtype == np.float32
    by_obs = {o.tobytes(): v for o, *v in log.values()}
    for k in range(32):
        a, r, terminal, ended, true_next = by_obs[batch.obs[k].tobytes()]
        assert batch.actions[k] == a and batch.returns[k] == r
        np.testing.assert_array_equal(batch.next_obs[k], true_next)
        assert batch.discounts[k] == pytest.approx(0.0 if terminal else GAMMA)


def test_too_small_to_sample_and_bad_shapes():
    buffer = ReplayBuffer(100, (4, 2, 2), np.uint8, stack=4)
    buffer.start(np.zeros((1, 4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        buffer.sample(4)
    with pytest.raises(ValueError, match="stack"):
        ReplayBuffer(100, (3, 2, 2), np.uint8, stack=4)
    with pytest.raises(ValueError, match="slots"):
        ReplayBuffer(8, (4, 2, 2), np.uint8, num_envs=2, stack=4)


def test_start_after_resume_cuts_the_episode():
    buffer = ReplayBuffer(100, (2,), np.float32, stack=1, n_step=3, gamma=0.5)
    buffer.start(np.zeros((1, 2), np.float32))
    for t in range(4):
        buffer.add([0], [1.0], [False], [False], np.full((1, 2), t + 1, np.float32))
    buffer.start(np.full((1, 2), 50, np.float32))  # a resumed run resets its envs mid-episode
    buffer.add([0], [1.0], [False], [False], np.full((1, 2), 51, np.float32))
    returns, discounts, next_slots = buffer.n_step_returns(np.zeros(2, int), np.array([2, 3]))
    np.testing.assert_allclose(returns, [1.5, 1.0])  # no reward from the new episode
    np.testing.assert_allclose(discounts, [0.25, 0.5])  # bootstrapped from the last frame it reached
    np.testing.assert_array_equal(next_slots, [4, 4])
    assert not buffer.has_transition[0, 4]


def test_save_and_load(tmp_path):
    env = FakeFrames(2, lengths=[7], kinds=["terminated"])
    buffer = ReplayBuffer(200, (4, 2, 2), np.uint8, num_envs=2, stack=4, n_step=2)
    fill(buffer, env, 150, np.random.default_rng(0))  # wrapped around
    arrays, header = buffer.state()
    write_npz(tmp_path / "replay.npz", arrays, {**header, "step": 300})
    other = ReplayBuffer(200, (4, 2, 2), np.uint8, num_envs=2, stack=4, n_step=2)
    assert other.load(tmp_path / "replay.npz")["step"] == 300
    for name in ("frames", "actions", "rewards", "terminal", "end", "first", "has_transition", "pos", "count"):
        np.testing.assert_array_equal(getattr(other, name), getattr(buffer, name), err_msg=name)
    wrong = ReplayBuffer(400, (4, 2, 2), np.uint8, num_envs=2, stack=4, n_step=2)
    with pytest.raises(ValueError, match="does not match"):
        wrong.load(tmp_path / "replay.npz")


def test_stacks_match_atari_vector_env_with_lives():
    """Breakout on ale-py's AtariVectorEnv as dqn.train runs it: full games, a lost life terminal
    for the learner only; every rebuilt stack equals the env's observation."""
    import envs
    from agents.replay import final_observations
    venv = envs.make_vector("breakout", "deepmind", 2, sticky=False, training=False)
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(4000, (4, 84, 84), np.uint8, num_envs=2, stack=4)
    try:
        obs, info = venv.reset(seed=3)
        buffer.start(obs)
        lives = info["lives"]
        seen = {}
        lost = ends = 0
        for _ in range(450):
            actions = rng.integers(4, size=2)
            slots = (buffer.pos - 1) % buffer.slots
            next_obs, rewards, terminated, truncated, info = venv.step(actions)
            ended = terminated | truncated
            life_lost = (info["lives"] < lives) & ~ended
            lives = info["lives"]
            final = final_observations(info, next_obs, ended)
            buffer.add(actions, np.sign(rewards), terminated | life_lost, ended, next_obs, final)
            for e in range(2):
                seen[(e, int(slots[e]))] = (obs[e].copy(), final[e].copy())
            lost += life_lost.sum()
            ends += ended.sum()
            obs = next_obs
    finally:
        venv.close()
    assert lost >= 4 and ends >= 1
    for e in range(2):
        slots = sampleable_slots(buffer, e)
        envs_ = np.full(len(slots), e)
        stacks = buffer.stacks(envs_, slots).copy()
        _, _, next_slots = buffer.n_step_returns(envs_, slots)
        nexts = buffer.stacks(envs_, next_slots, "next")
        for k, slot in enumerate(slots):
            np.testing.assert_array_equal(stacks[k], seen[(e, int(slot))][0])
            np.testing.assert_array_equal(nexts[k], seen[(e, int(slot))][1])


# ----------------------------------------------------------------------------- prioritized replay

def test_sum_tree_matches_a_cumulative_sum():
    """find() against its slow twin, searchsorted over the cumulative sum of the leaves; batched
    set() (with a leaf listed twice) and fill() against one-leaf set()."""
    from agents.sumtree import SumTree
    rng = np.random.default_rng(0)
    tree, twin = SumTree(37), SumTree(37)  # not a power of two: padding leaves stay 0
    values = rng.random(37) * (rng.random(37) < 0.7)  # some zero leaves
    tree.set(np.arange(37), values)
    for k, v in enumerate(values):
        twin.set(k, v)
    np.testing.assert_allclose(tree.nodes, twin.nodes)
    tree.set([5, 9, 5], [2.0, 0.0, 3.0])  # a repeated leaf: the last value wins
    values[[5, 9]] = [3.0, 0.0]
    filled = SumTree(37)
    filled.fill(values)
    np.testing.assert_allclose(filled.nodes, tree.nodes)
    assert tree.total == pytest.approx(values.sum())
    u = rng.random(5000) * tree.total
    found = tree.find(u)
    np.testing.assert_array_equal(found, np.searchsorted(np.cumsum(values), u, side="right"))
    assert np.all(values[found] > 0)
    assert values[tree.find([tree.total * (1 - 1e-16)])[0]] > 0  # the very end: never a zero leaf
    with pytest.raises(ValueError, match=">= 0"):
        tree.set(3, -1.0)
    with pytest.raises(IndexError):
        tree.set([37], [1.0])


def test_prioritized_sampling_follows_priorities_with_importance_weights():
    buffer = ReplayBuffer(200, (3,), np.float32, stack=1, n_step=1, rng=np.random.default_rng(0),
                          prioritized=True, alpha=0.5)
    buffer.start(np.zeros((1, 3), np.float32))
    for t in range(100):
        buffer.add([t % 2], [float(t)], [False], [False], np.full((1, 3), t + 1, np.float32))
    # new transitions all have the largest priority so far (1): sampling starts uniform
    leaves = buffer.tree.leaves()
    assert np.all(leaves[:100] == 1.0) and np.all(leaves[100:] == 0.0)
    index = np.arange(99)  # slots 0..98; slot 99 (age 1, sampleable) keeps priority 1, slot 100 is the env's now
    td = np.ones(99)
    td[7] = 99.0  # priority (99 + eps) ** 0.5 ~ 9.95 against (1 + eps) ** 0.5 = 1
    buffer.update_priorities(index, td)
    assert buffer.max_priority == pytest.approx(99 ** 0.5)
    counts = np.zeros(200)
    weights = {}
    for _ in range(400):
        batch = buffer.sample(32, beta=0.5)
        np.add.at(counts, batch.index, 1)
        for i, w in zip(batch.index, batch.weights):
            weights[int(i)] = float(w)
        np.testing.assert_array_equal(batch.returns, batch.index.astype(np.float32))  # reward t at slot t
    p = np.r_[np.ones(7), 99 ** 0.5, np.ones(91), 1.0]  # slot 99 was never updated: priority 1
    share = p[7] / p.sum()
    assert counts[7] / counts.sum() == pytest.approx(share, rel=0.1)
    # weights (N p)^-beta over the batch's largest: the favoured slot's is (1 / 9.95) ** 0.5 of a plain one's
    assert weights[7] / weights[0] == pytest.approx((1 / 99 ** 0.5) ** 0.5, rel=1e-5)


def test_prioritized_never_samples_what_cannot_be_rebuilt():
    """Wrapping many times, with final-frame slots and episode starts: every sampled slot has a
    transition, its n-step future and its stack frames, and the batch is what the env showed."""
    env = FakeFrames(2, lengths=[9, 2, 5, 14], kinds=["terminated", "truncated", "truncated", "terminated"])
    buffer = ReplayBuffer(2 * 57, (4, 2, 2), np.uint8, num_envs=2, stack=4, n_step=3, gamma=GAMMA,
                          rng=np.random.default_rng(2), prioritized=True)
    rng = np.random.default_rng(0)
    log = fill(buffer, env, 100, rng)
    for _ in range(200):
        log.update(fill_more(buffer, env, 1, rng))
        batch = buffer.sample(16)
        env_, slot = np.divmod(batch.index, buffer.slots)
        for e, s in zip(env_, slot):
            assert s in sampleable_slots(buffer, e)
        buffer.update_priorities(batch.index, rng.random(16) * 5)
        for k in range(16):
            o = log[(int(env_[k]), int(slot[k]))][0]
            np.testing.assert_array_equal(batch.obs[k], o)
    assert np.all(buffer.tree.leaves()[~buffer.has_transition.reshape(-1)] == 0)


def test_prioritized_save_load_and_a_uniform_file(tmp_path):
    env = FakeFrames(1, lengths=[7], kinds=["terminated"])
    buffer = ReplayBuffer(200, (4, 2, 2), np.uint8, stack=4, n_step=2, rng=np.random.default_rng(0), prioritized=True)
    fill(buffer, env, 150, np.random.default_rng(0))
    batch = buffer.sample(32)
    buffer.update_priorities(batch.index, np.arange(32.0))
    buffer.save(tmp_path / "replay.npz", 150)
    again = ReplayBuffer(200, (4, 2, 2), np.uint8, stack=4, n_step=2, prioritized=True)
    again.load(tmp_path / "replay.npz")
    np.testing.assert_allclose(again.tree.nodes, buffer.tree.nodes)
    assert again.max_priority == buffer.max_priority
    # a buffer saved by a uniform run: every stored transition starts at the same priority
    uniform = ReplayBuffer(200, (4, 2, 2), np.uint8, stack=4, n_step=2)
    fill(uniform, FakeFrames(1, lengths=[7], kinds=["terminated"]), 150, np.random.default_rng(0))
    uniform.save(tmp_path / "uniform.npz", 150)
    again.load(tmp_path / "uniform.npz")
    has = uniform.has_transition.reshape(-1)
    assert np.all(again.tree.leaves()[has] == 1.0) and np.all(again.tree.leaves()[~has] == 0.0)
    assert again.sample(8).weights.max() == 1.0
    with pytest.raises(ValueError, match="prioritized"):
        uniform.update_priorities(batch.index, np.ones(32))


def test_empty_like_keeps_every_setting():
    buffer = ReplayBuffer(200, (4, 2, 2), np.uint8, num_envs=2, stack=4, n_step=3, gamma=0.5, prioritized=True,
                          alpha=0.7, priority_eps=1e-3)
    fill(buffer, FakeFrames(2, lengths=[7], kinds=["terminated"]), 50, np.random.default_rng(0))
    fresh = buffer.empty_like()
    for name in ("slots", "num_envs", "obs_shape", "obs_dtype", "stack", "n_step", "gamma", "prioritized", "alpha",
                 "priority_eps", "rng"):
        assert getattr(fresh, name) == getattr(buffer, name), name
    assert len(fresh) == 0 and fresh.tree.total == 0.0 and len(buffer) > 0
