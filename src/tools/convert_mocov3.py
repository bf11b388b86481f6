"""Converts MoCo v3 checkpoints between facebookresearch/moco-v3 (.pth.tar/.pth/.pt) and ours.

``python -m src.tools.convert_mocov3 IN OUT [--arch A] [--moco-dim D] [--moco-mlp-dim H]
[--image-size S]``, the direction from the extensions (.ckpt: ours). Their ResNets are
torchvision's (``conv1``, ``layer1.0.conv1``, ``fc.0``), ours ``net.N``; ViTs are timm's on both
sides. Flags are checked against the tensors (a ResNet's image size is not in them: 224 for the
7x7 stem, else 32, unless given)."""

import argparse
import functools
import logging
import math
import sys

import mindspore as ms
import numpy as np

from ..models import ARCHS, VITS, MoCoV3, create_encoder
from ..train import checkpoint as ckpt
from ..train.optimizer import create_v3_optimizer
from . import ConversionError, import_torch, load_torch, run_tool, save_torch, write_atomically
from .convert_pytorch import check_against_schema, mindspore_state_to_torch, torch_name
from .export import TORCHVISION

ORDER = (  # module and leaf names in PyTorch's registration order: parameters(), state_dict()
    "base_encoder momentum_encoder predictor cls_token pos_embed patch_embed blocks norm1 attn "
    "qkv proj norm2 mlp fc1 fc2 norm head conv1 bn1 conv2 bn2 downsample layer1 layer2 layer3 "
    "layer4 fc weight bias running_mean running_var num_batches_tracked"
).split()
BUFFERS, PRE = (".running_mean", ".running_var", ".num_batches_tracked"), "base_encoder."
FIELDS = {"lars": ("mu",), "adamw": ("exp_avg", "exp_avg_sq")}  # torch state = our prefixes
GROUPS = {  # the rest of main_moco.py's parameter group; weight decay: CONFIG.md's recipes
    "lars": dict(weight_decay=1e-6, momentum=0.9, trust_coefficient=0.001),
    "adamw": dict(weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, amsgrad=False),
}
SCALER = dict(scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000)
OTHER_TOOL = "a MoCo v1/v2 checkpoint: convert it with python -m src.tools.convert_pytorch"
CONFIG = ("arch", "moco_dim", "moco_mlp_dim", "stem", "image_size", "stop_grad_conv1")
KINDS = {".ckpt": "ckpt", ".pth": "pth", ".pth.tar": "pth", ".pt": "pth"}
FIXED = dict(moco_k=0, bn_splits=1, symmetric=True, mlp=False, method="v3")  # main.py's v3
logger = logging.getLogger("moco")


def official(name: str) -> str:
    """moco-v3's key (without ``module.``) of one of our names, or of its torch_name."""
    part, _, rest = torch_name(name).partition(".")
    if rest.startswith("net."):
        _, index, leaf = rest.split(".", 2)
        rest = f"{TORCHVISION[index]}.{leaf}"
    return f"{part}.{rest}"


def _rank(key: str) -> tuple:
    return tuple(int(c) if c.isdigit() else ORDER.index(c) for c in key.split("."))


@functools.lru_cache(maxsize=2)
def model_schema(arch, moco_dim, moco_mlp_dim, stem, image_size, stop_grad_conv1, optimizer):
    """``(shapes, keys, params)`` of main.py's model and optimizer: ``{name: (shape, dtype)}`` of
    its checkpoint, ``{official key: our name}`` in PyTorch's state_dict order, and the
    ``(key, name)`` of ``model.parameters()``: the official optimizer's indices."""
    build = functools.partial(create_encoder, arch, moco_dim, stem=stem, image_size=image_size)
    build = functools.partial(build, stop_grad_conv1=stop_grad_conv1)
    model = MoCoV3(build, moco_dim, moco_mlp_dim)
    opt = create_v3_optimizer(optimizer, model.trainable_params(), 0.0, 0.0)
    params = {p.name: p for cell in (model, opt) for p in cell.get_parameters()}
    shapes = {n: (tuple(p.shape), np.dtype(str(p.dtype).lower())) for n, p in params.items()}
    free = [n for n, p in params.items() if n.startswith(("base", "pred")) and not p.requires_grad]
    free = {n.split(".", 1)[1] for n in free if n.endswith(("gamma", "beta"))}  # affine=False BN
    names = [n for n in params if n.split(".")[0] in ORDER[:3] and n.split(".", 1)[1] not in free]
    keys = dict(sorted(((official(n), n) for n in names), key=lambda item: _rank(item[0])))
    params = [(k, n) for k, n in keys.items() if not k.endswith(BUFFERS)]
    return shapes, keys, params


def infer_config(sd, given, file_arch) -> dict:
    """arch, moco_dim, moco_mlp_dim, stem, image_size of a moco-v3 state_dict; ConversionError
    where a ``given`` value (None: not given) or the file's ``arch`` contradicts the tensors."""
    if any(k.startswith("encoder_q.") or k == "queue" for k in sd):
        raise ConversionError(OTHER_TOOL)
    shape, pre = {k: np.shape(v) for k, v in sd.items()}, PRE
    dims = shape.get("predictor.0.weight", (0, 0))
    found = dict(moco_dim=dims[1], moco_mlp_dim=dims[0], image_size=given["image_size"])
    count = lambda part: len({k.split(".")[2] for k in sd if k.startswith(pre + part)})  # noqa: E731
    if pre + "pos_embed" in shape:  # a ViT: its patch and token count fix the image size
        d, n = shape[pre + "pos_embed"][-1], count("blocks.")
        found["arch"] = next((a for a, v in VITS.items() if v[:2] == (d, n)), f"a ViT {d}x{n}")
        patch, tokens = shape[pre + "patch_embed.proj.weight"][-1], shape[pre + "pos_embed"][1] - 1
        found["image_size"] = size = math.isqrt(tokens) * patch
        if patch != (4 if size < 64 else 16) or size**2 != tokens * patch**2:
            raise ConversionError(f"patch {patch}, {tokens} tokens: ours: 4 below 64 px, else 16")
        found["stem"] = "imagenet" if size >= 64 else "cifar"
    elif pre + "conv1.weight" in shape:  # torchvision's 7x7 stem: imagenet; the demo's 3x3: cifar
        blocks = tuple(count(f"layer{i}.") for i in (1, 2, 3, 4))
        found["arch"] = next((a for a, v in ARCHS.items() if tuple(v) == blocks), f"a {blocks}")
        found["stem"] = "imagenet" if shape[pre + "conv1.weight"][-1] == 7 else "cifar"
        found["image_size"] = found["image_size"] or (224 if found["stem"] == "imagenet" else 32)
    else:
        raise ConversionError(f"not a MoCo v3 state_dict (keys {', '.join(list(sd)[:3])} ...)")
    if found["arch"].startswith("a ") or not found["moco_dim"]:
        raise ConversionError(f"{found['arch']} is not a backbone of ours, or no predictor.0")
    check_settings(found, {**given, "arch": given["arch"] or file_arch}, "the tensors say")
    return found


def check_settings(found, given, source) -> None:
    """ConversionError listing every ``given`` value (None: not given) that is not ``found``."""
    wrong = [f"{k}={v!r} but {source} {found[k]!r}" for k, v in given.items()]
    if wrong := [w for w, (k, v) in zip(wrong, given.items()) if v not in (None, found[k])]:
        raise ConversionError("; ".join(wrong))


def optimizer_to_ours(optimizer, params, shapes, what) -> dict:
    """moco-v3's LARS ``mu`` or AdamW ``exp_avg``/``exp_avg_sq``/``step``, and lr, as ours."""
    groups, entries, leftovers, steps = optimizer.get("param_groups") or [{}], {}, [], set()
    indices = groups[0].get("params", [])
    if len(groups) != 1 or len(indices) != len(params):
        raise ConversionError(f"{what}: not one parameter group over {len(params)} tensors")
    for index, state in (optimizer.get("state") or {}).items():
        key, name = params[indices.index(index)] if index in indices else ("no parameter", "")
        for field, value in state.items():
            if field == "step" and "state_step" in shapes:
                steps.add(float(value))
            elif np.shape(value) != shapes.get(f"{field}.{name}", [None])[0]:
                leftovers.append(f"state[{index}].{field} ({key})")
            entries[f"{field}.{name}"] = value
    if leftovers or len(steps) > 1:
        raise ConversionError(f"{what}: optimizer state that fits nothing: {leftovers} {steps}")
    entries.update(learning_rate=groups[0]["lr"], state_step=max(steps, default=0))
    return {name: value for name, value in entries.items() if name in shapes}


def convert_pth_to_ckpt(in_path, out_path, *, stop_grad_conv1=None, wd=None, **given) -> dict:
    """Writes moco-v3's checkpoint (or a bare state_dict) as our ``.ckpt``; returns its metadata.
    ``given``: arch, moco_dim, moco_mlp_dim, image_size, all checked; ``wd``: not stored."""
    given = {k: given.get(k) for k in ("arch", "moco_dim", "moco_mlp_dim", "image_size")}
    full = load_torch(in_path)
    full = full if isinstance(full, dict) and "state_dict" in full else {"state_dict": full}
    sd = {k.removeprefix("module."): v for k, v in full["state_dict"].items()}
    config, optimizer = infer_config(sd, given, full.get("arch")), full.get("optimizer") or {}
    fields_of = optimizer.get("state") or {}
    fields = {field for state in fields_of.values() for field in state}
    group = (optimizer.get("param_groups") or [{}])[0]
    kind = "lars" if "mu" in fields or "trust_coefficient" in group else "adamw"
    kind = kind if fields or group or config["arch"] in VITS else "lars"  # main.py's default
    if stop_grad_conv1 is None:  # a frozen patch projection has no state (indices: file order)
        ranked, patch = [k for k in sd if not k.endswith(BUFFERS)], PRE + "patch_embed.proj.weight"
        stop_grad_conv1 = bool(fields) and patch in sd and ranked.index(patch) not in fields_of
    config["stop_grad_conv1"] = stop_grad_conv1
    shapes, keys, params = model_schema(**config, optimizer=kind)
    model = {key: value for key, value in sd.items() if not key.endswith("num_batches_tracked")}
    check_against_schema(model, {key: shapes[name][0] for key, name in keys.items()}, in_path)
    entries = {name: model[key] for key, name in keys.items()}
    entries.update(optimizer_to_ours(optimizer, params, shapes, in_path) if optimizer else {})
    if not optimizer:
        logger.info("note: %s has no optimizer: %s state and lr start at 0", in_path, kind)
    for name, (shape, dtype) in shapes.items():  # affine-free BN gamma/beta; state not found
        one = name.endswith("gamma") and name.split(".")[0] in ORDER[:3]
        entries.setdefault(name, np.full(shape, one, dtype))
    meta = {"epoch": int(full.get("epoch", 0)), **{**config, **FIXED}}
    meta = {k: meta[k] for k in ("epoch", *ckpt.MODEL_KEYS, *ckpt.V3_KEYS)}
    data = [{"name": n, "data": ms.Tensor(np.asarray(entries[n], shapes[n][1]))} for n in shapes]
    write_atomically(out_path, lambda tmp: ms.save_checkpoint(data, tmp, append_dict=meta))
    return meta


def convert_ckpt_to_pth(in_path, out_path, *, stop_grad_conv1=None, wd=None, **given) -> dict:
    """Writes our ``.ckpt`` as moco-v3's ``{'epoch', 'arch', 'state_dict', 'optimizer', 'scaler'}``
    for ``main_moco.py --resume``; ``wd`` (None: GROUPS') goes into the parameter group."""
    import_torch()
    try:
        saved = ckpt.read_checkpoint(in_path)
    except ckpt.CheckpointError as err:
        raise ConversionError(str(err)) from err
    found = ckpt.checkpoint_settings(saved)
    if found.get("method") != "v3":
        raise ConversionError(f"{in_path} is {OTHER_TOOL}")
    check_settings(found, {**given, "stop_grad_conv1": stop_grad_conv1}, f"{in_path} has")
    values = {name: np.asarray(value) for name, value in saved.items() if name not in found}
    kind = "lars" if any(name.startswith("mu.") for name in values) else "adamw"
    shapes, keys, params = model_schema(**{key: found[key] for key in CONFIG}, optimizer=kind)
    check_against_schema(values, {name: shape for name, (shape, _) in shapes.items()}, in_path)
    state = mindspore_state_to_torch({name: values[name] for name in keys.values()})
    state = {official(key): value for key, value in state.items()}
    head = {"step": np.asarray(values.get("state_step", 0), np.float32)} if kind == "adamw" else {}
    slots = [{f: values.get(f"{f}.{name}") for f in FIELDS[kind]} for _, name in params]
    moments = {
        i: {**head, **slot}
        for i, slot in enumerate(slots)
        if all(v is not None for v in slot.values())
    }
    group = {"lr": float(str(np.float32(values["learning_rate"]))), **GROUPS[kind]}
    group.update({} if wd is None else {"weight_decay": wd}, params=list(range(len(params))))
    sd = {"module." + key: state[key] for key in sorted(state, key=_rank)}
    optimizer = {"state": moments, "param_groups": [group]}
    tree = dict(epoch=found.get("epoch", 0), arch=found["arch"], state_dict=sd, optimizer=optimizer)
    save_torch({**tree, "scaler": {**SCALER, "_growth_tracker": 0}}, out_path)
    return {k: found[k] for k in ("epoch", *ckpt.MODEL_KEYS, *ckpt.V3_KEYS) if k in found}


def _convert(in_path, out_path, **options) -> str:
    kinds = [next((KINDS[e] for e in KINDS if p.endswith(e)), "?") for p in (in_path, out_path)]
    if kinds not in (["pth", "ckpt"], ["ckpt", "pth"]):
        raise ConversionError(f"{in_path} -> {out_path}: use .pth.tar/.pth/.pt and .ckpt")
    convert = convert_pth_to_ckpt if kinds[0] == "pth" else convert_ckpt_to_pth
    meta = convert(in_path, out_path, **options)
    return f"wrote {out_path}: " + ", ".join(f"{key} {value}" for key, value in meta.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser("python -m src.tools.convert_mocov3", description=__doc__)
    add = parser.add_argument
    add("in_path", metavar="input", help="checkpoint to read: .pth.tar/.pth/.pt or .ckpt")
    add("out_path", metavar="output", help="checkpoint to write: .ckpt or .pth.tar/.pth/.pt")
    add("-a", "--arch", help="checked against the tensors (resnet18/34, vit_tiny/small)")
    for flag in ("--moco-dim", "--moco-mlp-dim", "--image-size"):
        add(flag, type=int, help="checked against the tensors")
    add("--stop-grad-conv1", action=argparse.BooleanOptionalAction, help="ViT; default: as found")
    add("--wd", type=float, help="weight decay of the .pth's group (default: 1e-6 LARS, 0.1 AdamW)")
    return run_tool(_convert, **vars(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
