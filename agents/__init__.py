"""agents: the learning algorithms, their run dirs and checkpoints; load() rebuilds a player from a file."""
from agents.dqn import QAgent
from agents.policy_gradient import PolicyAgent
from agents.ppo import PPOAgent
from agents.run import load_checkpoint
from nets.model import CheckpointError


def load(path, seed=0):
    """Rebuild a playing agent from a checkpoint file alone: agent.act(obs, explore) -> (actions, info).

    The agent carries `env` (the env spec it was trained on) so callers make the same env."""
    models, header, _ = load_checkpoint(path)
    kind = header.get("agent")
    env = header.get("env")
    if not isinstance(env, dict) or "env_id" not in env or "preset" not in env:
        raise CheckpointError(f"{path}: checkpoint has no env spec")
    n_actions = header.get("n_actions")
    if not isinstance(n_actions, int) or isinstance(n_actions, bool) or n_actions < 1:
        raise CheckpointError(f"{path}: checkpoint has a bad 'n_actions' ({n_actions!r})")
    if kind == "pg" and header.get("head") not in ("sigmoid", "softmax"):
        raise CheckpointError(f"{path}: checkpoint has a bad 'head' ({header.get('head')!r}), not sigmoid or softmax")
    try:
        if kind == "pg":
            agent = PolicyAgent(models["model"], header["head"], env, int(header["n_actions"]), seed)
        elif kind == "dqn":
            agent = QAgent.from_checkpoint(models, header, seed)
        elif kind == "ppo":
            agent = PPOAgent.from_checkpoint(models, header, seed)
        else:
            raise CheckpointError(f"{path}: unknown agent {kind!r}")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint is missing or has a bad {e}") from None
    agent.header = header
    agent.path = str(path)
    return agent
