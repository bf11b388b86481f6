"""The child side of the benchmarks: one configuration per process, timed on request. A task
builds its configuration and returns ``run(n)``, the seconds of ``n`` units (steps, batches or
kNN passes). Heavy imports stay inside the tasks: a PyTorch child never loads MindSpore (nor the
reverse), so each child's peak RSS is its own configuration's."""

import gc
import itertools
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np

# The demo's recipe, for both implementations (tests/equivalence/train_demo.py).
RECIPE = {"dim": 128, "K": 4096, "m": 0.99, "T": 0.1, "arch": "resnet18", "bn_splits": 8}
LR, WEIGHT_DECAY, KNN_K, KNN_T, CLASSES = 0.06, 5e-4, 200, 0.1, 10
TORCH_THREADS = 2
EVAL_BATCH_SIZE = 256  # the kNN monitor's (src.eval.features; importing it would load MindSpore)
Runner = Callable[[int], float]


def timed(fn: Callable[[], object], n: int) -> float:
    """Seconds of ``n`` calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def random_images(batch: int, size: int = 32) -> list[np.ndarray]:
    """Two float32 views, batch x 3 x size x size, standard normal."""
    return list(np.random.default_rng(0).standard_normal((2, batch, 3, size, size), np.float32))


def ours_model(mode: str = "graph", context=None, **recipe):
    """Selects the CPU as ``main.py`` does (graph or PyNative mode), then MindSpore's ``context``
    settings; MoCo with the demo's recipe changed by ``recipe`` (``MoCo``'s arguments)."""
    import mindspore as ms

    from src.models import MoCo
    from src.utils.device import set_device

    set_device("CPU", ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_context(**(context or {}))
    return MoCo(**{**RECIPE, **recipe})


def torch_reference():
    """``tests/equivalence/moco_torch.py``, the PyTorch reference, on ``TORCH_THREADS`` threads."""
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
    from equivalence import moco_torch

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    return moco_torch


def step_ours(batch: int, part="step", image_size=32, finite_check=True, **variant) -> Runner:
    """Our training step on random images, synchronised, or a ``part`` or variant of it
    (``benchmarks.profile_step``: ``PARTS``, ``VARIANTS``; ``variant``: ``ours_model``'s)."""
    import mindspore as ms
    from mindspore import nn

    from src.train.loop import shuffle_permutations
    from src.train.step import create_train_step

    if not finite_check:  # read by the step when it is compiled
        ms.amp.all_finite = lambda grads: ms.ops.ones((), ms.bool_)
    amp_level = variant.get("amp_level", "O0")
    train_step = create_train_step(ours_model(**variant), LR, WEIGHT_DECAY, amp_level)
    train_step.set_train(True)
    model, (im_1, im_2) = train_step.model, map(ms.Tensor, random_images(batch, image_size))
    if part == "step":
        permutations = ms.Tensor(shuffle_permutations(0, 1, 1, batch)[0])
        return lambda n: timed(lambda: train_step(im_1, im_2, permutations)[0].asnumpy(), n)

    class Part(nn.Cell):
        def __init__(self):
            super().__init__()
            self.model, self.optimizer = model, train_step.optimizer
            self.grads = tuple(ms.ops.ones_like(p) * 1e-3 for p in self.optimizer.parameters)
            # The gradients of the sum of encoder_q's outputs (a non-scalar output's sens: ones).
            self.grad = ms.value_and_grad(model.encoder_q, None, model.params_q)

        def construct(self, x):
            if part == "momentum":
                return self.model.momentum_update_key_encoder()
            if part == "sgd":
                return self.optimizer(self.grads)
            # All the gradients are outputs: an unused one would be pruned from the graph.
            return self.grad(x) if part == "q_fwd_bwd" else self.model.encoder_k(x)

    cell = Part()
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    return lambda n: timed(lambda: ms.Tensor(first(cell(im_1))).asnumpy(), n)


def step_torch(batch: int, part="step") -> Runner:
    """The reference's step as ``train_demo.py`` runs it (forward, zero_grad, backward, SGD), or
    the same parts as ``step_ours`` (eager, train mode)."""
    import torch

    reference = torch_reference()
    net = reference.ModelMoCo(**RECIPE).train()
    optimizer = reference.create_optimizer(net, LR, WEIGHT_DECAY)
    im_1, im_2 = (torch.from_numpy(x) for x in random_images(batch))
    permutation = torch.from_numpy(np.random.default_rng(0).permutation(batch))

    def step() -> float:
        loss = net(im_1, im_2, permutation)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def q_fwd_bwd() -> float:
        net.encoder_q.zero_grad()
        loss = net.encoder_q(im_1).sum()
        loss.backward()
        return loss.item()

    for param in net.encoder_q.parameters():
        param.grad = torch.full_like(param, 1e-3)
    parts = {"step": step, "q_fwd_bwd": q_fwd_bwd, "sgd": optimizer.step}
    parts["k_fwd"] = torch.no_grad()(lambda: net.encoder_k(im_1).sum().item())
    parts["momentum"] = torch.no_grad()(net._momentum_update_key_encoder)
    return lambda n: timed(parts[part], n)


V3_VITS = {"vit_tiny": (192, 12, 3)}  # src.models.vit.VITS (importing it would load MindSpore)


def v3_recipe(arch: str) -> dict:
    """The settings of configs/cifar10_mocov3_{arch}.yaml (the YAML, not src.config: a PyTorch
    child must not load MindSpore)."""
    import yaml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "configs", f"cifar10_mocov3_{arch}.yaml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return {key.replace("-", "_"): value for key, value in config.items()}


def v3_ours(batch: int, arch: str, mode: str = "graph") -> Runner:
    """Our MoCo v3 step (``V3TrainStep``) as ``main.py --method v3`` builds it for ``arch``."""
    import mindspore as ms

    from src.models import MoCoV3, create_encoder
    from src.train.optimizer import create_v3_optimizer
    from src.train.step import V3TrainStep
    from src.utils.device import set_device

    set_device("CPU", ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    r = v3_recipe(arch)
    stop_grad_conv1 = r.get("stop_grad_conv1", False)
    encoder = partial(create_encoder, arch, r["moco_dim"], stop_grad_conv1=stop_grad_conv1)
    model = MoCoV3(encoder, r["moco_dim"], r["moco_mlp_dim"], r["moco_t"])
    optimizer = create_v3_optimizer(r["optimizer"], model.trainable_params(), r["lr"], r["wd"])
    step = V3TrainStep(model, optimizer).set_train(True)
    (x1, x2), m = map(ms.Tensor, random_images(batch)), ms.Tensor(r["moco_m"], ms.float32)
    return lambda n: timed(lambda: step(x1, x2, m)[0].asnumpy(), n)


def v3_torch(batch: int, arch: str) -> Runner:
    """The official v3 step (tests/equivalence/moco_v3_torch.py): forward, zero_grad, backward,
    LARS or AdamW, as main_moco.py without its float16 autocast."""
    import torch

    reference = torch_reference()
    from equivalence import moco_v3_torch, vit_torch

    r = v3_recipe(arch)
    if arch == "resnet18":
        resnet = partial(reference.ModelBase, arch=arch, bn_splits=1)
        encoder, builder = lambda num_classes: resnet(num_classes), moco_v3_torch.MoCo_ResNet
    else:
        stop_grad_conv1 = r.get("stop_grad_conv1", False)
        encoder = partial(vit_torch.vit, 32, 4, *V3_VITS[arch], stop_grad_conv1=stop_grad_conv1)
        builder = moco_v3_torch.MoCo_ViT
    model = builder(encoder, r["moco_dim"], r["moco_mlp_dim"], r["moco_t"])
    optimizer = moco_v3_torch.create_optimizer(r["optimizer"], model.train(), r["lr"], r["wd"])
    im_1, im_2 = (torch.from_numpy(x) for x in random_images(batch))

    def step() -> float:
        loss = model(im_1, im_2, r["moco_m"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return lambda n: timed(step, n)


# Parts of a ViT-Tiny block (192 wide, 3 heads, 65 tokens): name -> input width.
VIT_PARTS = {"block": 192, "attention": 192, "mlp": 192, "layernorm": 192, "gelu": 768}


def _tokens(batch: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 65, width), np.float32)


def vit_part_ours(batch: int, part: str) -> Runner:
    """Forward and backward (input and weights) of a part of our ViT-Tiny block (graph mode)."""
    import mindspore as ms

    from src.models import vit
    from src.utils.device import set_device

    set_device("CPU", ms.GRAPH_MODE)
    cells = {"block": lambda: vit.Block(192, 3), "attention": lambda: vit.Attention(192, 3)}
    cells.update(mlp=lambda: vit.Mlp(192), layernorm=lambda: vit._layer_norm(192))
    cells.update(gelu=lambda: ms.nn.GELU(approximate=False))

    class Sum(ms.nn.Cell):  # the part's output summed
        def __init__(self):
            super().__init__()
            self.part = cells[part]()

        def construct(self, x):
            return self.part(x).sum()

    cell = Sum().set_train(True)
    grad = ms.jit(ms.value_and_grad(cell, 0, cell.trainable_params() or None))
    x = ms.Tensor(_tokens(batch, VIT_PARTS[part]))
    return lambda n: timed(lambda: grad(x)[0].asnumpy(), n)


def vit_part_torch(batch: int, part: str) -> Runner:
    """The same part of the PyTorch twin (tests/equivalence/vit_torch.py), eager."""
    import torch

    torch_reference()
    from equivalence import vit_torch

    layer_norm = partial(torch.nn.LayerNorm, eps=1e-6)
    cells = {"block": lambda: vit_torch.Block(192, 3, 4, True, layer_norm, torch.nn.GELU)}
    cells.update(
        attention=lambda: vit_torch.Attention(192, 3, True), layernorm=lambda: layer_norm(192)
    )
    cells.update(mlp=lambda: vit_torch.Mlp(192, 768), gelu=torch.nn.GELU)
    cell, x = cells[part](), torch.from_numpy(_tokens(batch, VIT_PARTS[part])).requires_grad_()

    def step() -> float:
        cell.zero_grad()
        x.grad = None
        (out := cell(x).sum()).backward()
        return out.item()

    return lambda n: timed(step, n)


def eval_ours(batch: int) -> Runner:
    """Feature extraction as the kNN monitor runs it: ``BackboneAndEmbedding`` in eval mode."""
    import mindspore as ms

    from src.eval.features import BackboneAndEmbedding

    network = BackboneAndEmbedding(ours_model().encoder_q).set_train(False)
    images = ms.Tensor(random_images(batch)[0])
    return lambda n: timed(lambda: [out.asnumpy() for out in network(images)], n)


def eval_torch(batch: int) -> Runner:
    """The reference's ``encoder_q`` in eval mode under ``no_grad``."""
    import torch

    encoder = torch_reference().ModelMoCo(**RECIPE).encoder_q.eval()
    images = torch.from_numpy(random_images(batch)[0])
    return lambda n: timed(torch.no_grad()(lambda: encoder(images).numpy()), n)


def knn_data(bank: int, queries: int, dim: int = RECIPE["dim"]):
    """L2-normalised random queries and bank, float32, and bank labels of ``CLASSES``."""
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((n, dim), dtype=np.float32) for n in (bank, queries)]
    data = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in data]
    return data[1], data[0], rng.integers(0, CLASSES, bank)


def numpy_knn(queries, bank, labels, classes: int, k: int, t: float, chunk: int = 500):
    """Plain NumPy baseline of the demo's ``knn_predict``: chunked matmul, argpartition top-k,
    one-hot weighted vote; classes ranked best first."""
    ranked = []
    for start in range(0, len(queries), chunk):
        sim = queries[start : start + chunk] @ bank.T
        top = np.argpartition(sim, -k, axis=1)[:, -k:]
        weight = np.exp(np.take_along_axis(sim, top, axis=1) / t)
        one_hot = np.zeros((len(sim), k, classes), dtype=sim.dtype)
        np.put_along_axis(one_hot, labels[top][..., None], 1.0, axis=2)
        scores = (one_hot * weight[..., None]).sum(axis=1)
        ranked.append(np.argsort(-scores, axis=1, kind="stable"))
    return np.concatenate(ranked)


def knn(bank: int, queries: int, numpy: bool = False) -> Runner:
    """Our ``knn_predict`` or, with ``numpy``, the plain NumPy baseline, over random features."""
    from src.eval.knn import knn_predict

    predict, data = numpy_knn if numpy else knn_predict, knn_data(bank, queries)
    return lambda n: timed(lambda: predict(*data, CLASSES, KNN_K, KNN_T), n)


def cifar10_epochs(data_dir: str, batch: int, workers: int = 1) -> Callable:
    """``epoch -> create_train_dataset`` of the CIFAR-10 train split with the demo's views."""
    from src.data import create_augmentation, create_train_dataset
    from src.data.cifar import load_cifar

    split = load_cifar("cifar10", data_dir, "train")
    augmentation = create_augmentation("cifar10", 32, aug_plus=False)
    return lambda epoch: create_train_dataset(split, augmentation, batch, 0, epoch, workers)


def iterate(dataset, batches: int) -> tuple[float, float]:
    """Wall and CPU (all threads) seconds of ``batches`` batches of ``dataset`` after a first."""
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(iterator)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start, time.process_time() - start_cpu


def pipeline(batch: int, data_dir: str) -> Runner:
    """The train pipeline alone, a new epoch (other draws) per call."""
    build, epochs = cifar10_epochs(data_dir, batch), itertools.count(1)
    return lambda n: iterate(build(next(epochs)), n)[0]


def loop(batch: int, data_dir: str) -> Runner:
    """``n`` real steps through ``train_one_epoch`` (pipeline + step) of a fresh epoch; the
    iterator's start and first batch are timed, the dataset's construction is not."""
    from src.config import parse_args, settings
    from src.train.loop import TrainSettings, train_one_epoch
    from src.train.step import create_train_step

    train_step = create_train_step(ours_model(), LR, WEIGHT_DECAY)
    build = cifar10_epochs(data_dir, batch)
    run = settings(TrainSettings, parse_args(["--batch-size", str(batch)]))
    epochs = itertools.count(1)

    def steps(n: int) -> float:
        epoch = next(epochs)
        return train_one_epoch(train_step, build(epoch), epoch, replace(run, max_steps=n))[1]

    return steps


def conv(batch: int) -> Runner:
    """A 3x3 64->64 convolution forward on 32x32 images (PyNative): ``benchmarks.cpu_isa``."""
    import mindspore as ms

    from src.utils.device import set_device

    set_device("CPU", ms.PYNATIVE_MODE)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, 64, 32, 32), np.float32))
    layer = ms.nn.Conv2d(64, 64, 3, pad_mode="pad", padding=1, has_bias=False)
    return lambda n: timed(lambda: layer(x).asnumpy(), n)


def layer_shapes() -> list:
    """``(out_shape, weight_shape)`` of encoder_q's convolutions and dense layers (PyNative)."""
    import mindspore as ms

    encoder, layers = ours_model("pynative").encoder_q.set_train(False), []
    for _, cell in encoder.cells_and_names():
        if isinstance(cell, (ms.nn.Conv2d, ms.nn.Dense)):
            cell.register_forward_hook(
                lambda cell, _, out: layers.append((list(out.shape[1:]), list(cell.weight.shape)))
            )
    encoder(ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    return layers


TASKS = {
    task.__name__.replace("_", "-"): task
    for task in (
        step_ours,
        step_torch,
        v3_ours,
        vit_part_ours,
        vit_part_torch,
        v3_torch,
        eval_ours,
        eval_torch,
        knn,
        pipeline,
        loop,
        conv,
    )
}


def serve(task: str, options: dict) -> None:
    """Builds ``task``, times a first (warm-up, compile) unit, then answers each count read from
    stdin with its seconds, until end of input; JSON lines with the peak RSS so far. Library
    output goes to stderr; task ``layers`` answers ``layer_shapes()`` once."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(**values) -> None:
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        out.write(json.dumps({**values, "rss_mib": rss_mib}) + "\n")
        out.flush()

    if task == "layers":
        return reply(layers=layer_shapes())
    start = time.perf_counter()
    run = TASKS[task](**options)
    reply(setup_s=time.perf_counter() - start, first_s=run(1))
    for line in sys.stdin:
        gc.collect()  # a finished round's iterators and buffers, before the next
        reply(seconds=run(int(line)))
