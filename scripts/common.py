"""What every script shares: one-line errors with exit code 2, dataclass configs as flags, the BLAS
thread count, and the flag checks that several commands make alike."""
import argparse
import ast
import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import tokenize

from threadpoolctl import ThreadpoolController

import agents
from agents import distributed
from agents.evaluation import evaluate, play_rule
from agents.run import usable_cpus
from scripts.viewer import NoDisplayError, check_display


class UsageError(Exception):
    """A mistake the person can fix: printed as one line, exit code 2."""


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def others_cpu(since, now):
    """Cores kept busy by other processes between two cpu_clock() readings (None without /proc/stat)."""
    if since is None or now is None or now[2] <= since[2]:
        return None
    return max(0.0, ((now[0] - since[0]) - (now[1] - since[1])) / (now[2] - since[2]))


def cpu_clock():
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall seconds), or None
    where /proc/stat cannot be read (not Linux)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    own = os.times()
    busy = sum(ticks) - ticks[3] - ticks[4]  # steal counts as busy: another VM has the core
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()


class ThreadPolicy:
    """How many BLAS threads numpy runs with: a fixed number, or (auto) as many as the cores that
    other processes leave free, up to `cap`, decided at start and again at every poll().

    Why (scripts.bench threads, 2 cores): on an idle machine 2 threads took a DQN update to 0.77 of
    its 1-thread time and a batch-1 act to 0.71; with one CPU-burning process beside it, 2 threads
    made the update 1.4-2.7 times slower than 1 thread, and on a machine loaded further (load
    average 5) a batch-32 step 3-8 times and a batch-1 forward 2-60 times: OpenBLAS's threads wait
    on each other's time slices. Other processes' load is read from /proc/stat (the machine's busy
    time less this process's own) over the time since the last look, at most every POLL_SECONDS: a
    process that starts mid-run is seen at the next poll."""

    BUSY = 0.25  # cores used by other processes that already count as one taken core
    POLL_SECONDS = 2.0  # poll() looks again after this long
    START_SECONDS = 0.1  # the first look at the machine, before anything runs

    def __init__(self, fixed=None, cap=2):
        self.auto, self.cap = fixed is None, int(cap)
        self.cpus = usable_cpus()
        self.threads, self.changes, self.others = None, 0, None
        self._since = None
        self._controller, self._limiter = ThreadpoolController(), None
        if self.auto:
            self._since = cpu_clock()
            if self._since is not None:
                time.sleep(self.START_SECONDS)
            self._set(self._decide())
        else:
            self._set(int(fixed))

    def _decide(self):
        self._looked = time.monotonic()  # poll()'s own stamp: cpu_clock() may be another clock (a test's)
        now = cpu_clock()
        others = others_cpu(self._since, now)
        self._since = now
        if others is None:  # no /proc/stat: the one-minute load average, which counts this process too
            others = max(0.0, os.getloadavg()[0] - (self.threads or 0)) if hasattr(os, "getloadavg") else 1.0
        self.others = others
        taken = math.ceil(others - self.BUSY) if others > self.BUSY else 0  # whole cores other processes use
        return max(1, min(self.cap, self.cpus - taken))

    def _set(self, threads):
        if threads == self.threads:
            return
        self.changes += self.threads is not None
        self.threads = threads
        limiter = self._controller.limit(limits=threads, user_api="blas")
        self._limiter = self._limiter or limiter  # the first one knows the limits to restore

    def poll(self):
        """With auto: look at the machine again if POLL_SECONDS have passed (safe between numpy calls
        only: call it from the thread that runs them). Returns the threads now in use."""
        if self.auto and self._since is not None and time.monotonic() - self._looked >= self.POLL_SECONDS:
            self._set(self._decide())
        return self.threads

    def describe(self):
        """"2", or "auto (1 now)" for the config.json record and the bench tables."""
        return f"auto ({self.threads} now)" if self.auto else str(self.threads)

    def restore(self):
        if self._limiter is not None:
            self._limiter.restore_original_limits()


@contextlib.contextmanager
def blas_threads(flag=None, default="auto"):
    """`with blas_threads(args.blas_threads) as policy:` runs the command's numpy under a ThreadPolicy:
    --blas-threads N, else an inherited OPENBLAS_NUM_THREADS, else `default`: "auto" (both cores on
    an idle 2-core machine, 1 thread as soon as another process keeps a core busy; the command polls
    the policy between steps) or a number (1 where nothing polls it). Every command that runs a
    network goes through here."""
    if flag is not None and flag < 1:
        raise UsageError(f"--blas-threads must be >= 1, got {flag}")
    inherited = os.environ.get("OPENBLAS_NUM_THREADS", "")
    fixed = flag or (int(inherited) if inherited.isdigit() and int(inherited) > 0 else None)
    policy = ThreadPolicy(fixed if fixed else (None if default == "auto" else int(default)))
    try:
        yield policy
    finally:
        policy.restore()


def add_blas_threads_flag(parser, default_text):
    parser.add_argument("--blas-threads", type=int, default=None, metavar="N",
                        help=f"OpenBLAS threads (default: {default_text}; an inherited OPENBLAS_NUM_THREADS "
                             f"counts as the flag)")


# ----------------------------------------------------------------------------- the BLAS kernel, for benchmarks
KERNEL_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # OpenBLAS reads them once, when numpy loads


def blas_kernel():
    """{"kernel": the OpenBLAS kernel numpy's matmuls run ('Haswell', 'SkylakeX', ...), "pin": the
    OPENBLAS_CORETYPE that chose it, or None where OpenBLAS chose for this CPU itself}."""
    import numpy  # its own BLAS (numpy.libs/), not another library's: opencv brings an OpenBLAS of its own
    numpy_dir = os.path.dirname(os.path.abspath(numpy.__file__))  # .../numpy, a prefix of .../numpy.libs too
    blas = [i for i in ThreadpoolController().info() if i.get("user_api") == "blas"]
    blas = [i for i in blas if os.path.abspath(i.get("filepath", "")).startswith(numpy_dir)] or blas
    return {"kernel": blas[0].get("architecture") if blas else None, "pin": os.environ.get("OPENBLAS_CORETYPE") or None}


def add_kernel_flag(parser):
    parser.add_argument("--kernel", choices=("as-set", "native", "both"), default="both",
                        help="OpenBLAS kernel: as-set (as this environment loads it), native (OpenBLAS's own "
                             "choice for this CPU, in a second process without " + " and ".join(KERNEL_PINS) +
                             ") or both, one after the other (default; one run when nothing pins the kernel)")


def kernel_runs(args, run, summary):
    """A benchmark at the kernels --kernel asks for. run() measures in this process and returns its
    results (dicts, each already printed as a JSON line, each with its "blas": blas_kernel()); the
    native kernel is measured by the same command with `--kernel as-set` in a child process without
    the pins. summary(result) -> a short text of its figures; the figures of every run are printed
    last, side by side, and a final JSON line holds both sets. Returns the exit code."""
    pinned = any(os.environ.get(name) for name in KERNEL_PINS)
    runs = []  # one list of results per kernel
    if args.kernel != "native" or not pinned:
        runs.append(run())
    if args.kernel != "as-set" and pinned:
        cmd = [sys.executable, "-m", "scripts.bench", *args.argv, "--kernel", "as-set"]
        print(f"\nagain with OpenBLAS's own kernel for this CPU: {' '.join(cmd[1:])}, without "
              f"{' and '.join(KERNEL_PINS)}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in KERNEL_PINS}
        results = []
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) as child:
            for line in child.stdout:
                print(line, end="", flush=True)
                if line.startswith("{"):
                    results.append(json.loads(line))
        if child.returncode != 0:
            return child.returncode
        runs.append(results)
    if len(runs) > 1:
        print("\nby OpenBLAS kernel (the same command, one run after the other):")
        for result in (result for results in runs for result in results):
            kernel = result["blas"]
            how = f"OPENBLAS_CORETYPE={kernel['pin']}" if kernel["pin"] else "OpenBLAS's own choice"
            print(f"  {kernel['kernel']} ({how}): {summary(result)}")
        print(json.dumps({"bench": "kernels", "runs": [{**results[0]["blas"], "results": results}
                                                       for results in runs if results]}))
    return 0


def load_agent(path, seed):
    """agents.load, with a bad checkpoint as a UsageError (one line, exit 2)."""
    try:
        return agents.load(path, seed=seed)
    except agents.CheckpointError as e:
        raise UsageError(str(e)) from None


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")


# ----------------------------------------------------------------------------- flags several commands share

def check_workers(workers, ray_address):
    """--workers N [--ray-address A]: Ray is an optional extra, so say so before anything starts."""
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    if ray_address and not workers:
        raise UsageError("--ray-address needs --workers N")
    if workers and importlib.util.find_spec("ray") is None:
        raise UsageError('--workers needs Ray: pip install -e ".[distributed]"')


def add_worker_flags(parser, what):
    """--workers and --ray-address of the commands that score a checkpoint (evaluate, ship)."""
    parser.add_argument("--workers", type=int, default=0,
                        help=f"spread the {what} over N Ray actors (needs the distributed extra)")
    parser.add_argument("--ray-address", default="",
                        help="with --workers: join this Ray cluster (default: a local Ray)")


def check_scoring_flags(args):
    """What evaluate and ship check alike: --episodes >= 1 and the worker flags."""
    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    check_workers(args.workers, args.ray_address)


def play_games(path, agent, args, sticky, greedy, epsilon, explore, on_game, record=None, message=None,
               threads=None):
    """agents.evaluation.evaluate on this process (threads: the ThreadPolicy, polled after every
    step), or with --workers agents.distributed.evaluate on Ray actors; a cluster that cannot be
    reached, or actors that keep dying, are a UsageError."""
    if not args.workers:
        return evaluate(agent, args.episodes, seed=args.seed, sticky=sticky, explore=explore, on_game=on_game,
                        record_dir=record, message=message, between_steps=threads.poll if threads else None)
    try:
        return distributed.evaluate(path, agents.load, args.episodes, seed=args.seed, sticky=sticky, greedy=greedy,
                                    epsilon=epsilon, workers=args.workers, ray_address=args.ray_address,
                                    on_game=on_game)
    except distributed.WorkerError as e:
        raise UsageError(str(e)) from None


def check_window_flags(args):
    """--fps and --scale of the commands that open a window (watch, play, versus)."""
    if args.fps is not None and args.fps < 0:
        raise UsageError(f"--fps must be >= 0, got {args.fps:g}")
    if args.scale is not None and not 1 <= args.scale <= 8:
        raise UsageError(f"--scale must be 1 to 8, got {args.scale}")


def check_folder(flag, path):
    """A folder flag (--record, --out): the path must be a folder, or not exist yet."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: exists and is not a directory")


def writable_folder(flag, path):
    """Make the folder of a flag (--record, --out, --out-dir) and check a file can be written in it;
    a UsageError naming the flag when not, before any game is played."""
    check_folder(flag, path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def cannot_write(flag, path, error):
    """The UsageError of a file that could not be written (an OSError)."""
    return UsageError(f"{flag} {path}: cannot write it ({getattr(error, 'strerror', None) or error})")


def quietly_interrupted(main):
    """main() for the window programs: Ctrl-C ends them with exit code 0 and no traceback (the viewer's
    loop has already closed its session: play has saved the game cut short)."""
    try:
        return main()
    except KeyboardInterrupt:
        print(file=sys.stderr)  # past the ^C the terminal shows
        return 0


def check_record_dir(agent, record):
    """--record DIR: only Atari games are recorded, and DIR must be (or become) a folder."""
    if not agent.env["env_id"].startswith("ALE/"):
        raise UsageError(f"--record: recordings are for Atari games, not {agent.env['env_id']}")
    check_folder("--record", record)


def check_window(hint=""):
    """A window can open, or a UsageError says what to do instead."""
    try:
        check_display(hint)
    except NoDisplayError as e:
        raise UsageError(str(e)) from None


def add_greedy_flag(parser):
    """--greedy of the scripts that play a checkpoint (agents.evaluation.play_rule)."""
    parser.add_argument("--greedy", action="store_true",
                        help="take the best action every step: policy gradient the most likely instead of "
                             "sampling, DQN its argmax without the evaluation epsilon's random moves (a game "
                             "where the agent never serves, as Breakout can, runs to ALE's 108,000-frame cap)")


def add_epsilon_flag(parser):
    """--epsilon of the scripts that score or show a DQN checkpoint (agents.evaluation.play_rule)."""
    parser.add_argument("--epsilon", type=finite_float, default=None, metavar="E",
                        help="DQN: a random move with probability E each step instead of the checkpoint's "
                             "evaluation epsilon (Nature's 0.05); 0.01 is the final exploration that SB3's "
                             "zoo evaluates Atari DQN at and CleanRL's training curves report")


def play_rule_from_flags(agent, args):
    """agents.evaluation.play_rule with --greedy and --epsilon; a bad combination is a UsageError."""
    try:
        return play_rule(agent, args.greedy, args.epsilon)
    except ValueError as e:
        raise UsageError(f"--epsilon: {e}") from None


# ----------------------------------------------------------------------------- dataclass configs as flags

@functools.lru_cache(maxsize=None)
def field_comments(cls):
    """{field: its comment} read from the dataclass's source: the `# ...` after each field, with the
    comment lines right below it that go on with it. A Config's comments are its flags' help."""
    lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
    body = ast.parse("\n".join(lines)).body[0].body
    fields = [(node.target.id, node.end_lineno) for node in body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)]
    comments = {}
    for name, last in fields:
        parts = [trailing_comment(lines[last - 1])]
        for line in lines[last:]:
            if not line.strip().startswith("#"):
                break
            parts.append(line.strip()[1:].strip())
        comments[name] = " ".join(p for p in parts if p)
    return comments


def trailing_comment(line):
    """The text of a line's `# comment`, '' if it has none (a # inside a string is not one)."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(line + "\n").readline):
            if token.type == tokenize.COMMENT:
                return token.string[1:].strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return ""


def shown_default(value):
    """A default as a person types it: true/false, 'empty' for '', numbers as they are."""
    if isinstance(value, bool):
        return str(value).lower()
    return "empty" if value == "" else str(value)


def flag_help(cls, name, default=None):
    """A field's help line: its comment and its default (argparse's % escaped)."""
    default = shown_default(getattr(cls(), name)) if default is None else default
    text = field_comments(cls).get(name, "")
    return f"{text} (default: {default})".strip().replace("%", "%%")


def add_config_flags(parser, cls, skip=(), choices=None, title=None, names=None, defaults=None):
    """One --flag per dataclass field (underscores become dashes), defaulting to None = unchanged, with
    the field's comment as its help, its default and its choices ({name: values}, shown and checked).
    names: only these fields; defaults: {name: text} to show instead of the field's own default."""
    group = parser.add_argument_group(title or f"{cls.__module__.split('.')[-1]} settings")
    choices, defaults = choices or {}, defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in skip or (names is not None and f.name not in names):
            continue
        flag = "--" + f.name.replace("_", "-")
        text = flag_help(cls, f.name, defaults.get(f.name))
        if f.type in (bool, "bool"):
            group.add_argument(flag, dest=f.name, type=parse_bool, default=None, metavar="{true,false}", help=text)
        else:
            kind = {"int": whole_number, "float": finite_float, "str": str}.get(getattr(f.type, "__name__", f.type), str)
            metavar = None if f.name in choices else {whole_number: "N", finite_float: "X"}.get(kind, "TEXT")
            group.add_argument(flag, dest=f.name, type=kind, default=None, choices=choices.get(f.name), metavar=metavar,
                               help=text)
    return group


def finite_float(text):
    """A flag's number: nan and inf are refused in argparse's one line, as any other bad value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def whole_number(text):
    """A flag's whole number, also as people write step counts: 6_500_000, 1e6, 6.5e6."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def bounded(parse, ok, expected):
    """A flag type: parse(text) (finite_float, whole_number), then argparse's one line "{expected}, got
    'text'" unless ok(value)."""
    def check(text):
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value
    return check


positive_float = bounded(finite_float, lambda v: v > 0, "must be > 0")  # seconds, a temperature
at_least_one = bounded(whole_number, lambda v: v >= 1, "must be >= 1")  # epochs, repeats: 0 would run nothing
# numpy's generators and the envs take no negative seed
seed_value = bounded(whole_number, lambda v: v >= 0, "expected a seed >= 0")
# --fps of the windows: 0 runs as fast as it can
fps_value = bounded(finite_float, lambda v: v >= 0, "expected steps per second >= 0 (0: as fast as it can)")


def parse_bool(text):
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(cls, args, base=None):
    """Dataclass from base (or defaults) with every flag the person gave applied."""
    cfg = base or cls()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
               if getattr(args, f.name, None) is not None}
    return dataclasses.replace(cfg, **changes)
