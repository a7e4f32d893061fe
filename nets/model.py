"""Sequential models and their files: save a model with its architecture, load it back from the file alone."""
import json
import math

import numpy as np

from nets.conv import Conv2d, shared_input_forward
from nets.layers import Layer
from nets.npzfile import read_npz, versions, write_npz

FORMAT = "grok-arcade.nets"
FORMAT_VERSION = 1
MAX_MODEL_SIZE = 1 << 28  # sum over layers of the product of their integer settings: bounds the parameters


class CheckpointError(Exception):
    """A model or checkpoint file that is missing, truncated, corrupt, foreign or mismatched."""


def layer_types():
    """Every Layer subclass by class name: the registry used to rebuild models from files."""
    found, todo = {}, [Layer]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.setdefault(sub.__name__, sub)
            todo.append(sub)
    return found


class Sequential(Layer):
    """Layers applied in order; keeps the layer contract and names parameters '<index>.<name>'."""

    def __init__(self, *layers, dtype=np.float32):
        super().__init__(dtype)
        self.layers = list(layers)

    def config(self):
        return {}

    def spec(self):
        """JSON description that rebuilds this model (types and constructor arguments)."""
        return {"type": "Sequential", "layers": [layer_spec(layer) for layer in self.layers]}

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def train(self):
        return self._set_training(True)

    def eval(self):
        return self._set_training(False)

    def _set_training(self, flag):
        self.training = flag
        for layer in self.layers:
            if isinstance(layer, Sequential):
                layer._set_training(flag)
            layer.training = flag
        return self

    def parameters(self):
        """[(dotted_name, param, grad)]: the arrays themselves, so updates land in the model."""
        out = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Sequential):
                out += [(f"{i}.{n}", p, g) for n, p, g in layer.parameters()]
            else:
                out += [(f"{i}.{n}", layer.params[n], layer.grads[n]) for n in layer.params]
        return out

    def state_dict(self):
        return {name: p for name, p, _ in self.parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the existing parameters (in place, so optimizers keep their references)."""
        own = {name: p for name, p, _ in self.parameters()}
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"state_dict mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"parameter {name}: file has shape {value.shape}, model has {p.shape}")
            p[...] = value

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"


def forward_shared_input(models, x):
    """[model.forward(x) for model in models], the same numbers up to float rounding, with the first
    layers sharing their work when they are Conv2d layers of one shape and every model is in eval
    mode (no backward to come: the shared layers cache nothing): one im2col and one matmul
    (nets.conv). Double DQN's target and online networks both read s'."""
    firsts = [m.layers[0] if isinstance(m, Sequential) and m.layers and not m.training else None for m in models]
    if len(models) < 2 or not all(isinstance(f, Conv2d) and f.config() == firsts[0].config()
                                  and f.dtype == firsts[0].dtype for f in firsts):
        return [m.forward(x) for m in models]
    outs = []
    for model, y in zip(models, shared_input_forward(firsts, x)):
        for layer in model.layers[1:]:
            y = layer.forward(y)
        outs.append(y)
    return outs


class Parallel(Sequential):
    """Branches that read the same input side by side; their outputs are concatenated on axis 1,
    so (N, a) and (N, b) give (N, a + b). PPO's actor and critic towers on classic tasks are one."""

    def spec(self):
        return {"type": "Parallel", "layers": [layer_spec(layer) for layer in self.layers]}

    def forward(self, x):
        outs = [branch.forward(x) for branch in self.layers]  # [(N, k_i)]
        self.widths = [o.shape[1] for o in outs]
        return np.concatenate(outs, axis=1)  # (N, sum k_i)

    def backward(self, dy):
        dx, start = None, 0
        for branch, width in zip(self.layers, self.widths):
            d = branch.backward(dy[:, start:start + width])
            start += width
            if d is not None:
                dx = d if dx is None else dx + d
        return dx


def layer_spec(layer):
    if isinstance(layer, Sequential):
        return layer.spec()
    return {"type": type(layer).__name__, "config": layer.config()}


def build(spec, dtype=np.float32, _budget=None):
    """Rebuild a model from its spec (raises ValueError on anything unknown or implausibly large)."""
    budget = [MAX_MODEL_SIZE] if _budget is None else _budget
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError("model spec must be an object with a 'type'")
    if spec["type"] in ("Sequential", "Parallel"):
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise ValueError(f"{spec['type']} spec needs a list of layers")
        cls = Sequential if spec["type"] == "Sequential" else Parallel
        return cls(*[build(s, dtype, budget) for s in layers], dtype=dtype)
    cls = layer_types().get(spec["type"])
    if cls is None:
        raise ValueError(f"unknown layer type {spec['type']!r}")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"config of {spec['type']} must be an object")
    # a forged file must not make us allocate gigabytes before its arrays are even compared: by
    # default the bound is the product of the layer's numbers (a Linear's in x out), or the
    # layer's own size_bound(config) where that product is far too loose (a DuelingHead's)
    size = 1
    for key, value in config.items():
        values = value if isinstance(value, list) and 0 < len(value) <= 4 else [value]
        for v in values:
            if isinstance(v, bool):
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{spec['type']} config {key!r} must be numbers or a flag, got {value!r}")
            if v < 0:
                raise ValueError(f"{spec['type']} config {key!r} must be >= 0, got {value}")
            size *= max(int(v), 1)
    if hasattr(cls, "size_bound"):
        try:
            size = cls.size_bound(config)
        except (TypeError, ValueError):  # a list where a number belongs
            raise ValueError(f"{spec['type']} config {config} is not valid") from None
    budget[0] -= size
    if budget[0] < 0:
        raise ValueError(f"{spec['type']} config {config} makes the model implausibly large")
    return cls(**config, dtype=dtype)


def model_header(model, meta=None):
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": model.spec(),
        "dtype": str(model.dtype),
        "versions": versions("grok-arcade"),
        "meta": meta or {},
    }


def save(path, model, meta=None):
    """Write model (arrays + architecture + meta) to one .npz, atomically."""
    json.dumps(meta or {})  # fail before writing if meta is not JSON-able
    arrays = {f"model.{name}": p for name, p in model.state_dict().items()}
    write_npz(path, arrays, model_header(model, meta))


def model_from_arrays(arrays, header, path="file", prefix="model."):
    """Rebuild a model from a header's architecture and the arrays under prefix; CheckpointError if off."""
    try:
        dtype = np.dtype(header.get("dtype", "float32"))
        if dtype.kind != "f":
            raise ValueError(f"dtype {dtype} is not a float type")
        model = build(header["architecture"], dtype=dtype)
        state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        for name, value in state.items():
            if value.dtype != dtype:
                raise ValueError(f"parameter {name} has dtype {value.dtype}, expected {dtype}")
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: architecture does not match its arrays ({e})") from None
    return model


def check_header(header, path, fmt=FORMAT, version=FORMAT_VERSION):
    if header.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {fmt} file (format {header.get('format')!r})")
    if header.get("version") != version:
        raise CheckpointError(f"{path}: format version {header.get('version')!r}, this program reads {version}")


def load(path):
    """Return (model, meta) from a file written by save. Anything wrong raises CheckpointError."""
    arrays, header = read_npz(path, error=CheckpointError)
    check_header(header, path)
    model = model_from_arrays(arrays, header, path)
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta is not a JSON object")
    return model, meta
