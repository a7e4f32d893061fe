"""Pretrain an agent on recorded games: python -m scripts.pretrain --from RECORDINGS --agent pg|dqn|ppo --out CHECKPOINT.

Behaviour cloning (agents/pretrain.py): every recording is re-simulated, the agent's observations
are rebuilt as its preset makes them, and its network learns the recorded actions by cross-entropy
on whole games, some held out. RECORDINGS are files or folders of them, from scripts.evaluate
--record, scripts.watch --record or scripts.play. The checkpoint starts RL with
`python -m scripts.train --agent AGENT --game GAME --init CHECKPOINT` (same --hidden).
"""
import os
import sys

from agents import pretrain
from envs.recording import RecordingError
from scripts.common import (Parser, UsageError, add_blas_threads_flag, add_config_flags, blas_threads, config_from_args,
                            fail)


def build_parser(config_cls):
    p = Parser(prog="python -m scripts.pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="sources", nargs="+", required=True, metavar="RECORDINGS",
                   help="recordings (.npz) or folders holding them")
    p.add_argument("--out", required=True, metavar="CHECKPOINT", help="where to write the checkpoint (.npz)")
    p.add_argument("--agent", choices=list(pretrain.AGENTS), default="pg",
                   help="which agent to pretrain (default pg; ppo: its policy head, the value is left to RL)")
    add_blas_threads_flag(p, "1: more threads than free cores wait on each other's time slices")
    p.add_argument("--quiet", action="store_true", help="only the last line")
    add_config_flags(p, config_cls, skip=("agent",))
    return p


def check_out(path):
    if os.path.isdir(path):
        raise UsageError(f"--out {path}: is a directory; give a file name such as pong-pg-pretrained.npz")
    if not path.lower().endswith(".npz"):
        raise UsageError(f"--out {path}: a checkpoint is an .npz file; give a name such as pong-pg-pretrained.npz")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {path}: folder {folder} does not exist")


def train_flags(cfg, target):
    """The scripts.train flags that make the same network and env as the checkpoint."""
    flags = f"--agent {cfg.agent} --game {cfg.game}"
    if cfg.preset and target.cfg.preset != ("karpathy" if cfg.agent == "pg" else "deepmind"):
        flags += f" --preset {target.cfg.preset}"
    if cfg.agent == "ppo" and target.cfg.network != "small":
        flags += f" --network {target.cfg.network}"
    default_hidden = {"pg": 200, "dqn": 512, "ppo": {"small": 256, "nature": 512}.get(getattr(target.cfg, "network", ""))}
    if target.cfg.hidden != default_hidden[cfg.agent]:
        flags += f" --hidden {target.cfg.hidden}"
    return flags


def percent(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def main(argv=None):
    args = build_parser(pretrain.Config).parse_args(argv)
    try:
        check_out(args.out)  # before any env is made (ALE's banner would come first)
        cfg = config_from_args(pretrain.Config, args, pretrain.Config(agent=args.agent))
        pretrain.find_recordings(args.sources)  # the same: a missing file or an empty folder, at once
        try:
            target = pretrain.resolved(cfg)
        except ValueError as e:  # unknown game, bad preset or value
            raise UsageError(str(e).splitlines()[0]) from None
    except (UsageError, pretrain.DemonstrationError) as e:
        fail(str(e))

    def said(text):
        if not args.quiet:
            print(text, flush=True)

    def on_recording(info):
        said(f"{os.path.basename(info['path'])}: {info['agent_steps']} agent steps, {info['samples']} samples"
             f" ({info['dropped']} dropped), return {info['return']:g}, player {info['player']}")

    def on_epoch(row):
        said(f"epoch {row['epoch']:3d}/{cfg.epochs}  loss {row['loss']:.4f}  train {percent(row['train_accuracy'])}"
             f"  val {percent(row['val_accuracy'])}  {row['seconds']:.1f} s")

    try:  # every recording's header is read before the first (slow) replay: bad input fails at once
        with blas_threads(args.blas_threads, default=1):
            summary = pretrain.pretrain(cfg, args.sources, args.out, on_recording, on_epoch)
    except UsageError as e:
        fail(str(e))
    except (RecordingError, pretrain.DemonstrationError, FloatingPointError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {args.out}: {e.strerror or e}")
    except KeyboardInterrupt:
        print(f"interrupted: {args.out} was not written", file=sys.stderr)
        return 130
    game = target.spec["env_id"]
    print(f"saved {args.out}: {cfg.agent} on {game} ({target.spec['preset']}), {summary['train_samples']} training "
          f"and {summary['val_samples']} held-out samples; val accuracy {percent(summary['val_accuracy'])} "
          f"(majority action {percent(summary['val_majority'])}) at epoch {summary['best_epoch']}", flush=True)
    said(f"start RL from it: python -m scripts.train {train_flags(cfg, target)} --init {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
