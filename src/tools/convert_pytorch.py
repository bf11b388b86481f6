"""Converts checkpoints between the PyTorch MoCo CIFAR demo and this project.

The direction follows the file extensions::

    # demo checkpoint ({'epoch', 'state_dict', 'optimizer'} or a bare state_dict) -> ours
    python -m src.tools.convert_pytorch model_last.pth model_last.ckpt --bn-splits 8
    # ours -> demo-style {'epoch', 'state_dict', 'optimizer'}
    python -m src.tools.convert_pytorch model_last.ckpt model_last.pth

What maps onto what:

* ``encoder_{q,k}.net.*``: names are identical except BatchNorm's ``weight``/``bias``/
  ``running_mean``/``running_var``, ours ``gamma``/``beta``/``moving_mean``/``moving_variance``.
* ``queue``: the demo stores it C x K (one key per column), we store K x C (one per row).
* ``queue_ptr``: int64 there, int32 here.
* ``num_batches_tracked``: our BatchNorm does not count batches (and the demo's split BN never
  increments it either; it only matters for ``momentum=None``). Non-zero counts (the demo with
  ``bn_splits 1`` uses ``nn.BatchNorm2d``) are kept as extra int64 entries of the ``.ckpt`` so
  that a round trip is exact; missing counts are exported as 0.
* Optimizer: the demo's ``SGD(model.parameters(), momentum=0.9)`` keeps one ``momentum_buffer``
  per encoder_q weight, indexed by position in ``model.parameters()``; they become our
  ``moments.encoder_q.*`` (the same recursion ``v <- m v + g + wd w``, zeros if absent), the
  group's ``lr`` and ``momentum`` our ``learning_rate`` and ``momentum``. ``global_step`` has no
  counterpart (a constant-lr ``nn.Momentum`` ignores it): 0 on import, dropped on export.
* Split-BN scratch copies of the running statistics (``SplitBatchNorm.split_mean``/
  ``split_variance``) are transient: dropped on export; on import written (the tiled running
  statistics) only if ``save_checkpoint`` writes them for this model.
* Metadata: ``arch``, ``moco_dim`` and ``moco_k`` are inferred from the tensors; ``bn_splits`` and
  ``symmetric`` are not visible in a state_dict and come from ``--bn-splits`` (default 8, the
  demo's) and ``--symmetric``. ``main.py --resume`` refuses a checkpoint whose values differ
  from its config, so pass the values the demo run used.

Every tensor is mapped by name and its shape checked against the model that the metadata
describes; anything left over on either side is an error that lists the names.

The pure functions (name mapping, dict conversion, schema check) work on NumPy arrays and need
neither file I/O nor PyTorch; ``torch`` is imported only when a ``.pth`` file is read or written,
MindSpore only when a model or a ``.ckpt`` is involved. In memory, ``mindspore_model_state`` and
``mindspore_state_to_torch`` give a MoCo cell's tensors as the demo's ``state_dict`` (and
``torch_state_to_mindspore`` with ``load_mindspore_model_state`` the way back).
"""

import argparse
import functools
import os
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

__all__ = [
    "ConversionError",
    "torch_to_mindspore_name",
    "mindspore_to_torch_name",
    "torch_state_to_mindspore",
    "mindspore_state_to_torch",
    "torch_parameter_names",
    "torch_optimizer_to_mindspore",
    "mindspore_optimizer_to_torch",
    "infer_model_config",
    "check_against_schema",
    "mindspore_model_state",
    "load_mindspore_model_state",
    "model_schema",
    "convert_pth_to_ckpt",
    "convert_ckpt_to_pth",
    "main",
]

PTH_EXTENSIONS = (".pth", ".pt")
CKPT_EXTENSIONS = (".ckpt",)

# BatchNorm tensors: PyTorch leaf name -> ours.
BN_TORCH_TO_MS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                  "running_var": "moving_variance"}
BN_MS_TO_TORCH = {ms_name: torch_name for torch_name, ms_name in BN_TORCH_TO_MS.items()}
BN_BUFFERS_MS = ("moving_mean", "moving_variance")
NUM_BATCHES_TRACKED = "num_batches_tracked"
ENCODER_PREFIXES = ("encoder_q.", "encoder_k.")
QUEUE, QUEUE_PTR = "queue", "queue_ptr"
MOMENTS_PREFIX = "moments."
LEARNING_RATE, MOMENTUM, GLOBAL_STEP = "learning_rate", "momentum", "global_step"
EPOCH = "epoch"
# Metadata written by src.train.checkpoint.save_checkpoint (besides the epoch).
MODEL_KEYS = ("arch", "moco_dim", "moco_k", "bn_splits", "symmetric")
# The demo's defaults for what a state_dict does not reveal.
DEFAULT_BN_SPLITS = 8
DEFAULT_LR = 0.06
DEFAULT_MOMENTUM = 0.9
DEFAULT_WEIGHT_DECAY = 5e-4
# Blocks per stage of the supported backbones (as src.models.resnet.ARCHS).
ARCH_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STAGE_INDICES = (3, 4, 5, 6)  # net.3 .. net.6 are layer1 .. layer4


class ConversionError(ValueError):
    """A checkpoint cannot be converted: unknown or missing tensors, wrong shapes, bad file."""


# --------------------------------------------------------------------------- name mapping

def _split_name(name: str) -> Tuple[str, str]:
    module, _, leaf = name.rpartition(".")
    return module, leaf


def _bn_modules(names: Iterable[str], marker: str) -> Set[str]:
    """Modules that own a tensor called ``marker`` (``running_mean`` / ``moving_mean``)."""
    return {module for module, leaf in map(_split_name, names) if leaf == marker}


def torch_to_mindspore_name(name: str, bn_modules: Set[str]) -> Optional[str]:
    """Maps one demo ``state_dict`` key to our parameter name.

    Args:
        name: PyTorch key, e.g. ``"encoder_q.net.1.running_var"``.
        bn_modules: Module paths that are BatchNorms (they own a ``running_mean``).

    Returns:
        Our name (``"encoder_q.net.1.moving_variance"``), or ``None`` for
        ``num_batches_tracked``, which has no parameter of its own here.
    """
    module, leaf = _split_name(name)
    if module in bn_modules:
        if leaf == NUM_BATCHES_TRACKED:
            return None
        if leaf in BN_TORCH_TO_MS:
            return f"{module}.{BN_TORCH_TO_MS[leaf]}"
    return name


def mindspore_to_torch_name(name: str, bn_modules: Set[str]) -> str:
    """Maps one of our parameter names to the demo's ``state_dict`` key.

    Args:
        name: Our name, e.g. ``"encoder_k.net.3.0.bn1.gamma"``.
        bn_modules: Module paths that are BatchNorms (they own a ``moving_mean``).

    Returns:
        The PyTorch key, e.g. ``"encoder_k.net.3.0.bn1.weight"``.
    """
    module, leaf = _split_name(name)
    if module in bn_modules and leaf in BN_MS_TO_TORCH:
        return f"{module}.{BN_MS_TO_TORCH[leaf]}"
    return name


# --------------------------------------------------------------------------- model tensors

def torch_state_to_mindspore(state_dict: Mapping[str, np.ndarray]
                             ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], Dict[str, str]]:
    """Converts the demo's ``state_dict`` (as NumPy arrays) to our model tensors.

    Args:
        state_dict: ``{key: array}`` of ``ModelMoCo`` (both encoders, ``queue``, ``queue_ptr``).

    Returns:
        ``(params, counts, origin)``: our ``{name: array}`` (queue transposed to K x C,
        ``queue_ptr`` int32), the non-zero ``num_batches_tracked`` counts under their PyTorch
        keys, and ``{our name: PyTorch key}`` for error messages.

    Raises:
        ConversionError: If the queue is not 2-D or two keys map onto the same name.
    """
    bn_modules = _bn_modules(state_dict, "running_mean")
    params, counts, origin = {}, {}, {}
    for key, value in state_dict.items():
        value = np.asarray(value)
        name = torch_to_mindspore_name(key, bn_modules)
        if name is None:
            if value.any():
                counts[key] = value.astype(np.int64).reshape(())
            continue
        if name == QUEUE:
            if value.ndim != 2:
                raise ConversionError(f"queue must be 2-D (dim x K), got shape {value.shape}")
            value = np.ascontiguousarray(value.T)  # C x K -> K x C
        elif name == QUEUE_PTR:
            value = value.astype(np.int32)
        if name in params:
            raise ConversionError(f"{origin[name]} and {key} both map onto {name}")
        params[name], origin[name] = value, key
    return params, counts, origin


def _torch_order(names: Iterable[str], bn_modules: Set[str]) -> List[str]:
    """Our names in PyTorch ``state_dict`` order.

    PyTorch lists a module's own tensors (parameters, then buffers) before its children's,
    so ``queue``/``queue_ptr`` come first and each BatchNorm's running statistics follow its
    weight and bias; modules keep their order of first appearance.
    """
    names = list(names)
    first = {}
    for name in names:
        first.setdefault(_split_name(name)[0], len(first))
    leaf_rank = {leaf: rank for rank, leaf in enumerate(("gamma", "beta", *BN_BUFFERS_MS))}

    def key(item):
        index, name = item
        module, leaf = _split_name(name)
        if not name.startswith(ENCODER_PREFIXES):
            return (0, index, 0)
        return (1, first[module], leaf_rank.get(leaf, -1) if module in bn_modules else index)

    return [name for _, name in sorted(enumerate(names), key=key)]


def mindspore_state_to_torch(params: Mapping[str, np.ndarray],
                             counts: Optional[Mapping[str, np.ndarray]] = None
                             ) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Converts our model tensors to the demo's ``state_dict`` layout (NumPy arrays).

    Args:
        params: Our ``{name: array}`` of both encoders, ``queue`` (K x C) and ``queue_ptr``;
            no optimizer entries, no split-BN scratch.
        counts: ``num_batches_tracked`` values under their PyTorch keys; missing ones are 0.

    Returns:
        ``(state_dict, origin)``: PyTorch ``{key: array}`` with ``queue`` C x K, ``queue_ptr``
        int64 and a ``num_batches_tracked`` after each BatchNorm's ``running_var``, in the
        demo's order (queue and pointer first, then ``params``' order); ``{PyTorch key: our
        name}``.

    Raises:
        ConversionError: If a count names no BatchNorm of ``params``.
    """
    counts = dict(counts or {})
    bn_modules = _bn_modules(params, "moving_mean")
    state, origin = {}, {}
    for name in _torch_order(params, bn_modules):
        value = params[name]
        value = np.asarray(value)
        key = mindspore_to_torch_name(name, bn_modules)
        if name == QUEUE:
            value = np.ascontiguousarray(value.T)  # K x C -> C x K
        elif name == QUEUE_PTR:
            value = value.astype(np.int64)
        state[key], origin[key] = value, name
        module, leaf = _split_name(name)
        if module in bn_modules and leaf == "moving_variance":
            count_key = f"{module}.{NUM_BATCHES_TRACKED}"
            state[count_key] = np.asarray(counts.pop(count_key, 0), dtype=np.int64).reshape(())
            origin[count_key] = f"{module}.{NUM_BATCHES_TRACKED} (not stored: 0)"
    if counts:
        raise ConversionError("num_batches_tracked entries without a BatchNorm: "
                              + ", ".join(sorted(counts)))
    return state, origin


def torch_parameter_names(mindspore_names: Iterable[str]) -> List[Tuple[str, str]]:
    """The demo's ``model.parameters()`` order, from our model's names.

    ``torch.optim`` state is indexed by position in ``model.parameters()``: every learnable
    tensor of encoder_q, then of encoder_k, in module registration order, which is also our
    parameter order. BatchNorm running statistics are buffers, not parameters.

    Args:
        mindspore_names: Our parameter names in model order (``cell.get_parameters()``).

    Returns:
        ``(PyTorch key, our name)`` of each learnable tensor, in ``model.parameters()`` order.
    """
    names = list(mindspore_names)
    bn_modules = _bn_modules(names, "moving_mean")
    return [(mindspore_to_torch_name(name, bn_modules), name) for name in names
            if name.startswith(ENCODER_PREFIXES) and _split_name(name)[1] not in BN_BUFFERS_MS]


# --------------------------------------------------------------------------- optimizer

def torch_optimizer_to_mindspore(optimizer: Optional[Mapping], params: Sequence[Tuple[str, str]],
                                 shapes: Mapping[str, Tuple[int, ...]],
                                 lr: Optional[float] = None, momentum: Optional[float] = None
                                 ) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Converts a ``torch.optim.SGD`` state dict to our ``nn.Momentum`` entries.

    PyTorch's SGD (dampening 0, no nesterov) and ``nn.Momentum`` run the same recursion
    ``v <- momentum * v + (g + wd * w)``, ``w <- w - lr * v``, so the buffers carry over as is.

    Args:
        optimizer: ``optimizer.state_dict()`` with NumPy buffers, or ``None`` (zeros).
        params: ``(PyTorch key, our name)`` in ``model.parameters()`` order
            (:func:`torch_parameter_names`).
        shapes: Shape of each parameter, by our name.
        lr: Learning rate to store when ``optimizer`` is ``None`` (default 0.06).
        momentum: Momentum to store when ``optimizer`` is ``None`` (default 0.9).

    Returns:
        ``(entries, origin)``: ``moments.encoder_q.*`` buffers (zeros where the optimizer holds
        none), ``learning_rate``, ``momentum`` and ``global_step`` (0); ``{name: source}``.

    Raises:
        ConversionError: If the optimizer is not plain SGD with momentum, indexes another
            number of parameters, or holds state that fits no encoder_q weight.
    """
    buffers: Dict[str, np.ndarray] = {}
    if optimizer is not None:
        groups = optimizer.get("param_groups") or []
        if not groups:
            raise ConversionError("the optimizer state has no param_groups")
        for group in groups:
            if group.get("nesterov", False) or group.get("dampening", 0) != 0:
                raise ConversionError("only SGD with plain momentum (no nesterov, dampening 0) "
                                      "maps onto nn.Momentum")
        rates = {float(g["lr"]) for g in groups}
        moms = {float(g.get("momentum", 0.0)) for g in groups}
        if len(rates) > 1 or len(moms) > 1:
            raise ConversionError(f"parameter groups with different lr/momentum cannot be "
                                  f"merged: lr {sorted(rates)}, momentum {sorted(moms)}")
        lr, momentum = rates.pop(), moms.pop()
        indices = [index for group in groups for index in group["params"]]
        if len(indices) != len(params):
            raise ConversionError(f"the optimizer indexes {len(indices)} parameters, the model has "
                                  f"{len(params)} (both encoders' weights)")
        position = {index: pos for pos, index in enumerate(indices)}
        unmapped = []
        for index, state in (optimizer.get("state") or {}).items():
            if index not in position:
                unmapped.append(f"state[{index}] (not in param_groups)")
                continue
            key, name = params[position[index]]
            extra = sorted(set(state) - {"momentum_buffer"})
            if extra:
                unmapped.append(f"state[{index}] ({key}): {', '.join(extra)}")
            buf = state.get("momentum_buffer")
            if buf is None:
                continue
            buf = np.asarray(buf)
            if not name.startswith("encoder_q."):
                unmapped.append(f"state[{index}].momentum_buffer ({key}: encoder_k has no optimizer)")
            elif tuple(buf.shape) != tuple(shapes[name]):
                unmapped.append(f"state[{index}].momentum_buffer ({key}): shape {tuple(buf.shape)} "
                                f"vs {tuple(shapes[name])}")
            else:
                buffers[name] = buf.astype(np.float32, copy=False)
        if unmapped:
            raise ConversionError("optimizer state that maps onto nothing: " + "; ".join(unmapped))
    entries, origin = {}, {}
    for key, name in params:
        if name.startswith("encoder_q."):
            moment = MOMENTS_PREFIX + name
            if name in buffers:
                entries[moment], origin[moment] = buffers[name], f"optimizer buffer of {key}"
            else:
                entries[moment] = np.zeros(shapes[name], np.float32)
                origin[moment] = f"zeros (no momentum buffer for {key})"
    entries[LEARNING_RATE] = np.asarray(DEFAULT_LR if lr is None else lr, np.float32)
    entries[MOMENTUM] = np.asarray(DEFAULT_MOMENTUM if momentum is None else momentum, np.float32)
    entries[GLOBAL_STEP] = np.zeros(1, np.int32)
    origin.update({LEARNING_RATE: "optimizer lr", MOMENTUM: "optimizer momentum",
                   GLOBAL_STEP: "0 (no counterpart)"})
    return entries, origin


def _shortest_float(value) -> float:
    """The Python float a float32 stands for (0.06, not 0.05999999865889549)."""
    return float(np.format_float_positional(np.float32(np.asarray(value)), unique=True))


def mindspore_optimizer_to_torch(entries: Mapping[str, np.ndarray], params: Sequence[Tuple[str, str]],
                                 weight_decay: float = DEFAULT_WEIGHT_DECAY) -> Dict:
    """Builds the demo's ``SGD`` state dict from our ``nn.Momentum`` entries.

    Args:
        entries: Our ``moments.encoder_q.*`` buffers plus ``learning_rate`` and ``momentum``.
        params: ``(PyTorch key, our name)`` in ``model.parameters()`` order.
        weight_decay: Recorded in the group (our checkpoints do not store it).

    Returns:
        ``{'state': {index: {'momentum_buffer': array}}, 'param_groups': [group]}`` for
        ``torch.optim.SGD(model.parameters(), ...).load_state_dict``.
    """
    state = {index: {"momentum_buffer": np.asarray(entries[MOMENTS_PREFIX + name])}
             for index, (_, name) in enumerate(params) if MOMENTS_PREFIX + name in entries}
    group = {"lr": _shortest_float(entries[LEARNING_RATE]),
             "momentum": _shortest_float(entries[MOMENTUM]), "dampening": 0,
             "weight_decay": float(weight_decay), "nesterov": False, "maximize": False,
             "foreach": None, "differentiable": False, "fused": None,
             "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


# --------------------------------------------------------------------------- model config

def infer_model_config(state_dict: Mapping[str, np.ndarray]) -> Dict[str, object]:
    """Reads ``arch``, ``moco_dim`` and ``moco_k`` off the demo's tensors.

    Args:
        state_dict: PyTorch ``{key: array}`` (only shapes and key names are used).

    Returns:
        ``{"arch": ..., "moco_dim": ..., "moco_k": ...}``.

    Raises:
        ConversionError: If the queue is missing or the block counts match no known arch.
    """
    if QUEUE not in state_dict or np.ndim(state_dict[QUEUE]) != 2:
        raise ConversionError("no 2-D 'queue' tensor: not a MoCo state_dict (keys start with "
                              + ", ".join(sorted(state_dict)[:3]) + " ...)")
    dim, k = np.shape(state_dict[QUEUE])
    blocks = []
    for stage in STAGE_INDICES:
        prefix = f"encoder_q.net.{stage}."
        indices = {key[len(prefix):].split(".", 1)[0] for key in state_dict if key.startswith(prefix)}
        blocks.append(len(indices))
    arch = next((name for name, layers in ARCH_LAYERS.items() if tuple(blocks) == layers), None)
    if arch is None:
        raise ConversionError(f"encoder_q has {tuple(blocks)} blocks per stage, which matches none "
                              f"of {', '.join(f'{n} {l}' for n, l in ARCH_LAYERS.items())}")
    return {"arch": arch, "moco_dim": int(dim), "moco_k": int(k)}


def check_against_schema(tensors: Mapping[str, np.ndarray], schema: Mapping[str, Tuple[int, ...]],
                         origin: Optional[Mapping[str, str]] = None, what: str = "checkpoint"
                         ) -> None:
    """Checks that ``tensors`` holds exactly the names of ``schema``, with its shapes.

    Args:
        tensors: ``{name: array}`` after mapping.
        schema: Expected ``{name: shape}``.
        origin: Source name of each mapped name, quoted in the message.
        what: What ``tensors`` came from, for the message.

    Raises:
        ConversionError: Listing every unmapped, missing and mismatched name.
    """
    origin = origin or {}

    def label(name):
        source = origin.get(name)
        return name if source in (None, name) else f"{source} (-> {name})"

    unexpected = sorted(set(tensors) - set(schema))
    missing = sorted(set(schema) - set(tensors))
    mismatched = sorted(name for name in set(tensors) & set(schema)
                        if tuple(np.shape(tensors[name])) != tuple(schema[name]))
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) that map onto nothing in the model: "
                        + ", ".join(label(n) for n in unexpected))
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model not in the {what}: "
                        + ", ".join(missing))
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + ", ".join(
            f"{label(n)} {tuple(np.shape(tensors[n]))} vs {tuple(schema[n])}" for n in mismatched))
    if problems:
        raise ConversionError(f"the {what} does not fit the model: " + "; ".join(problems))


# --------------------------------------------------------------------------- the model as schema

def _scratch_parameters(cell) -> Dict[str, Tuple[str, int]]:
    """Split-BN scratch copies of ``cell``: ``{name: (running statistic it repeats, splits)}``."""
    from ..models.split_bn import SplitBatchNorm

    scratch = {}
    for _, sub in cell.cells_and_names():
        if isinstance(sub, SplitBatchNorm) and sub.num_splits > 1:
            # Whatever they are called: the cell's own parameters besides the four of a BN.
            for param in sub.get_parameters(expand=False):
                leaf = _split_name(param.name)[1]
                if leaf not in ("gamma", "beta", *BN_BUFFERS_MS):
                    stat = sub.moving_mean if "mean" in leaf else sub.moving_variance
                    scratch[param.name] = (stat.name, sub.num_splits)
    return scratch


def mindspore_model_state(model) -> Dict[str, np.ndarray]:
    """The model tensors of a :class:`~src.models.MoCo` as NumPy arrays, in model order.

    Both encoders (weights and BN running statistics), ``queue`` and ``queue_ptr``: what
    :func:`mindspore_state_to_torch` maps onto the demo's ``state_dict``. Split-BN scratch
    copies (transient) are left out.

    Args:
        model: A MoCo cell (or anything whose parameters are named like one).

    Returns:
        ``{name: array}`` (copies).
    """
    scratch = _scratch_parameters(model)
    return {p.name: p.asnumpy().copy() for p in model.get_parameters()
            if p.name not in scratch
            and (p.name.startswith(ENCODER_PREFIXES) or p.name in (QUEUE, QUEUE_PTR))}


def load_mindspore_model_state(model, arrays: Mapping[str, np.ndarray]) -> None:
    """Sets a MoCo cell's model tensors (as from :func:`torch_state_to_mindspore`).

    Checks names and shapes first (see :func:`check_against_schema`); split-BN scratch copies
    are refilled from the running statistics.

    Args:
        model: A MoCo cell.
        arrays: ``{name: array}`` covering exactly :func:`mindspore_model_state`'s names.

    Raises:
        ConversionError: Listing unmapped, missing and mismatched names.
    """
    import mindspore as ms

    params = {p.name: p for p in model.get_parameters()}
    schema = {name: tuple(params[name].shape) for name in mindspore_model_state(model)}
    check_against_schema(arrays, schema, what="state")
    for name in schema:
        params[name].set_data(ms.Tensor(np.asarray(arrays[name]).astype(
            ms.dtype_to_nptype(params[name].dtype), copy=False)))
    for name, (stat, splits) in _scratch_parameters(model).items():
        params[name].set_data(ms.Tensor(np.tile(np.asarray(arrays[stat]), splits)))


def model_schema(arch: str, moco_dim: int, moco_k: int, bn_splits: int, symmetric: bool
                 ) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, Tuple[str, int]]]:
    """Names and shapes that our checkpoint of such a model holds.

    Builds the training step (model and optimizer) the way ``main.py`` does and lists the
    entries that :func:`src.train.checkpoint.save_checkpoint` writes for it.

    Args:
        arch, moco_dim, moco_k, bn_splits, symmetric: The model.

    Returns:
        ``(schema, scratch)``: ``{name: shape}`` in model order, and the model's split-BN
        scratch copies ``{name: (running statistic it repeats, splits)}``: transient, dropped
        on export, and on import written (tiled running statistics) only if ``schema`` lists
        them, i.e. if ``save_checkpoint`` writes them.
    """
    schema, scratch = _cached_schema(str(arch), int(moco_dim), int(moco_k), int(bn_splits),
                                     bool(symmetric))
    return dict(schema), dict(scratch)


@functools.lru_cache(maxsize=4)
def _cached_schema(arch, moco_dim, moco_k, bn_splits, symmetric):
    # Building two ResNets takes seconds; a round trip needs the same schema twice.
    from ..train.checkpoint import _state
    from ..train.step import MoCoTrainStep, create_optimizer
    from ..models import MoCo

    model = MoCo(dim=moco_dim, K=moco_k, arch=arch, bn_splits=bn_splits, symmetric=symmetric)
    step = MoCoTrainStep(model, create_optimizer(model, DEFAULT_LR, DEFAULT_WEIGHT_DECAY))
    schema = tuple((name, tuple(p.shape)) for name, p in _state(step).items())
    return schema, tuple(_scratch_parameters(step).items())


def _model_part(schema: Mapping[str, Tuple[int, ...]], scratch: Mapping) -> List[str]:
    """Names of model tensors (encoders, queue, pointer) in schema order."""
    return [name for name in schema
            if name not in scratch and (name.startswith(ENCODER_PREFIXES) or name in (QUEUE, QUEUE_PTR))]


def _check_config(inferred: Mapping[str, object], given: Mapping[str, object], source: str) -> None:
    clashes = [f"{key}={given[key]!r} but the {source} has {inferred[key]!r}"
               for key in inferred if given.get(key) is not None and given[key] != inferred[key]]
    if clashes:
        raise ConversionError("; ".join(clashes))


# --------------------------------------------------------------------------- file I/O

def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ConversionError("reading or writing .pth/.pt files needs PyTorch, which is not "
                              "installed: pip install torch (the CPU build is enough)") from err
    return torch


def _to_numpy(value, what):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    raise ConversionError(f"{what} is a {type(value).__name__}, not a tensor")


def _atomic_write(path, write):
    """Writes next to ``path`` and renames, so ``path`` is never left half-written."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp"
                       + os.path.splitext(path)[1])
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        raise ConversionError(f"cannot write {path}: {err}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert_pth_to_ckpt(in_path: str, out_path: str, arch: Optional[str] = None,
                        moco_dim: Optional[int] = None, moco_k: Optional[int] = None,
                        bn_splits: Optional[int] = None, symmetric: bool = False,
                        epoch: Optional[int] = None, lr: Optional[float] = None,
                        momentum: Optional[float] = None) -> Dict[str, object]:
    """Turns a demo checkpoint into ours (readable by ``load_checkpoint`` / ``--resume``).

    Args:
        in_path: ``.pth``/``.pt``: ``{'epoch', 'state_dict', 'optimizer'}`` or a bare state_dict.
        out_path: ``.ckpt`` to write (atomically).
        arch, moco_dim, moco_k: Checked against the values inferred from the tensors.
        bn_splits: Split-BN groups of the run (default 8, the demo's).
        symmetric: Whether the run used the symmetric loss.
        epoch: Overrides the checkpoint's epoch (a bare state_dict counts as epoch 0).
        lr, momentum: Stored when the file has no optimizer state.

    Returns:
        The metadata written (``epoch`` and the model keys).

    Raises:
        ConversionError: On a missing torch, an unreadable file or tensors that do not fit.
    """
    torch = _import_torch()
    try:
        checkpoint = torch.load(in_path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ConversionError(f"{in_path}: no such file") from err
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ConversionError(f"cannot read {in_path} as a PyTorch checkpoint: {err}") from err
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{in_path} holds a {type(checkpoint).__name__}, not a dict")
    state_dict = checkpoint.get("state_dict", checkpoint)
    optimizer = checkpoint.get("optimizer") if "state_dict" in checkpoint else None
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"{in_path}: 'state_dict' is a {type(state_dict).__name__}")
    state_np = {key: _to_numpy(value, f"state_dict[{key!r}]") for key, value in state_dict.items()}
    if optimizer is not None and not isinstance(optimizer, Mapping):
        raise ConversionError(
            f"{in_path}: 'optimizer' is a {type(optimizer).__name__}, not a state dict")
    if optimizer is not None:
        optimizer = {"param_groups": optimizer.get("param_groups"),
                     "state": {index: {name: (_to_numpy(buf, f"optimizer state {index}.{name}")
                                              if buf is not None and hasattr(buf, "detach") else buf)
                                       for name, buf in state.items()}
                               for index, state in (optimizer.get("state") or {}).items()}}

    config = infer_model_config(state_np)
    _check_config(config, {"arch": arch, "moco_dim": moco_dim, "moco_k": moco_k}, in_path)
    config["bn_splits"] = DEFAULT_BN_SPLITS if bn_splits is None else int(bn_splits)
    config["symmetric"] = bool(symmetric)
    if epoch is None:
        epoch = int(checkpoint.get("epoch", 0)) if "state_dict" in checkpoint else 0

    schema, scratch = model_schema(**config)
    params, counts, origin = torch_state_to_mindspore(state_np)
    model_names = _model_part(schema, scratch)
    check_against_schema(params, {name: schema[name] for name in model_names}, origin, in_path)
    opt_entries, opt_origin = torch_optimizer_to_mindspore(
        optimizer, torch_parameter_names(model_names), schema, lr, momentum)
    entries = {**params, **opt_entries}
    for name, (stat, splits) in scratch.items():
        if name in schema:
            entries[name] = np.tile(entries[stat], splits)
    check_against_schema(entries, schema, {**origin, **opt_origin}, in_path)

    import mindspore as ms
    meta = {EPOCH: int(epoch), **config}
    data = [{"name": name, "data": ms.Tensor(np.asarray(entries[name], order="C"))} for name in schema]
    data += [{"name": key, "data": ms.Tensor(value)} for key, value in counts.items()]
    _atomic_write(out_path, lambda tmp: ms.save_checkpoint(data, tmp, append_dict=meta))
    return meta


def convert_ckpt_to_pth(in_path: str, out_path: str, arch: Optional[str] = None,
                        moco_dim: Optional[int] = None, moco_k: Optional[int] = None,
                        bn_splits: Optional[int] = None, symmetric: Optional[bool] = None,
                        epoch: Optional[int] = None, weight_decay: float = DEFAULT_WEIGHT_DECAY
                        ) -> Dict[str, object]:
    """Exports our checkpoint as the demo's ``{'epoch', 'state_dict', 'optimizer'}``.

    Args:
        in_path: ``.ckpt`` written by ``save_checkpoint`` (or by :func:`convert_pth_to_ckpt`).
        out_path: ``.pth``/``.pt`` to write (atomically).
        arch, moco_dim, moco_k, bn_splits, symmetric: Used when the checkpoint lacks the
            metadata, checked against it otherwise.
        epoch: Overrides the stored epoch.
        weight_decay: Recorded in the exported SGD group (ours does not store it).

    Returns:
        The metadata of the checkpoint.

    Raises:
        ConversionError: On a missing torch, an unreadable file or tensors that do not fit.
    """
    torch = _import_torch()
    import mindspore as ms
    if not os.path.isfile(in_path):
        raise ConversionError(f"{in_path}: no such file")
    try:
        loaded = ms.load_checkpoint(in_path)
    except (RuntimeError, ValueError, OSError) as err:
        raise ConversionError(f"cannot read {in_path} as a MindSpore checkpoint: {err}") from err
    values = {name: (p.asnumpy() if hasattr(p, "asnumpy") else p) for name, p in loaded.items()}

    meta = {}
    for key in (EPOCH, *MODEL_KEYS):
        if key in values:
            value = values.pop(key)
            meta[key] = value if isinstance(value, str) else np.asarray(value).item()
    given = {"arch": arch, "moco_dim": moco_dim, "moco_k": moco_k, "bn_splits": bn_splits,
             "symmetric": symmetric}
    _check_config({key: meta[key] for key in MODEL_KEYS if key in meta}, given, in_path)
    for key in MODEL_KEYS:
        if key not in meta:
            meta[key] = given[key]
    if meta["moco_dim"] is None or meta["moco_k"] is None:
        if QUEUE not in values or np.ndim(values[QUEUE]) != 2:
            raise ConversionError(f"{in_path} has no 2-D queue to read moco_dim/moco_k from")
        meta["moco_k"], meta["moco_dim"] = (int(n) for n in values[QUEUE].shape)
    meta["arch"] = meta["arch"] or "resnet18"
    meta["bn_splits"] = DEFAULT_BN_SPLITS if meta["bn_splits"] is None else int(meta["bn_splits"])
    meta["symmetric"] = bool(meta["symmetric"])
    if epoch is not None:
        meta[EPOCH] = int(epoch)
    meta.setdefault(EPOCH, 0)

    schema, scratch = model_schema(**{key: meta[key] for key in MODEL_KEYS})
    counts = {name: values.pop(name) for name in list(values)
              if _split_name(name)[1] == NUM_BATCHES_TRACKED}
    values.pop(GLOBAL_STEP, None)  # no PyTorch counterpart
    for name in scratch:
        values.pop(name, None)
    check_against_schema(values, {n: s for n, s in schema.items()
                                  if n not in scratch and n != GLOBAL_STEP}, what=in_path)
    model_names = _model_part(schema, scratch)
    state_np, _ = mindspore_state_to_torch({name: values[name] for name in model_names}, counts)
    optimizer_np = mindspore_optimizer_to_torch(values, torch_parameter_names(model_names),
                                                weight_decay)

    checkpoint = {
        "epoch": int(meta[EPOCH]),
        "state_dict": {key: torch.from_numpy(np.asarray(value, order="C"))
                       for key, value in state_np.items()},
        "optimizer": {
            "state": {index: {"momentum_buffer": torch.from_numpy(
                np.asarray(state["momentum_buffer"], order="C"))}
                      for index, state in optimizer_np["state"].items()},
            "param_groups": optimizer_np["param_groups"],
        },
    }
    _atomic_write(out_path, lambda tmp: torch.save(checkpoint, tmp))
    return meta


# --------------------------------------------------------------------------- command line

def _direction(in_path: str, out_path: str) -> str:
    ext_in = os.path.splitext(in_path)[1].lower()
    ext_out = os.path.splitext(out_path)[1].lower()
    if ext_in in PTH_EXTENSIONS and ext_out in CKPT_EXTENSIONS:
        return "pth->ckpt"
    if ext_in in CKPT_EXTENSIONS and ext_out in PTH_EXTENSIONS:
        return "ckpt->pth"
    raise ConversionError(
        f"cannot tell the direction from the extensions {ext_in or '(none)'} -> {ext_out or '(none)'}: "
        "use IN.pth/.pt OUT.ckpt (PyTorch demo -> MindSpore) or IN.ckpt OUT.pth/.pt (back)")


def create_parser() -> argparse.ArgumentParser:
    """The converter's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m src.tools.convert_pytorch",
        description="Convert MoCo checkpoints between the PyTorch CIFAR demo (.pth/.pt) and "
                    "moco-mindspore (.ckpt); the direction follows the extensions.",
        allow_abbrev=False)
    parser.add_argument("input", help="checkpoint to read (.pth/.pt or .ckpt)")
    parser.add_argument("output", help="checkpoint to write (.ckpt or .pth/.pt)")
    parser.add_argument("-a", "--arch", default=None, help="checked against the tensors")
    parser.add_argument("--moco-dim", type=int, default=None, help="checked against the tensors")
    parser.add_argument("--moco-k", type=int, default=None, help="checked against the tensors")
    parser.add_argument("--bn-splits", type=int, default=None,
                        help=f"split-BN groups of the run (.pth input; default {DEFAULT_BN_SPLITS})")
    parser.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=None,
                        help="the run used the symmetric loss (.pth input; default off)")
    parser.add_argument("--epoch", type=int, default=None, help="override the stored epoch")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"lr to store if the .pth has no optimizer (default {DEFAULT_LR})")
    parser.add_argument("--momentum", type=float, default=None,
                        help="momentum to store if the .pth has no optimizer "
                             f"(default {DEFAULT_MOMENTUM})")
    parser.add_argument("--wd", type=float, default=DEFAULT_WEIGHT_DECAY,
                        help="weight decay recorded in an exported .pth optimizer")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the converter; returns 0 on success, 2 on a conversion error."""
    import mindspore as ms

    from ..utils.device import set_device
    from ..utils.progress import setup_logging

    logger = setup_logging()
    set_device("CPU", ms.PYNATIVE_MODE)
    args = create_parser().parse_args(argv)
    try:
        direction = _direction(args.input, args.output)
        common = dict(arch=args.arch, moco_dim=args.moco_dim, moco_k=args.moco_k,
                      bn_splits=args.bn_splits, epoch=args.epoch)
        if direction == "pth->ckpt":
            meta = convert_pth_to_ckpt(args.input, args.output, symmetric=bool(args.symmetric),
                                       lr=args.lr, momentum=args.momentum, **common)
        else:
            meta = convert_ckpt_to_pth(args.input, args.output, symmetric=args.symmetric,
                                       weight_decay=args.wd, **common)
    except ConversionError as err:
        logger.error("error: %s", err)
        return 2
    logger.info("wrote %s (%s): %s", args.output, direction,
                ", ".join(f"{key} {value}" for key, value in meta.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
