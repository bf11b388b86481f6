"""MoCo's augmented linear protocol: its epochs of crops, the frozen backbone, exact resume."""

import mindspore as ms
import numpy as np
import pytest

from src.data import ImageSplit, create_linear_dataset
from src.data import transforms as T
from src.eval import lincls
from src.eval.linear_probe import LinearProbeConfig
from src.models import create_backbone
from src.train.checkpoint import CheckpointError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def split_of(n, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ImageSplit(images, rng.integers(0, classes, n), [f"c{i}" for i in range(classes)])


def epoch_batches(split, seed, epoch, batch_size=16, size=8):
    dataset = create_linear_dataset(split, MEAN, STD, batch_size, seed, epoch, size)
    batches = list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), batches


def test_an_epoch_is_every_image_once_cropped_a_function_of_seed_and_epoch():
    split = split_of(40)
    images, labels, batches = epoch_batches(split, seed=1, epoch=1)
    assert [len(b[0]) for b in batches] == [16, 16, 8]  # main_lincls keeps the last batch
    assert images.shape == (40, 3, 8, 8) and images.dtype == np.float32
    assert labels.dtype == np.int32 and sorted(labels) == sorted(split.labels)
    again, _, _ = epoch_batches(split, seed=1, epoch=1)
    assert np.array_equal(images, again)
    assert not np.array_equal(images, epoch_batches(split, seed=1, epoch=2)[0])
    assert not np.array_equal(images, epoch_batches(split, seed=2, epoch=1)[0])
    # Cropped: almost no view is the whole image, normalised (RandomResizedCrop area 8-100%).
    plain = (split.images.astype(np.float32) / 255 - 0.5) / 0.25
    order = np.random.default_rng([1, 1]).permutation(40)
    whole = [np.allclose(v, plain[i].transpose(2, 0, 1), atol=1e-5) for v, i in zip(images, order)]
    assert sum(whole) <= 4


def flip_rate(n=2000):
    """The fraction of an epoch's views that are mirrored (boxes: the whole image)."""
    split = split_of(n, size=4)
    images, _, _ = epoch_batches(split, seed=0, epoch=3, batch_size=500, size=4)
    plain = ((split.images.astype(np.float32) / 255 - 0.5) / 0.25).transpose(0, 3, 1, 2)
    ordered = plain[np.random.default_rng([0, 3]).permutation(n)]
    mirrored = np.all(np.isclose(images, ordered[..., ::-1], atol=1e-5), axis=(1, 2, 3))
    kept = np.all(np.isclose(images, ordered, atol=1e-5), axis=(1, 2, 3))
    assert np.all(mirrored | kept) and not np.any(mirrored & kept)  # random 4x4: no symmetry
    return mirrored.mean()


def test_flips_are_drawn_with_probability_one_half(monkeypatch):
    """2,000 flips ~ Binomial(2000, 0.5), sd 0.011: the rate must lie within 0.5 +- 0.05 (4.5 sd,
    a false alarm about once in 150,000 runs). A flip with p 0.6 fails it (checked below)."""
    whole = lambda rng, count, h, w, *a: np.tile([0, 0, h, w], (count, 1))  # noqa: E731
    monkeypatch.setattr(T, "sample_crop_boxes", whole)
    assert abs(flip_rate() - 0.5) < 0.05
    monkeypatch.setattr(T, "FLIP_PROB", 0.6)
    assert abs(flip_rate() - 0.5) >= 0.05


def classifier_and_step(seed=0, lr=30.0, **config):
    ms.set_seed(seed)
    encoder = create_backbone("resnet18", 16, bn_splits=2)
    rng = np.random.default_rng(seed)
    for p in encoder.get_parameters():  # BN statistics that a training step would visibly move
        if p.name.endswith("moving_mean"):
            p.set_data(ms.Tensor(rng.normal(0.0, 0.2, p.shape).astype(np.float32)))
        elif p.name.endswith("moving_variance"):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    probe = LinearProbeConfig(lr=lr, **config)
    classifier = lincls.FrozenBackboneClassifier(encoder, 3, probe.init_std, probe.seed)
    return classifier, lincls.LinearTrainStep(classifier, probe), probe


def snapshot(cell):
    return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}


def test_backbone_stays_frozen_bit_for_bit(mode):
    classifier, step, _ = classifier_and_step()
    step.set_train(True)  # as a training loop would: the backbone must stay in eval mode
    before, fc_before = snapshot(classifier.encoder), snapshot(classifier.fc)
    _, _, batches = epoch_batches(split_of(32), seed=0, epoch=1)
    for images, labels in batches:
        loss = step(ms.Tensor(images), ms.Tensor(labels))
        assert np.isfinite(loss.asnumpy())
    after = snapshot(classifier.encoder)
    assert any("moving_mean" in name for name in after)
    assert all(np.array_equal(before[k], after[k]) for k in before), "backbone or BN moved"
    assert not np.array_equal(fc_before["fc.weight"], classifier.fc.weight.asnumpy())
    assert [p.name for p in step.optimizer.parameters] == ["fc.weight", "fc.bias"]


def test_frozen_check_fails_on_a_backbone_in_train_mode():
    """The mutation behind the test above: BN in train mode moves its statistics."""
    classifier, step, _ = classifier_and_step()
    before = snapshot(classifier.encoder)
    classifier.encoder.add_flags_recursive(training=True)  # bypasses the frozen set_train
    images, labels, _ = epoch_batches(split_of(16), seed=0, epoch=1)
    step(ms.Tensor(images), ms.Tensor(labels))
    after = snapshot(classifier.encoder)
    assert not all(np.array_equal(before[k], after[k]) for k in before)


class Interrupted(Exception):
    pass


def train(path, resume=None, stop_at=None, lr=30.0):
    """3 epochs (lr x0.1 from the second) on 24 images; ``stop_at``: killed as it begins."""
    split = split_of(24)
    classifier, step, probe = classifier_and_step(lr=lr, epochs=3, batch_size=8, schedule=(1,))

    def data(epoch):
        if epoch == stop_at:
            raise Interrupted
        return create_linear_dataset(split, MEAN, STD, 8, probe.seed, epoch, 8)

    recorded = {"pretrained": "digest", "linear_lr": probe.lr}
    first = lincls.train_linear(step, data, probe, str(path), recorded, resume)
    return first, snapshot(classifier.fc)


def test_resume_continues_exactly_and_refuses_other_settings(tmp_path):
    _, straight = train(tmp_path / "straight.ckpt")
    path = tmp_path / "killed.ckpt"
    with pytest.raises(Interrupted):
        train(path, stop_at=3)  # the checkpoint of epoch 2 is left
    written = path.read_bytes()
    with pytest.raises(CheckpointError, match="linear_lr=30.0, this run has linear_lr=3.0"):
        train(tmp_path / "other.ckpt", resume=str(path), lr=3.0)
    assert path.read_bytes() == written and not (tmp_path / "other.ckpt").exists()
    first, resumed = train(path, resume=str(path))
    assert first == 3
    assert all(np.array_equal(straight[k], resumed[k]) for k in straight)
