"""The MoCo cell, one mechanism per test: key encoder, momentum update, queue, shuffle, loss."""

import mindspore as ms
import numpy as np
import pytest

from src.models import MoCo

IMAGE = 8  # small images keep these tests fast; the ResNet pools globally


def images(seed, n=8):
    return ms.Tensor(
        np.random.default_rng(seed).standard_normal((n, 3, IMAGE, IMAGE)).astype(np.float32)
    )


def permutations(seed, n=8):
    rng = np.random.default_rng(seed)
    return ms.Tensor(np.stack([rng.permutation(n), rng.permutation(n)]).astype(np.int32))


@pytest.fixture
def model():
    ms.set_seed(0)
    return MoCo(dim=16, K=32, m=0.9, T=0.2, bn_splits=4)


def test_key_encoder_starts_as_copy_and_is_frozen(model):
    assert len(model.params_q) == len(model.params_k) == len(model.encoder_q.trainable_params())
    for param_q, param_k in zip(model.params_q, model.params_k):
        assert param_q.name.replace("encoder_q.", "encoder_k.") == param_k.name
        np.testing.assert_array_equal(param_q.asnumpy(), param_k.asnumpy())
    assert not model.encoder_k.trainable_params()


def test_momentum_update_moves_key_weights_only(model):
    for i, param_q in enumerate(model.params_q):  # make q differ from k
        param_q.set_data(param_q + 1.0 + i)
    q_bn_mean = model.encoder_q.net[1].moving_mean
    q_bn_mean.set_data(ms.Tensor(np.full(q_bn_mean.shape, 3.0, np.float32)))
    # asnumpy() may share memory with the Parameter on CPU: copy before updating.
    before_q = [p.asnumpy().copy() for p in model.params_q]
    before_k = [p.asnumpy().copy() for p in model.params_k]
    model.momentum_update_key_encoder()
    for q0, k0, param_k in zip(before_q, before_k, model.params_k):
        np.testing.assert_allclose(param_k.asnumpy(), 0.9 * k0 + 0.1 * q0, rtol=1e-6, atol=1e-7)
    # BN running statistics are buffers, not averaged (as in the reference).
    np.testing.assert_array_equal(model.encoder_k.net[1].moving_mean.asnumpy(), 0)


def test_queue_is_normalised_and_enqueue_wraps(model):
    queue0 = model.queue.asnumpy().copy()
    assert queue0.shape == (32, 16)
    np.testing.assert_allclose(np.linalg.norm(queue0, axis=1), 1, rtol=1e-5)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((8, 16)).astype(np.float32) for _ in range(5)]
    for i, keys in enumerate(batches):
        model.dequeue_and_enqueue(ms.Tensor(keys))
        assert model.queue_ptr.asnumpy()[0] == (i + 1) * 8 % 32
    queue = model.queue.asnumpy().copy()
    np.testing.assert_array_equal(queue[0:8], batches[4])  # the fifth batch overwrote the oldest
    for i in range(1, 4):
        np.testing.assert_array_equal(queue[8 * i : 8 * (i + 1)], batches[i])


def test_shuffle_unshuffle_round_trip(model):
    x = ms.Tensor(np.arange(8 * 3, dtype=np.float32).reshape(8, 3))
    idx = permutations(5)[0]
    shuffled = model._batch_shuffle(x, idx)
    np.testing.assert_array_equal(shuffled.asnumpy(), x.asnumpy()[idx.asnumpy()])
    np.testing.assert_array_equal(model._batch_unshuffle(shuffled, idx).asnumpy(), x.asnumpy())


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _info_nce(q, k, queue, T):
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / T
    logits = logits - logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0]))


@pytest.mark.parametrize("symmetric", [False, True])
def test_loss_matches_numpy_infonce(mode, symmetric):
    ms.set_seed(0)
    model = MoCo(dim=16, K=32, T=0.2, bn_splits=4, symmetric=symmetric)
    model.set_train()
    im_1, im_2, idx = images(1), images(2), permutations(3)
    queue = model.queue.asnumpy().copy()
    loss, keys = model(im_1, im_2, idx)

    def features(im_q, im_k, perm):
        # Keys go through encoder_k in shuffled order (split BN groups change), then back.
        q = _normalize(model.encoder_q(im_q).asnumpy())
        k = _normalize(model.encoder_k(im_k[ms.Tensor(perm)]).asnumpy())[np.argsort(perm)]
        return q, k

    ms.set_context(mode=ms.PYNATIVE_MODE)  # the reference side needs no compilation
    perms = idx.asnumpy()
    q1, k2 = features(im_1, im_2, perms[0])
    expected = _info_nce(q1, k2, queue, 0.2)
    expected_keys = k2
    if symmetric:
        q2, k1 = features(im_2, im_1, perms[1])
        expected += _info_nce(q2, k1, queue, 0.2)
        expected_keys = np.concatenate([k1, k2])
    np.testing.assert_allclose(float(loss.asnumpy()), expected, rtol=1e-5)
    np.testing.assert_allclose(keys.asnumpy(), expected_keys, atol=1e-5)


def test_loss_normaliser_has_one_plus_k_terms(model):
    """With a huge temperature every logit is ~0, so the loss is ln(1 + K)."""
    model.T = 1e6
    model.set_train()
    loss, _ = model(images(1), images(2), permutations(3))
    np.testing.assert_allclose(float(loss.asnumpy()), np.log(1 + 32), rtol=1e-5)
