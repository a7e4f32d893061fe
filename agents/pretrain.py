"""Behaviour cloning: pretrain an agent's network on recorded games, then hand it to RL (--init).

Each recording (envs/recording.py) is re-simulated on the emulator (every screen checked against
its CRC32) and the target agent's observations are rebuilt from the raw RGB screens exactly as its
preset builds them (agent_steps: frames; action_map: which recorded actions the agent can take);
the label of an observation is the action taken right after it was seen. The network is trained
by cross-entropy with mini-batches, whole games held out (Demonstrations.split) and Adam, and
written as a checkpoint of the agent's own kind that `scripts.train --init` and `agents.load` accept.

DQN. The Nature network is trained the same way, its Q-values standing in for logits under softmax
cross-entropy: the greedy action becomes the teacher's, the Q levels mean nothing yet (TD learning
sets them). It is slow to start: Pong's raw frames differ from each other by about 0.3% of the pixel
range, so for the first few hundred updates the network only learns how often each action is taken
(measured, hidden 64: 32 Pong stacks memorised after about 500 full-batch updates at lr 3e-3 and not
within 1000 at 1e-4; 32 noise images or mean-centred stacks within 50 at 1e-3). Give it thousands.
"""
import dataclasses
import json
import math
import os
import time

import gymnasium as gym
import numpy as np

import envs
from agents import dqn, ppo
from agents import policy_gradient as pg
from agents.run import config_dict, save_checkpoint
from envs.atari import action_names, deepmind_frame, karpathy_frame
from envs.recording import RecordingError, load, replay
from nets import Adam, BCEWithLogits, SoftmaxCrossEntropy

AGENTS = ("pg", "dqn", "ppo")
STEP_FRAMES = 4  # emulator frames per agent step in both Atari presets
DROP = -1  # label of a step whose action the agent cannot take


class DemonstrationError(ValueError):
    """Recordings that cannot teach this agent: none found, another game, nothing usable."""


@dataclasses.dataclass
class Config:
    agent: str = "pg"  # which agent to pretrain: pg, dqn or ppo (its policy head)
    game: str = "pong"  # the game the recordings must be of
    preset: str = ""  # the agent's preset; empty: pg the game's default (Pong: karpathy), dqn and ppo deepmind
    epochs: int = 10  # passes over the training samples
    hidden: int = 0  # hidden units; 0: the agent's default (pg 200, dqn 512, ppo 256 small / 512 nature)
    network: str = "auto"  # ppo only: small or nature torso (auto: nature, as ppo trains)
    dueling: bool = False  # dqn only: a dueling head, to --init a `--dueling true` DQN run
    lr: float = 1e-3  # Adam's learning rate
    batch_size: int = 0  # samples per update; 0: the agent's default (pg 128, dqn and ppo 32)
    val_fraction: float = 0.1  # share of the samples held out, as whole games (0: none)
    seed: int = 0  # seeds the network, the split and the shuffling


# ----------------------------------------------------------------------------- the target agent

@dataclasses.dataclass
class Target:
    """What the pretrained agent will be: its config, env spec, observations and actions."""
    agent: str
    cfg: object  # the agent's resolved Config (pg or dqn), written into the checkpoint
    spec: dict  # envs.env_spec of the env it plays
    obs_shape: tuple
    actions: list  # action names, one per agent action
    obs_scale: float  # network input = observation * obs_scale
    head: str  # sigmoid (one logit for action 1) or softmax
    batch_size: int  # samples per update

    @property
    def n_actions(self):
        return len(self.actions)


def resolved(cfg):
    """Check the settings and work out the target agent; ValueError naming what is wrong."""
    if cfg.agent not in AGENTS:
        raise ValueError(f"agent must be one of {', '.join(AGENTS)}, got {cfg.agent!r}")
    for name, low in (("epochs", 1), ("batch_size", 0), ("hidden", 0)):
        if getattr(cfg, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(cfg, name)}")
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5], got {cfg.val_fraction}")
    env_id = envs.resolve(cfg.game)
    if not envs.atari.is_atari(env_id):
        raise ValueError(f"recordings are of Atari games, not {env_id}")
    if cfg.dueling and cfg.agent != "dqn":
        raise ValueError("dueling is a dqn option: the policy network has no Q head")
    if cfg.network != "auto" and cfg.agent != "ppo":
        raise ValueError("network is a ppo option (its torso): pg and dqn have one network each")
    if cfg.agent == "pg":
        agent_cfg = pg.resolved(pg.Config(game=env_id, preset=cfg.preset, seed=cfg.seed,
                                          hidden=cfg.hidden or pg.Config.hidden))
    elif cfg.agent == "ppo":
        agent_cfg = ppo.resolved(ppo.Config(game=env_id, preset=cfg.preset or "deepmind", seed=cfg.seed,
                                            hidden=cfg.hidden, network=cfg.network))
    else:
        agent_cfg = dqn.resolved(dqn.Config(game=env_id, preset=cfg.preset or "deepmind", seed=cfg.seed,
                                            hidden=cfg.hidden, dueling=cfg.dueling))
    if agent_cfg.preset not in ("karpathy", "deepmind"):
        raise ValueError(f"preset must be karpathy or deepmind for recordings, got {agent_cfg.preset!r}")
    spec = envs.env_spec(env_id, agent_cfg.preset, agent_cfg.sticky)
    meanings = list(action_names(env_id, agent_cfg.preset))
    if agent_cfg.preset == "karpathy":
        obs_shape = (80 * 80,)
    else:
        obs_shape = (spec["frame_stack"], spec["screen_size"], spec["screen_size"])
    # ppo: the policy's logits are the network's first outputs, its value (left untouched) the last
    head = agent_cfg.head if cfg.agent == "pg" else {"dqn": "softmax", "ppo": "policy"}[cfg.agent]
    scale = 1.0 if cfg.agent == "pg" else 1.0 / 255.0  # DQN and PPO scale uint8 frames; PG takes them as they are
    batch_size = cfg.batch_size or (128 if cfg.agent == "pg" else 32)
    return Target(cfg.agent, agent_cfg, spec, obs_shape, meanings, scale, head, batch_size)


def action_map(recorded_meanings, target):
    """(raw actions,) int array: the target's action index for each recorded action, or DROP.

    deepmind: the same name in the target's action set (identity for the minimal set); missing
        names are dropped.
    karpathy (2 actions, 0 = up, 1 = down): RIGHT and RIGHTFIRE -> up, LEFT and LEFTFIRE -> down in
        Pong (UP/DOWN where the game has them; FIRE only serves). NOOP and FIRE are DROPPED: the
        policy cannot keep still, and calling them up or down would teach a drift the teacher
        never had. Their observations still serve as the previous frame of the next difference."""
    out = np.full(len(recorded_meanings), DROP, np.int64)
    for raw, name in enumerate(recorded_meanings):
        if target.spec["preset"] == "karpathy":
            name = name.replace("FIRE", "") or name  # RIGHTFIRE moves as RIGHT; FIRE alone stays FIRE
        if name in target.actions:
            out[raw] = target.actions.index(name)
    return out


# ----------------------------------------------------------------------------- one recording

@dataclasses.dataclass
class Layout:
    """How one recording's base steps make agent steps."""
    rec: object  # the loaded envs.recording.Recording
    frameskip: int  # emulator frames per recorded step: 1 or 4
    noops: int  # recorded no-op starts before the first agent step
    meanings: list  # the recorded env's action names


def layouts(paths, target):
    """Load every recording and read its Layout, checking that it is of the target's game and made
    in a way this module rebuilds. One base env per env id and kwargs serves all (making one
    loads the ROM, which is slow); it redraws the no-op starts as AtariPreprocessing.reset does."""
    base_envs, out = {}, []
    try:
        for path in paths:
            rec = load(path)
            h = rec.header
            if h["env_id"] != target.spec["env_id"]:
                raise DemonstrationError(f"{path}: a recording of {h['env_id']}, not {target.spec['env_id']}")
            spec = h.get("spec") if isinstance(h.get("spec"), dict) else {}
            if spec.get("training_wrappers"):
                raise DemonstrationError(f"{path}: recorded with the training wrappers (life-loss resets, FIRE "
                                         f"presses), which pretraining does not rebuild")
            kwargs = {k: v for k, v in h["env_kwargs"].items() if k != "render_mode"}
            frameskip = kwargs.get("frameskip", gym.registry[h["env_id"]].kwargs.get("frameskip", STEP_FRAMES))
            if frameskip not in (1, STEP_FRAMES):
                raise DemonstrationError(f"{path}: frameskip {frameskip!r}: pretraining reads recordings made "
                                         f"at frameskip 1 or {STEP_FRAMES}")
            key = (h["env_id"], json.dumps(kwargs, sort_keys=True))
            if key not in base_envs:
                try:
                    base_envs[key] = gym.make(h["env_id"], **kwargs)
                except Exception as e:  # a kwarg of another ale-py version
                    raise RecordingError(f"{path}: cannot make {h['env_id']} with the recorded kwargs "
                                         f"({e})") from None
            env = base_envs[key]
            noops = 0
            noop_max = int(spec.get("noop_max", 0)) if spec.get("preset") == "deepmind" else 0
            if frameskip == 1 and noop_max > 0:
                env.reset(seed=h["seed"])
                noops = int(env.unwrapped.np_random.integers(1, noop_max + 1))
                if len(rec.actions) < noops or rec.actions[:noops].any():
                    raise DemonstrationError(f"{path}: the preset's {noops} no-op starts are not the recording's "
                                             f"first steps: recorded with another ale-py or gymnasium?")
            out.append(Layout(rec, frameskip, noops, list(env.unwrapped.get_action_meanings())))
    finally:
        for env in base_envs.values():
            env.close()
    return out


def agent_steps(layout, target):
    """Re-simulate one recording into the target's per-agent-step frames and labels.

    Returns (frames (K+1, ...) uint8, labels (K,) int64 with DROP, info dict): frames[k] is what the
    preset keeps of agent step k (k = 0: the first screen), labels[k] the action taken after it.

    Both presets act every 4 emulator frames; a recording holds one entry per base-env step:
      frameskip 4 (karpathy-preset recordings): one entry per agent step, nothing to do for karpathy.
          For the deepmind preset the max-pool over an agent step's last two frames cannot be rebuilt
          (the frame before the last was never shown): the last frame stands alone (an approximation;
          Pong's ball looks half as long). No no-op starts: the first screen is the reset screen.
      frameskip 1 (deepmind-preset recordings from evaluate/watch, and scripts.play): the preset's
          no-op starts come first (layouts() redraws and checks their count); then every 4 base steps
          are one agent step. Subsampled for karpathy (the screen at the end of each agent step, which
          is what ALE's own frameskip=4 returns); pooled for deepmind (max of the last two screens,
          ALE's grayscale, cv2 INTER_AREA to 84x84, stacks of 4 with zero padding, as the preset does).
    The label of agent step k is the recorded action of its first base step (deepmind recordings repeat
    it over all four; info's `mixed_groups` counts the agent steps where they differ). Other
    frameskips, and recordings made with the training wrappers, are refused (layouts())."""
    rec, frameskip, noops, meanings = layout.rec, layout.frameskip, layout.noops, layout.meanings
    path = rec.path
    mapping = action_map(meanings, target)
    end = rec.header.get("ended_at") or len(rec.actions)  # nothing after the game ended is played
    per_step = STEP_FRAMES // frameskip  # base steps per agent step
    make = karpathy_frame if target.spec["preset"] == "karpathy" else deepmind_frame
    frames, before = [], None
    for i, (screen, _, _) in enumerate(replay(path)):
        j = i - noops
        if j < 0 or i > end:
            continue
        if per_step > 1 and j % per_step == per_step - 1:
            before = screen.copy()  # the screen before the last of this agent step: max-pooled
        elif j % per_step == 0:
            frames.append(make(screen, before if j > 0 else None))
            before = None
    starts = noops + per_step * np.arange(len(frames))  # base step each agent step begins at
    labels = mapping[rec.actions[starts[:-1]]]  # (K,) the first action of each agent step
    groups = [rec.actions[s:min(s + per_step, end)] for s in starts[:-1]]
    info = {"path": os.path.abspath(path), "player": rec.header["player"], "env_id": rec.header["env_id"],
            "preset": rec.header.get("preset"), "frameskip": frameskip, "noops": noops,
            "return": rec.header["return"], "agent_steps": int(len(labels)),
            "samples": int((labels != DROP).sum()), "dropped": int((labels == DROP).sum()),
            "mixed_groups": int(sum(len(set(g.tolist())) > 1 for g in groups))}
    return np.stack(frames), labels, info


# ----------------------------------------------------------------------------- many recordings

def find_recordings(sources):
    """Files and folders (their *.npz, sorted) -> list of files; DemonstrationError if none."""
    found = []
    for source in sources:
        if os.path.isdir(source):
            inside = sorted(os.path.join(source, n) for n in os.listdir(source) if n.endswith(".npz"))
            if not inside:
                raise DemonstrationError(f"{source}: no recordings (*.npz) in this folder")
            found += inside
        elif os.path.exists(source):
            found.append(source)
        else:
            raise DemonstrationError(f"{source}: no such file or folder")
    if not found:
        raise DemonstrationError("no recordings given")
    return found


class Demonstrations:
    """Frames of many games in one array, and the samples that index them.

    A sample's observation is rebuilt on demand from its frame and the ones before it in the same
    game (the frame difference, or the stack of four), so each frame is stored once."""

    def __init__(self, target, frames, starts, index, labels, game, infos):
        self.target = target
        self.frames = frames  # (F, ...) uint8, every game's frames one after the other
        self.starts = starts  # (F,) index of the first frame of each frame's game
        self.index = index  # (S,) frame each sample observes
        self.labels = labels  # (S,) the target's action
        self.game = game  # (S,) which recording
        self.infos = infos  # one dict per recording

    def __len__(self):
        return len(self.labels)

    def observations(self, rows):
        """(B,) sample rows -> (B, *obs_shape): float32 differences (karpathy), uint8 stacks (deepmind)."""
        idx = self.index[rows]  # (B,)
        first = self.starts[idx]  # (B,)
        if self.target.spec["preset"] == "karpathy":
            n = self.target.obs_shape[0]
            cur = np.unpackbits(self.frames[idx], axis=1, count=n).astype(np.float32)  # (B, 6400)
            prev = np.unpackbits(self.frames[np.maximum(idx - 1, 0)], axis=1, count=n)  # (B, 6400)
            obs = cur - prev
            obs[idx == first] = 0.0  # the first observation of a game is all zeros (KarpathyPong.reset)
            return obs
        stack = self.target.obs_shape[0]
        obs = np.zeros((len(idx), *self.target.obs_shape), np.uint8)  # (B, 4, 84, 84), zero padding
        for slot in range(stack):
            j = idx - (stack - 1 - slot)  # oldest frame first, as FrameStackObservation orders them
            ok = j >= first
            obs[ok, slot] = self.frames[j[ok]]
        return obs

    def split(self, val_fraction, rng):
        """(train rows, val rows). Whole games are held out (consecutive frames are near duplicates, so
        a random split by frame would flatter the accuracy): shuffled games go to validation until it
        holds val_fraction of the samples (at least one game, never all). With one game, its last
        val_fraction is held out. fit() keeps the weights of the best validation epoch."""
        rows = np.arange(len(self))
        if val_fraction <= 0:
            return rows, rows[:0]
        games = np.unique(self.game)
        want = max(1, int(round(val_fraction * len(self))))
        if len(games) == 1:
            return rows[:-want], rows[-want:]
        held, count = [], 0
        for g in rng.permutation(games)[:-1]:  # at least one game stays for training
            held.append(g)
            count += int((self.game == g).sum())
            if count >= want:
                break
        val = np.isin(self.game, held)
        return rows[~val], rows[val]


def load_demonstrations(paths, target, on_recording=None):
    """Re-simulate every recording; on_recording(info) after each. DemonstrationError if no sample."""
    found = layouts(paths, target)  # a bad file or another game fails now, before the slow replays
    frames, starts, index, labels, game, infos = [], [], [], [], [], []
    offset = 0
    for g, layout in enumerate(found):
        f, lab, info = agent_steps(layout, target)
        keep = np.flatnonzero(lab != DROP)  # (S_g,)
        frames.append(f)
        starts.append(np.full(len(f), offset))
        index.append(offset + keep)
        labels.append(lab[keep])
        game.append(np.full(len(keep), g))
        infos.append(info)
        offset += len(f)
        if on_recording:
            on_recording(info)
    labels = np.concatenate(labels)
    if len(labels) == 0:
        raise DemonstrationError(f"no usable samples in {len(paths)} recording(s): every action was one the "
                                 f"{target.spec['preset']} agent cannot take ({', '.join(target.actions)} only)")
    return Demonstrations(target, np.concatenate(frames), np.concatenate(starts), np.concatenate(index),
                          labels, np.concatenate(game), infos)


# ----------------------------------------------------------------------------- training

def build_network(target, rng):
    """The agent's own network, built as its train() builds it: (model, dqn Learner or None)."""
    if target.agent == "pg":
        return pg.build_policy(int(np.prod(target.obs_shape)), target.n_actions, target.cfg.hidden,
                               target.head, rng, sparse_input=target.spec["preset"] == "karpathy"), None
    if target.agent == "ppo":
        learner = ppo.Learner(target.cfg, target.obs_shape, target.n_actions, target.obs_scale, rng)
        return learner.model, learner
    learner = dqn.Learner(target.cfg, target.obs_shape, target.n_actions, target.obs_scale, rng)
    return learner.online, learner


def network_input(data, rows):
    """What the agent's network is fed for these samples: as pg.action_probs and dqn.q_values do."""
    obs = data.observations(rows)
    if data.target.agent == "pg":
        return np.asarray(obs.reshape(len(rows), -1), np.float32)  # (B, D), unscaled
    return dqn.network_input(obs, data.target.obs_scale)  # (B, 4, 84, 84) in [0, 1], as ppo scales them too


def predict(model, data, rows, batch_size=256):
    """Greedy actions of the network for sample rows: (B,) int64."""
    model.eval()
    out = [model.forward(network_input(data, rows[i:i + batch_size])) for i in range(0, len(rows), batch_size)]
    out = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    if data.target.head == "sigmoid":
        return (out[:, 0] > 0).astype(np.int64)
    if data.target.head == "policy":
        return out[:, :-1].argmax(axis=1)
    return out.argmax(axis=1)


def train_step(model, opt, loss, x, y, head):
    """One cross-entropy step; returns (loss, predictions before the step)."""
    out = model.train().forward(x)  # (B, 1) or (B, A)
    if head == "sigmoid":
        value = loss.forward(out[:, 0], y.astype(np.float32))
        dout = loss.backward()[:, None]
        guess = (out[:, 0] > 0).astype(np.int64)
    elif head == "policy":  # cross-entropy on the logits; the value output gets no gradient
        value = loss.forward(out[:, :-1], y)
        dout = np.zeros_like(out)
        dout[:, :-1] = loss.backward()
        guess = out[:, :-1].argmax(axis=1)
    else:
        value = loss.forward(out, y)
        dout = loss.backward()
        guess = out.argmax(axis=1)
    model.backward(dout.astype(np.float32))
    opt.step()
    return value, guess


def fit(model, data, train_rows, val_rows, cfg, rng, on_epoch=None):
    """Mini-batch cross-entropy with Adam; keeps the best-validation weights. Returns the history,
    one row per epoch; its train accuracy is of each mini-batch just before its update."""
    opt = Adam(model, lr=cfg.lr)
    loss = BCEWithLogits() if data.target.head == "sigmoid" else SoftmaxCrossEntropy()
    history, best, best_state = [], -1.0, None
    for epoch in range(1, cfg.epochs + 1):
        started = time.monotonic()
        total, correct = 0.0, 0
        order = rng.permutation(train_rows)
        for i in range(0, len(order), data.target.batch_size):
            rows = order[i:i + data.target.batch_size]
            value, guess = train_step(model, opt, loss, network_input(data, rows), data.labels[rows],
                                      data.target.head)
            if not math.isfinite(value):
                raise FloatingPointError(f"epoch {epoch}: the loss became {value}; try a lower lr")
            total += value * len(rows)
            correct += int((guess == data.labels[rows]).sum())
        val_acc = None
        if len(val_rows):
            val_acc = float((predict(model, data, val_rows) == data.labels[val_rows]).mean())
        row = {"epoch": epoch, "loss": total / len(train_rows), "train_accuracy": correct / len(train_rows),
               "val_accuracy": val_acc, "seconds": time.monotonic() - started}
        history.append(row)
        if val_acc is None or val_acc > best:
            best = -1.0 if val_acc is None else val_acc
            best_state = {k: v.copy() for k, v in model.state_dict().items()}
        if on_epoch:
            on_epoch(row)
    model.load_state_dict(best_state)
    return history


# ----------------------------------------------------------------------------- the whole job

def pretrain(cfg, sources, out_path, on_recording=None, on_epoch=None):
    """Recordings (files or folders) -> a checkpoint of cfg.agent at out_path; returns the summary
    stored in its header under "pretrained". on_recording(info), on_epoch(row) report progress."""
    target = resolved(cfg)
    paths = find_recordings(sources)
    data = load_demonstrations(paths, target, on_recording)
    rng = np.random.default_rng(cfg.seed)
    model, learner = build_network(target, rng)
    train_rows, val_rows = data.split(cfg.val_fraction, rng)
    if len(train_rows) == 0:
        raise DemonstrationError(f"{len(data)} sample(s) are too few to hold some out: record more, "
                                 f"or set val_fraction 0")
    history = fit(model, data, train_rows, val_rows, cfg, rng, on_epoch)
    best = max(history, key=lambda r: -1.0 if r["val_accuracy"] is None else r["val_accuracy"]) \
        if len(val_rows) else history[-1]
    val_labels = data.labels[val_rows]
    loss = {"sigmoid": "binary cross-entropy on P(action 1)", "softmax": "softmax cross-entropy",
            "policy": "softmax cross-entropy on the policy's logits"}[target.head]
    summary = {
        "recordings": data.infos, "samples": len(data), "train_samples": int(len(train_rows)),
        "val_samples": int(len(val_rows)), "val_games": int(len(np.unique(data.game[val_rows]))),
        "dropped": int(sum(i["dropped"] for i in data.infos)),
        "label_counts": np.bincount(data.labels, minlength=target.n_actions).tolist(),
        "epochs": cfg.epochs, "best_epoch": best["epoch"], "train_accuracy": best["train_accuracy"],
        "val_accuracy": best["val_accuracy"],
        "val_majority": float(np.bincount(val_labels).max() / len(val_labels)) if len(val_labels) else None,
        "loss": loss + (" on the Q-values as logits" if target.agent == "dqn" else ""),
        "optimizer": "adam", "lr": cfg.lr, "batch_size": target.batch_size, "val_fraction": cfg.val_fraction,
        "seed": cfg.seed, "history": history,
    }
    write_checkpoint(out_path, target, model, learner, rng, summary)
    return summary


def write_checkpoint(path, target, model, learner, rng, summary):
    """The checkpoint a run of this agent writes at step 0, plus the "pretrained" summary."""
    header = {"config": config_dict(target.cfg), "env": target.spec, "step": 0, "episode": 0,
              "wall_seconds": 0.0, "pretrained": json.loads(json.dumps(summary))}
    if target.agent == "pg":
        header.update(pg.checkpoint_header(target.cfg, target.obs_shape, target.n_actions, rng))
        save_checkpoint(path, {"model": model}, header)
        return
    if target.agent == "ppo":
        models, fields, extra = learner.checkpoint()
        header.update({"agent": "ppo", "obs_shape": list(target.obs_shape), "n_actions": target.n_actions,
                       "obs_scale": target.obs_scale, "rng": rng.bit_generator.state, **fields})
        save_checkpoint(path, models, header, extra)
        return
    learner.target.load_state_dict(model.state_dict())
    models, fields, extra = learner.checkpoint()
    header.update({"agent": "dqn", "obs_shape": list(target.obs_shape), "n_actions": target.n_actions,
                   "obs_scale": target.obs_scale, "rng": rng.bit_generator.state, **fields})
    save_checkpoint(path, models, header, extra)
