"""The child side of ``benchmarks.run``: one configuration per process, timed on request.

A builder sets a configuration up and returns ``run(n)``, the seconds of ``n`` units (steps,
batches or kNN passes). Heavy imports stay inside the builders, so a PyTorch child never loads
MindSpore (and the reverse): each child's peak RSS is its own configuration's.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import resource
import sys
import time
from argparse import Namespace
from collections.abc import Callable
from functools import partial
from typing import TextIO

import numpy as np

# The demo's recipe, for both implementations (tests/equivalence/train_demo.py).
RECIPE = {"dim": 128, "K": 4096, "m": 0.99, "T": 0.1, "arch": "resnet18", "bn_splits": 8}
LR, WEIGHT_DECAY, KNN_K, KNN_T, CLASSES = 0.06, 5e-4, 200, 0.1, 10
TORCH_THREADS = 2
EVAL_BATCH_SIZE = 256  # the kNN monitor's (src.eval.features; importing it would load MindSpore)
Runner = Callable[[int], float]


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], n: int) -> float:
    """Seconds of ``n`` calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def random_images(batch: int, seed: int = 0, size: int = 32) -> list[np.ndarray]:
    """Two float32 views, batch x 3 x size x size, standard normal."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, 3, size, size), dtype=np.float32) for _ in range(2)]


def ours_args(mode: str, batch: int, bn_splits: int = RECIPE["bn_splits"]) -> Namespace:
    """Selects the CPU as ``main.py`` does and returns its config for the demo's recipe."""
    import mindspore as ms

    from src.config import parse_args
    from src.utils.device import set_device

    set_device("CPU", ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    flags = {"arch": RECIPE["arch"], "moco-dim": RECIPE["dim"], "moco-k": RECIPE["K"]}
    flags.update({"moco-m": RECIPE["m"], "moco-t": RECIPE["T"], "bn-splits": bn_splits})
    flags.update({"lr": LR, "wd": WEIGHT_DECAY, "batch-size": batch, "results-dir": "unused"})
    return parse_args([item for key, value in flags.items() for item in (f"--{key}", str(value))])


def ours_train_step(mode: str, batch: int, bn_splits=RECIPE["bn_splits"], args=None):
    """``(train_step, args)`` built as ``main.py`` builds them (``args``: a prepared config)."""
    from src.models import create_moco
    from src.train.step import create_train_step

    args = args or ours_args(mode, batch, bn_splits)
    train_step = create_train_step(create_moco(args), args.lr, args.wd, args.amp_level)
    train_step.set_train(True)
    return train_step, args


def torch_reference():
    """``tests/equivalence/moco_torch.py``, the PyTorch reference, on ``TORCH_THREADS`` threads."""
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
    from equivalence import moco_torch

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    return moco_torch


def torch_moco():
    """The reference's ``ModelMoCo`` with the demo's recipe."""
    return torch_reference().ModelMoCo(**RECIPE)


def step_ours(batch: int, mode: str, **_) -> Runner:
    """Momentum update, forward, backward, SGD and enqueue on random images, synchronised."""
    import mindspore as ms

    train_step, args = ours_train_step(mode, batch)
    return step_runner(train_step, args, *(ms.Tensor(x) for x in random_images(batch)))


def step_runner(train_step, args: Namespace, im_1, im_2) -> Runner:
    """Times ``n`` steps of ``train_step`` on the same two views, synchronised."""
    import mindspore as ms

    from src.train.loop import shuffle_permutations

    permutations = ms.Tensor(shuffle_permutations(args.seed, 1, 1, len(im_1))[0])
    return lambda n: timed(lambda: train_step(im_1, im_2, permutations)[0].asnumpy(), n)


def step_torch(batch: int, **_) -> Runner:
    """The reference's step as ``train_demo.py`` runs it: forward, zero_grad, backward, SGD."""
    import torch

    reference = torch_reference()
    net = reference.ModelMoCo(**RECIPE)
    net.train()
    optimizer = reference.create_optimizer(net, LR, WEIGHT_DECAY)
    im_1, im_2 = (torch.from_numpy(x) for x in random_images(batch))
    permutation = torch.from_numpy(np.random.default_rng(0).permutation(batch))

    def step() -> float:
        loss = net(im_1, im_2, permutation)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return lambda n: timed(step, n)


def part_ours(batch: int, part: str, bn_splits=RECIPE["bn_splits"], **variant) -> Runner:
    """A part of our step in graph mode (``step``, ``q_fwd_bwd``: encoder_q's forward and
    backward, ``k_fwd``: encoder_k's forward, ``momentum``: the key encoder's update, ``sgd``:
    the optimizer's update), or the step changed by ``variant``: no gradient finiteness check,
    another ``jit_level``, ``context`` or ``amp_level``, another ``stem`` and ``image_size``."""
    import mindspore as ms
    from mindspore import nn

    if variant.get("finite_check") is False:  # read by the step when it is compiled
        ms.amp.all_finite = lambda grads: ms.ops.ones((), ms.bool_)
    args = ours_args("graph", batch, bn_splits)
    if variant.get("jit_level"):
        ms.set_context(jit_config={"jit_level": variant["jit_level"]})
    ms.set_context(**variant.get("context", {}))  # e.g. thread settings
    args.amp_level = variant.get("amp_level", "O0")
    args.stem, args.image_size = variant.get("stem", "cifar"), variant.get("image_size", 32)
    train_step, args = ours_train_step("graph", batch, bn_splits, args)
    images = random_images(batch, size=args.image_size)
    model, (im_1, im_2) = train_step.model, (ms.Tensor(x) for x in images)
    if part == "step":
        return step_runner(train_step, args, im_1, im_2)

    class Sum(nn.Cell):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def construct(self, x):
            return self.encoder(x).sum()

    class Part(nn.Cell):
        def __init__(self):
            super().__init__()
            params = model.encoder_q.trainable_params()
            self.grad = ms.value_and_grad(Sum(model.encoder_q), None, params)
            self.encoder_k = model.encoder_k

        def construct(self, x):
            if part == "momentum":
                return model.momentum_update_key_encoder()
            if part == "sgd":
                return train_step.optimizer(self.grads)
            # All the gradients are outputs: an unused one would be pruned from the graph.
            return self.grad(x) if part == "q_fwd_bwd" else self.encoder_k(x)

    cell = Part()
    cell.grads = tuple(ms.ops.ones_like(p) * 1e-3 for p in train_step.optimizer.parameters)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    return lambda n: timed(lambda: ms.Tensor(first(cell(im_1))).asnumpy(), n)


def part_torch(batch: int, part: str, **_) -> Runner:
    """The reference's step, or the same parts as ``part_ours`` (eager, train mode)."""
    import torch

    if part == "step":
        return step_torch(batch)
    net = torch_moco().train()
    images = torch.from_numpy(random_images(batch)[0])

    def q_fwd_bwd():
        net.encoder_q.zero_grad()
        loss = net.encoder_q(images).sum()
        loss.backward()
        return loss.item()

    def k_fwd():
        with torch.no_grad():
            return net.encoder_k(images).sum().item()

    optimizer = torch_reference().create_optimizer(net, LR, WEIGHT_DECAY)
    for param in net.encoder_q.parameters():
        param.grad = torch.full_like(param, 1e-3)
    parts = {"q_fwd_bwd": q_fwd_bwd, "k_fwd": k_fwd, "sgd": optimizer.step}
    parts["momentum"] = torch.no_grad()(net._momentum_update_key_encoder)
    return lambda n: timed(parts[part], n)


def eval_ours(batch: int, **_) -> Runner:
    """Feature extraction as the kNN monitor runs it: ``BackboneAndEmbedding`` in eval mode."""
    import mindspore as ms

    from src.eval.features import BackboneAndEmbedding
    from src.models import create_moco

    network = BackboneAndEmbedding(create_moco(ours_args("graph", batch)).encoder_q)
    network.set_train(False)
    images = ms.Tensor(random_images(batch)[0])
    return lambda n: timed(lambda: [out.asnumpy() for out in network(images)], n)


def eval_torch(batch: int, **_) -> Runner:
    """The reference's ``encoder_q`` in eval mode under ``no_grad``."""
    import torch

    encoder = torch_moco().encoder_q.eval()
    images = torch.from_numpy(random_images(batch)[0])

    def forward():
        with torch.no_grad():
            return encoder(images).numpy()

    return lambda n: timed(forward, n)


def knn_data(bank: int, queries: int, dim: int = RECIPE["dim"]):
    """L2-normalised random bank and queries, float32, and bank labels of ``CLASSES``."""
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


def knn_ours(bank: int, queries: int, **_) -> Runner:
    """``src.eval.knn.knn_predict`` over random features."""
    from src.eval.knn import knn_predict

    data = knn_data(bank, queries)
    return lambda n: timed(lambda: knn_predict(*data, CLASSES, KNN_K, KNN_T), n)


def knn_numpy(bank: int, queries: int, **_) -> Runner:
    """The plain NumPy baseline over the same random features."""
    data = knn_data(bank, queries)
    return lambda n: timed(lambda: numpy_knn(*data, CLASSES, KNN_K, KNN_T), n)


def cifar10_train(data_dir: str):
    """The CIFAR-10 train split and its normalisation spec."""
    from src.data import get_dataset_spec, load_cifar

    return load_cifar("cifar10", data_dir, "train"), get_dataset_spec("cifar10")


def pipeline(batch: int, data_dir: str, **_) -> Runner:
    """``create_train_dataset`` alone, one epoch (other draws) per call; ``n`` timed batches
    after a warm-up one (``benchmarks.pipeline.measure``)."""
    from benchmarks.pipeline import measure
    from src.data import create_train_dataset

    split, spec = cifar10_train(data_dir)
    epochs = itertools.count(1)

    def run(n: int) -> float:
        build = partial(create_train_dataset, split, spec.mean, spec.std, batch, 0, next(epochs))
        return n * batch / measure(build, n, batch)[0]

    return run


def loop(batch: int, data_dir: str, **_) -> Runner:
    """``n`` real steps through ``train_one_epoch`` (pipeline + step) of a fresh epoch; the
    iterator's start and first batch are included, the dataset's construction is not."""
    from src.data import create_train_dataset
    from src.train.loop import train_one_epoch

    train_step, args = ours_train_step("graph", batch)
    split, spec = cifar10_train(data_dir)
    epochs = itertools.count(1)

    def run(n: int) -> float:
        epoch = next(epochs)
        dataset = create_train_dataset(
            split, spec.mean, spec.std, batch, args.seed, epoch, args.workers
        )
        start = time.perf_counter()
        train_one_epoch(train_step, dataset, epoch, args.epochs, args.lr, args.seed, batch, n)
        return time.perf_counter() - start

    return run


def layer_shapes(**_) -> list:
    """``(out_shape, weight_shape)`` of every convolution and dense layer of ours ``encoder_q``,
    recorded by forward hooks over one 32 x 32 image (PyNative)."""
    import mindspore as ms
    from mindspore import nn

    from src.models import create_moco

    encoder = create_moco(ours_args("pynative", RECIPE["bn_splits"])).encoder_q
    encoder.set_train(False)
    layers = []

    def record(cell, inputs, output):
        layers.append((list(output.shape[1:]), list(cell.weight.shape)))

    for _, cell in encoder.cells_and_names():
        if isinstance(cell, (nn.Conv2d, nn.Dense)):
            cell.register_forward_hook(record)
    encoder(ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    return layers


TASKS = {
    "step-ours": step_ours,
    "step-torch": step_torch,
    "eval-ours": eval_ours,
    "eval-torch": eval_torch,
    "knn-ours": knn_ours,
    "knn-numpy": knn_numpy,
    "pipeline": pipeline,
    "loop": loop,
    "part-ours": part_ours,
    "part-torch": part_torch,
}


def reply(out: TextIO, **values) -> None:
    """One JSON line to the parent, with the peak RSS so far."""
    out.write(json.dumps({**values, "rss_mib": peak_rss_mib()}) + "\n")
    out.flush()


def serve(task: str, options: dict) -> None:
    """Builds ``task``, times a first (warm-up, compile) unit, then answers each count read from
    stdin with its seconds until 0 or end of input. Library output goes to stderr."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    if task == "layers":
        reply(out, layers=layer_shapes())
        return
    start = time.perf_counter()
    run = TASKS[task](**options)
    setup = time.perf_counter() - start
    reply(out, setup_s=setup, first_s=run(1))
    for line in sys.stdin:
        if int(line) <= 0:
            break
        gc.collect()  # a finished round's iterators and buffers, before the next
        reply(out, seconds=run(int(line)))
