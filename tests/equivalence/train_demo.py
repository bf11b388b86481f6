"""Trains the PyTorch reference (moco_torch.py) as the demo does, then its kNN test.

    python tests/equivalence/train_demo.py --data-dir ../shared/data --seed 0 --stop-after 1

The demo's recipe: batch 512 (drop_last, reshuffled each epoch), SGD lr 0.06 with the cosine
schedule over ``--epochs``, wd 5e-4, momentum 0.9, bn-splits 8, K 4096, m 0.99, T 0.1, the
augmentation of demo_augment.py; kNN k 200, t 0.1 over the whole train set (test transform) and
test set. ``--stop-after N`` ends after epoch N of the schedule. Prints and writes one JSON.
The reduced recipe of docs/curve.md sets --batch-size, --lr, --moco-k and the subsets.
"""

import argparse
import json
import os
import pickle
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_augment import augment  # noqa: E402
from moco_torch import ModelMoCo, adjust_learning_rate, create_optimizer, knn_predict  # noqa: E402

MEAN, STD = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])


def read_cifar10(root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images and int64 labels of the python-version CIFAR-10 (trusted local files)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        with open(os.path.join(root, "cifar-10-batches-py", name), "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels += batch["labels"]
    return np.concatenate(images), np.array(labels, dtype=np.int64)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """ToTensor + Normalize of a uint8 NHWC batch."""
    x = (images.astype(np.float32) / 255 - MEAN.astype(np.float32)) / STD.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def train_epoch(net, optimizer, images, rng, batch_size, log_every=10) -> float:
    net.train()
    order, total, count = rng.permutation(len(images)), 0.0, 0
    steps, start = len(images) // batch_size, time.time()
    for step in range(steps):
        batch = images[order[step * batch_size : (step + 1) * batch_size]]
        im_1 = to_tensor(np.stack([augment(rng, im) for im in batch]))
        im_2 = to_tensor(np.stack([augment(rng, im) for im in batch]))
        loss = net(im_1, im_2, torch.from_numpy(rng.permutation(batch_size)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * batch_size, count + batch_size
        if (step + 1) % log_every == 0 or step + 1 == steps:
            rate = count / (time.time() - start)
            print(f"step {step + 1}/{steps} loss {total / count:.4f} {rate:.1f} img/s", flush=True)
    return total / count


@torch.no_grad()
def features(encoder, images, batch_size=512) -> torch.Tensor:
    encoder.eval()
    out = [
        encoder(to_tensor(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
    ]
    return F.normalize(torch.cat(out), dim=1)


def knn_top1(encoder, train, test, k=200, t=0.1) -> float:
    """The demo's ``test``: a feature bank of the train set, weighted kNN on the test set."""
    bank, bank_labels = features(encoder, train[0]).t().contiguous(), torch.from_numpy(train[1])
    query = features(encoder, test[0])
    correct = 0
    for i in range(0, len(query), 512):
        pred = knn_predict(query[i : i + 512], bank, bank_labels, 10, k, t)
        correct += (pred[:, 0] == torch.from_numpy(test[1][i : i + 512])).sum().item()
    return 100.0 * correct / len(query)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=200, help="length of the cosine schedule")
    parser.add_argument("--stop-after", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.06)
    parser.add_argument("--moco-k", type=int, default=4096)
    parser.add_argument("--knn-interval", type=int, default=1, help="epochs between kNN tests")
    parser.add_argument("--train-subset", type=int, default=0)
    parser.add_argument("--test-subset", type=int, default=0)
    parser.add_argument("--knn-init", action="store_true", help="also the kNN before training")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, test = read_cifar10(args.data_dir, True), read_cifar10(args.data_dir, False)
    if args.train_subset:
        train = tuple(a[: args.train_subset] for a in train)
    if args.test_subset:
        test = tuple(a[: args.test_subset] for a in test)
    net = ModelMoCo(dim=128, K=args.moco_k, m=0.99, T=0.1, arch="resnet18", bn_splits=8)
    optimizer = create_optimizer(net, args.lr, 5e-4)
    result = {"seed": args.seed, "epochs": args.epochs, "threads": torch.get_num_threads()}
    if args.knn_init:
        result["knn_top1_init"] = knn_top1(net.encoder_q, train, test)
        print(f"init kNN top-1 {result['knn_top1_init']:.2f}", flush=True)
    for epoch in range(1, args.stop_after + 1):
        start = time.time()
        lr = adjust_learning_rate(optimizer, epoch, args.lr, args.epochs, True, [])
        loss = train_epoch(net, optimizer, train[0], rng, args.batch_size)
        seconds = time.time() - start
        last = epoch == args.stop_after
        top1 = (
            knn_top1(net.encoder_q, train, test) if last or epoch % args.knn_interval == 0 else None
        )
        print(f"epoch {epoch} lr {lr:.6f} loss {loss:.4f} kNN top-1 {top1} ({seconds:.0f}s)")
        result[f"epoch{epoch}"] = {"lr": lr, "loss": loss, "knn_top1": top1, "seconds": seconds}
        if args.out:  # after every epoch: a long run's finished epochs survive an interruption
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
