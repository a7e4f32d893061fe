"""What every training loop shares: the run dir (config.json, progress.csv, metrics.csv, eval.csv,
checkpoint.npz, snapshots, curve.png), checkpoints and how a run starts from one (--resume, --init:
compatibility, the network an --init file decides), signals, NaN handling and the loop's stopwatch.

Agents call into a Run; they never print. Messages for people (a checkpoint that could not be
written, NaN updates) go through `run.message`, which the script points at its progress bar. Library
errors are exceptions (CheckpointError, ValueError, NumericalError) that scripts turn into one line.
"""
import csv
import dataclasses
import io
import json
import math
import os
import platform
import re
import signal
import sys
import time
from collections import deque

import numpy as np

from agents.curve import plot_progress
from nets.data import sha256_of
from nets.model import CheckpointError, check_header, model_from_arrays
from nets.npzfile import atomic_write, read_npz, read_npz_header, versions, write_npz

AGENT_FORMAT = "grok-arcade.agent"
AGENT_FORMAT_VERSION = 1
PROGRESS_FIELDS = ["step", "episode", "return", "length", "running_mean", "wall_seconds"]
EVAL_FIELDS = ["step", "mean_return", "std_return", "episodes", "wall_seconds"]
PACKAGES = ("grok-arcade", "gymnasium", "ale-py")  # whose versions checkpoints and run dirs record


def usable_cpus():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine():
    """What the run trained on, for config.json and the card: {"cpu": model name, "cores": CPUs this
    process may use, "cpus": CPUs in the machine, "system": "Linux x86_64"}."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = usable_cpus()
    return {"cpu": cpu or "unknown", "cores": cores, "cpus": os.cpu_count() or cores,
            "system": f"{platform.system()} {platform.machine()}"}


def machine_text(record):
    """'a 2-core CPU machine (AMD EPYC 7B13)' from a config.json's "machine", or None without one."""
    if not isinstance(record, dict) or not isinstance(record.get("cores"), int):
        return None
    return f"a {record['cores']}-core CPU machine ({record.get('cpu', 'unknown')})"
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class NumericalError(RuntimeError):
    """Training produced NaN/inf too many times in a row; the checkpoint was not overwritten."""


def check_update(learner, metrics, run):
    """After an update: a NaN/inf one (metrics["skipped"]) is said through run.message, and
    max_bad_updates of them in a row raise NumericalError (the last checkpoint stays as it was)."""
    if not metrics["skipped"]:
        return
    run.message(f"update at step {run.step} produced NaN/inf: skipped "
                f"({learner.bad_in_a_row} in a row, {learner.bad_total} in all)")
    if learner.bad_in_a_row >= learner.cfg.max_bad_updates:
        raise NumericalError(f"{learner.bad_in_a_row} updates in a row produced NaN/inf; stopped without "
                             f"overwriting {run.checkpoint_path}")


class Stopwatch:
    """Seconds spent per named part of the loop: mark(name) charges the time since the last mark."""

    def __init__(self):
        self.totals = {}
        self.last = time.perf_counter()

    def mark(self, name):
        now = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + now - self.last
        self.last = now


def deadline(hours, run):
    """time.monotonic() at which a run of `hours` of wall clock stops (inf for 0: no limit). The hours
    are the run's in all: a resumed run counts the wall seconds it had trained before."""
    return time.monotonic() + hours * 3600 - run.wall_seconds() if hours > 0 else math.inf


def finished(cfg, run, stop_at):
    """A stop was asked for, or total_steps or the deadline reached."""
    return run.stop_requested or bool(cfg.total_steps and run.step >= cfg.total_steps) or time.monotonic() >= stop_at


def write_text_atomic(path, text):
    with atomic_write(path, "w") as f:
        f.write(text)


def save_checkpoint(path, models, header, extra_arrays=None):
    """models: {prefix: Sequential}; header: agent, config, env spec, step, ... (JSON)."""
    arrays = {}
    for prefix, model in models.items():
        arrays.update({f"{prefix}.{n}": p for n, p in model.state_dict().items()})
    arrays.update(extra_arrays or {})
    main = models["model"]
    full = {"format": AGENT_FORMAT, "version": AGENT_FORMAT_VERSION,
            "architecture": main.spec(), "dtype": str(main.dtype),
            "models": sorted(models), "versions": versions(*PACKAGES), **header}
    write_npz(path, arrays, full)


def checkpoint_header(path):
    """The header of an agent checkpoint, without loading its weights; CheckpointError if it is not one."""
    header = read_npz_header(path, error=CheckpointError)
    check_header(header, path, AGENT_FORMAT, AGENT_FORMAT_VERSION)
    return header


def load_checkpoint(path):
    """Return (models {prefix: model}, header, other arrays). Anything off raises CheckpointError."""
    arrays, header = read_npz(path, error=CheckpointError)
    check_header(header, path, AGENT_FORMAT, AGENT_FORMAT_VERSION)
    for key in ("agent", "config", "env"):
        if not isinstance(header.get(key), (str, dict)):
            raise CheckpointError(f"{path}: checkpoint has no {key!r}")
    prefixes = header.get("models", ["model"])
    if not isinstance(prefixes, list) or "model" not in prefixes:
        raise CheckpointError(f"{path}: checkpoint lists no model")
    models = {}
    for prefix in prefixes:
        if not isinstance(prefix, str):
            raise CheckpointError(f"{path}: bad model name {prefix!r}")
        models[prefix] = model_from_arrays(arrays, header, path, prefix=f"{prefix}.")
    rest = {k: v for k, v in arrays.items() if k.split(".", 1)[0] not in prefixes}
    return models, header, rest


# ----------------------------------------------------------------------------- starting from a checkpoint

# settings that shape the network: an --init checkpoint decides them unless they are given
NETWORK_FIELDS = ("hidden", "head", "network", "dueling", "quantiles")


def read_run_record(run_dir):
    """A run dir's config.json (config, env, command, resumes, init); ValueError if there is none."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir}: no such run dir")
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            record = json.load(f)
        if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
            raise ValueError("not an object")
        return record
    except (OSError, ValueError):
        raise ValueError(f"{run_dir}: missing or damaged config.json") from None


def load_run_config(run_dir):
    """The settings a run in run_dir was started with; ValueError if it is not a run dir."""
    record = read_run_record(run_dir)
    if "config" not in record:
        raise ValueError(f"{run_dir}: missing or damaged config.json")
    return record["config"]


def check_compatible(header, cfg, env, path):
    """A checkpoint must be for the same agent, game and preset as the run it starts; CheckpointError."""
    other = header.get("env", {})
    if header.get("agent") != cfg.agent:
        raise CheckpointError(f"{path} is a {header.get('agent')} checkpoint, not {cfg.agent}")
    if other.get("env_id") != env["env_id"] or other.get("preset") != env["preset"]:
        raise CheckpointError(f"{path} is for {other.get('env_id')} ({other.get('preset')}), "
                              f"not {env['env_id']} ({env['preset']})")


def network_from_checkpoint(cfg, given, header, path, resolve):
    """cfg with the network settings of the checkpoint at path (header: its header). given: the
    settings the person set ({name: value or None}); one that differs from the file's is a
    ValueError, but for quantiles K on a plain DQN file (agents.dqn.init_weights starts a QR
    network from it). resolve: the agent's resolved()."""
    saved = header.get("config", {}) if isinstance(header.get("config"), dict) else {}
    saved = {"quantiles": 0, **saved}  # a DQN file from before QR-DQN holds one value per action
    changes = {}
    for name in NETWORK_FIELDS:
        if name not in saved or not hasattr(cfg, name):
            continue
        value = given.get(name)
        if name == "quantiles" and value and not saved[name]:
            changes[name] = value
            continue
        if value is not None and value != saved[name] and not (name == "head" and value == "auto"):
            raise ValueError(f"{name} {value} does not fit {path}, whose network has {name} {saved[name]}")
        changes[name] = saved[name]
    try:
        return resolve(dataclasses.replace(cfg, **changes))
    except ValueError as e:
        raise ValueError(f"{path}: {str(e).splitlines()[0]}") from None


def init_summary(path, header):
    """What an --init checkpoint brings to a run's record: which file (and its sha256) and the
    training it holds, its own plus what it was itself continued from ("trained_before")."""
    before = header.get("trained_before") if isinstance(header.get("trained_before"), dict) else {}

    def total(key, kind):
        values = [record.get(key, 0) for record in (header, before)]
        return kind(sum(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)))

    return {"path": path, "sha256": sha256_of(path), "step": total("step", int), "episode": total("episode", int),
            "wall_seconds": total("wall_seconds", float)}


class Run:
    """The run dir of one training run; a resumed run calls restore(header) with its checkpoint's."""

    def __init__(self, run_dir, config, env, checkpoint_minutes=5.0, message=None, keep_snapshots=0,
                 tensorboard=False, video_every=0):
        """tensorboard: also write every scalar of progress.csv, metrics.csv and eval.csv as TensorBoard
        events into the run dir (the optional tensorboardX); video_every: one recorded evaluation game
        every that many episodes, into videos/ (agents.evaluation.SideGames plays it)."""
        self.dir = os.path.abspath(run_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.config = config
        self.env = env
        self.checkpoint_seconds = float(checkpoint_minutes) * 60.0
        self.keep_snapshots = int(keep_snapshots)  # playing weights kept from the last saves (0: none)
        self.message = message or (lambda text: print(text, file=sys.stderr))
        self.between_steps = None  # called by due() at every turn of the loop (scripts: the BLAS thread policy)
        self.returns = deque(maxlen=100)
        self.step = 0
        self.episode = 0
        self.wall_offset = 0.0
        self.started = time.monotonic()
        self.last_checkpoint = time.monotonic()
        self.last_curve = -math.inf
        self.stop_requested = False
        self.failed_writes = 0
        self._old_handlers = {}
        self.tensorboard, self.board = bool(tensorboard), None
        self.video_every = int(video_every)
        self.remove_stale_temp_files()

    # ------------------------------------------------------------------ files
    def remove_stale_temp_files(self):
        """A run killed mid-write leaves a .tmp-* file beside the intact checkpoint: remove it."""
        for name in os.listdir(self.dir):
            if name.startswith(".tmp-"):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except OSError:
                    pass

    @property
    def checkpoint_path(self):
        return os.path.join(self.dir, "checkpoint.npz")

    @property
    def progress_path(self):
        return os.path.join(self.dir, "progress.csv")

    def write_config(self, step=0, init=None, blas_threads=None, started_with=None):
        """config.json: settings, env, versions and the command; a resume keeps the first command
        and adds itself, with the step it resumed from, to "resumes", so the card of a shipped agent
        shows how it really trained (a flag changed on a resume took effect from that step).
        init: what an --init checkpoint brought (path, sha256, its steps, episodes and wall seconds),
        kept by every resume, so a shipped agent's card counts the training its weights started from.
        blas_threads: the BLAS threads the command runs with (else OPENBLAS_NUM_THREADS, as inherited).
        started_with: more members for the record of how the run started (the game id typed and where its
        protocol came from, the recipe file); a resume keeps the first start's."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        threads = str(blas_threads) if blas_threads is not None else os.environ.get("OPENBLAS_NUM_THREADS")
        record = {"config": self.config, "env": self.env, "versions": versions(*PACKAGES),
                  "command": sys.argv, "blas_threads": threads, "machine": machine(), "started": now,
                  "resumes": []}
        if init is not None:
            record["init"] = init
        record.update(started_with or {})
        try:
            with open(os.path.join(self.dir, "config.json")) as f:
                old = json.load(f)
            if isinstance(old, dict) and isinstance(old.get("command"), list):
                record["command"], record["started"] = old["command"], old.get("started", now)
                record["blas_threads"], record["machine"] = old.get("blas_threads"), old.get("machine")
                if isinstance(old.get("init"), dict):
                    record["init"] = old["init"]
                for key in started_with or {}:
                    if key in old:
                        record[key] = old[key]
                record["resumes"] = list(old.get("resumes", [])) + [
                    {"command": sys.argv, "blas_threads": threads, "machine": machine(), "at": now,
                     "step": int(step)}]
        except (OSError, ValueError):
            pass
        write_text_atomic(os.path.join(self.dir, "config.json"), json.dumps(record, indent=2) + "\n")
        if not os.path.exists(self.progress_path):
            write_text_atomic(self.progress_path, ",".join(PROGRESS_FIELDS) + "\n")

    def wall_seconds(self):
        return self.wall_offset + time.monotonic() - self.started

    def scalars(self, values, step=None):
        """{tag: number} as TensorBoard scalars at agent step `step` (default: now), when the run
        writes them. The writer opens on first use, after a resume has restored the step, and
        purges what an earlier writer logged past it (rows the CSVs dropped too)."""
        if not self.tensorboard:
            return
        if self.board is None:
            from tensorboardX import SummaryWriter  # optional extra: pip install -e ".[tensorboard]"
            self.board = SummaryWriter(self.dir, purge_step=self.step or None, flush_secs=30)
        step = self.step if step is None else step
        for tag, value in values.items():
            self.board.add_scalar(tag, float(value), int(step))

    def log_episode(self, ret, length):
        """One finished episode: append a progress row; returns the running mean (last 100)."""
        self.episode += 1
        self.returns.append(float(ret))
        mean = float(np.mean(self.returns))
        row = [self.step, self.episode, f"{ret:g}", int(length), f"{mean:.4f}", f"{self.wall_seconds():.1f}"]
        try:
            with open(self.progress_path, "a", newline="") as f:
                csv.writer(f).writerow(row)
        except OSError as e:
            self.message(f"could not append to {self.progress_path}: {e.strerror or e}")
        self.scalars({"charts/episodic_return": ret, "charts/episodic_length": length, "charts/running_mean": mean})
        return mean

    def count(self, steps, episodes, callback=None):
        """steps more agent steps, then each finished episode (return, length) logged, with an
        "episode" event for callback (games: how many returns the running mean is over)."""
        self.step += steps
        for ret, length in episodes:
            mean = self.log_episode(ret, length)
            if callback:
                callback({"event": "episode", "step": self.step, "episode": self.episode, "return": ret,
                          "length": length, "running_mean": mean, "games": len(self.returns),
                          "wall_seconds": self.wall_seconds()})

    @property
    def metrics_path(self):
        return os.path.join(self.dir, "metrics.csv")

    def log_update(self, metrics, callback=None):
        """Training metrics (loss, mean Q, epsilon, seconds per part, ...): one row of metrics.csv,
        then callback({"event": "update", "step": ..., **metrics}) when there is a callback.

        Numbers only; a nested dict {"seconds": {"act": 1.2}} becomes the column seconds_act. A
        row without a column leaves it empty; a row with a new one (the loss, once learning starts)
        rewrites the file with that column added."""
        row = {"step": self.step, "wall_seconds": f"{self.wall_seconds():.1f}"}
        for key, value in metrics.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in items:
                name = key if sub is None else f"{key}_{sub}"
                if name in row or not isinstance(v, (int, float, np.integer, np.floating)):
                    continue  # bools are ints: a skipped update logs skipped=1
                row[name] = int(v) if isinstance(v, (int, np.integer)) else f"{float(v):.6g}"
        try:
            fields, rows = [], []
            if os.path.exists(self.metrics_path):
                with open(self.metrics_path, newline="") as f:
                    fields = next(csv.reader(f), [])
            if not fields or set(row) - set(fields):
                if fields:
                    with open(self.metrics_path, newline="") as f:
                        rows = list(csv.DictReader(f))
                fields = fields + [k for k in row if k not in fields]
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fields)
                writer.writeheader()
                writer.writerows(rows)
                write_text_atomic(self.metrics_path, buf.getvalue())
            with open(self.metrics_path, "a", newline="") as f:
                csv.DictWriter(f, fields).writerow(row)
        except OSError as e:
            self.message(f"could not append to {self.metrics_path}: {e.strerror or e}")
        self.scalars({f"metrics/{k}": float(v) for k, v in row.items() if k not in ("step", "wall_seconds")})
        if callback:
            callback({"event": "update", "step": self.step, **metrics})

    @staticmethod
    def _truncate_csv(path, column, last):
        """Keep the header and the rows whose int `column` is <= last; returns the rows kept."""
        if not os.path.exists(path):
            return []
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return []
        keep = [rows[0]]
        for row in rows[1:]:
            try:
                if int(row[column]) <= last:
                    keep.append(row)
            except (ValueError, IndexError):
                continue
        buf = io.StringIO()
        csv.writer(buf).writerows(keep)
        write_text_atomic(path, buf.getvalue())
        return keep

    def truncate_progress(self, episode):
        """On resume: drop rows written after the checkpoint, so the CSVs match the state."""
        self._truncate_csv(self.metrics_path, 0, self.step)
        keep = self._truncate_csv(self.progress_path, 1, episode)
        if not keep:
            return
        for row in keep[-100:][1 if keep[0] == PROGRESS_FIELDS else 0:]:
            try:
                self.returns.append(float(row[2]))
            except (ValueError, IndexError):
                pass

    # ------------------------------------------------------------------ checkpoints
    def due(self):
        """Is a checkpoint due? Every training loop asks once per turn, between its numpy calls, so
        between_steps gets its turn here too."""
        if self.between_steps is not None:
            self.between_steps()
        return self.stop_requested or time.monotonic() - self.last_checkpoint >= self.checkpoint_seconds

    def save(self, models, header, extra_arrays=None, final=False):
        """Write checkpoint.npz atomically; on failure keep the old one, say so, carry on.
        The curve is redrawn at most once a minute (matplotlib is slow) and on the final save."""
        header = {**header, "config": self.config, "env": self.env, "step": self.step,
                  "episode": self.episode, "wall_seconds": self.wall_seconds()}
        self.last_checkpoint = time.monotonic()
        try:
            save_checkpoint(self.checkpoint_path, models, header, extra_arrays)
        except OSError as e:
            self.failed_writes += 1
            self.message(f"could not write {self.checkpoint_path}: {e.strerror or e}; "
                         f"keeping the previous checkpoint, retrying in {self.checkpoint_seconds / 60:g} min")
            return False
        if self.keep_snapshots > 0:
            self.write_snapshot(models["model"], header)
        if final or time.monotonic() - self.last_curve >= 60.0:
            self.write_curve()
        return True

    @property
    def snapshot_dir(self):
        return os.path.join(self.dir, "snapshots")

    def write_snapshot(self, model, header):
        """snapshots/step-NNNNNNNNN.npz: the playing weights of this save (model only, as
        export_for_playing keeps them), the last keep_snapshots of them; SB3's CheckpointCallback
        keeps such copies too. scripts.ship --average K ships the mean of the last K."""
        keep = playing_header(header)
        try:
            os.makedirs(self.snapshot_dir, exist_ok=True)
            save_checkpoint(os.path.join(self.snapshot_dir, f"step-{self.step:09d}.npz"), {"model": model}, keep)
            for old in snapshot_paths(self.dir)[:-self.keep_snapshots]:
                os.unlink(old)
        except OSError as e:
            self.message(f"could not write a snapshot in {self.snapshot_dir}: {e.strerror or e}")

    def write_curve(self):
        self.last_curve = time.monotonic()
        try:
            plot_progress(self.progress_path, os.path.join(self.dir, "curve.png"),
                          title=f"{self.env.get('env_id', '')} {self.config.get('agent', '')}")
        except Exception as e:  # a plot must never stop training
            self.message(f"could not draw the learning curve: {e}")

    def restore(self, header):
        self.step = int(header.get("step", 0))
        self.episode = int(header.get("episode", 0))
        self.wall_offset = float(header.get("wall_seconds", 0.0))
        self.truncate_progress(self.episode)

    # ------------------------------------------------------------------ signals
    def __enter__(self):
        # SIGHUP: the terminal closed. It saves and stops as Ctrl-C and SIGTERM do, rather than
        # losing the minutes since the last checkpoint
        for sig in STOP_SIGNALS:
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        if self.board is not None:
            self.board.close()
            self.board = None
        return False

    def _on_signal(self, signum, frame):
        if self.stop_requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True


class EvalLog:
    """eval.csv in the run dir: one row per evaluation."""

    def __init__(self, run):
        self.path = os.path.join(run.dir, "eval.csv")
        self.run = run

    def start(self, resumed_step):
        """Create the file, or on resume drop rows written after the checkpoint."""
        rows = [EVAL_FIELDS]
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                old = list(csv.reader(f))
            rows += [r for r in old[1:] if r and r[0].isdigit() and int(r[0]) <= resumed_step]
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerows(rows)

    def append(self, step, summary):
        row = [step, f"{summary['mean_return']:.4f}", f"{summary['std_return']:.4f}", summary["episodes"],
               f"{self.run.wall_seconds():.1f}"]
        try:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow(row)
        except OSError as e:
            self.run.message(f"could not append to {self.path}: {e.strerror or e}")
        self.run.scalars({"eval/mean_return": summary["mean_return"], "eval/std_return": summary["std_return"]},
                         step)


def home_relative(path):
    """path made absolute, with the home directory written ~: files that travel name no machine's home."""
    path, home = os.path.abspath(path), os.path.expanduser("~")
    return "~" + path[len(home):] if home not in ("", "/") and path.startswith(home + os.sep) else path


def config_dict(cfg):
    return dataclasses.asdict(cfg)


def playing_header(header):
    """The header fields that rebuild a player: none of the file format's own, nor optimizer or RNG state."""
    return {k: v for k, v in header.items()
            if k not in ("format", "version", "architecture", "dtype", "models", "versions", "rng",
                         "optim", "optimizer")}


def snapshot_paths(run_dir):
    """The run's snapshots (Run.write_snapshot), oldest first."""
    folder = os.path.join(run_dir, "snapshots")
    if not os.path.isdir(folder):
        return []
    names = [n for n in os.listdir(folder) if re.fullmatch(r"step-\d{9}\.npz", n)]
    return [os.path.join(folder, n) for n in sorted(names)]


def averaged_weights(paths):
    """The element-wise mean of the "model" weights in paths (checkpoints of one network, as in
    Polyak averaging and SWA, Izmailov et al. 2018), summed in float64 and returned in float32 in a
    model of the last file's architecture; CheckpointError if the files do not hold the same network."""
    model, sums = None, None
    for path in paths:
        models, header, _ = load_checkpoint(path)
        if model is not None and models["model"].spec() != model.spec():
            raise CheckpointError(f"{path}: a different network from {paths[0]}, cannot average them")
        model = models["model"]
        state = model.state_dict()
        sums = ({k: v.astype(np.float64) for k, v in state.items()} if sums is None
                else {k: sums[k] + state[k] for k in sums})
    model.load_state_dict({k: (v / len(paths)).astype(np.float32) for k, v in sums.items()})
    return model


def export_for_playing(src, dst, before=None, average=()):
    """Copy a checkpoint keeping only what playing needs: the policy / online network in float32
    and the header fields that rebuild it (no optimizer, target network, RNG or replay state).
    before: the run's --init record (config.json's "init"), kept as "trained_before" so that a run
    continued from this file counts all the training behind it.
    average: checkpoints of the same run (snapshots) whose weights are averaged with src's; their
    steps are kept as "averaged_steps"."""
    models, header, _ = load_checkpoint(src)
    model = averaged_weights([*average, src]) if average else models["model"]
    if model.dtype != np.float32:
        raise CheckpointError(f"{src}: weights are {model.dtype}, shipped checkpoints are float32")
    keep = playing_header(header)
    keep["exported_from"] = {"path": home_relative(src), "step": header.get("step"),
                             "episode": header.get("episode")}
    if isinstance(before, dict):
        keep["trained_before"] = before
    if average:
        keep["averaged_steps"] = [checkpoint_header(p).get("step") for p in average] + [header.get("step")]
    save_checkpoint(dst, {"model": model}, keep)
    return keep
