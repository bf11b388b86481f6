"""One compiled training step: order of the mechanisms, SGD with weight decay on every weight."""

import mindspore as ms
import numpy as np

from src.models import MoCo
from src.train.step import MoCoTrainStep, create_optimizer, set_learning_rate

LR, WD, M = 0.1, 0.01, 0.9


def build():
    ms.set_seed(0)
    model = MoCo(dim=16, K=32, m=M, T=0.2, bn_splits=4)
    return model, create_optimizer(model, LR, WD)


def batch(seed, n=16):
    # 16x16 images leave layer4 2x2, so every BN split still sees 16 values per channel.
    rng = np.random.default_rng(seed)
    views = [ms.Tensor(rng.standard_normal((n, 3, 16, 16)).astype(np.float32)) for _ in range(2)]
    idx = ms.Tensor(np.stack([rng.permutation(n), rng.permutation(n)]).astype(np.int32))
    return (*views, idx)


def snapshot(params):
    return {p.name: p.asnumpy().copy() for p in params}


def test_optimizer_holds_encoder_q_only():
    model, optimizer = build()
    names = [p.name for p in optimizer.parameters]
    assert names == [p.name for p in model.encoder_q.trainable_params()]
    assert any(name.endswith(".gamma") for name in names)


def test_one_step_matches_the_reference_order(mode):
    """k <- m k + (1 - m) q with q *before* SGD; then q <- q - lr (g + wd q); enqueue keys."""
    model, optimizer = build()
    step = MoCoTrainStep(model, optimizer)
    step.set_train()
    inputs = batch(1)

    # The gradient the step should apply, from an identical model (same seed, same state), eagerly.
    ms.set_context(mode=ms.PYNATIVE_MODE)
    twin, _ = build()
    twin.set_train()
    twin.momentum_update_key_encoder()
    grad_fn = ms.value_and_grad(twin, None, ms.ParameterTuple(twin.params_q), has_aux=True)
    (twin_loss, twin_keys), grads = grad_fn(*inputs)
    grads = [g.asnumpy() for g in grads]
    assert sum(float(np.abs(g).sum()) for g in grads) > 0, "the loss must reach encoder_q"

    q0, k0 = snapshot(model.params_q), snapshot(model.params_k)
    ms.set_context(mode=getattr(ms, f"{mode}_MODE"))
    loss, grads_finite = step(*inputs)
    assert bool(grads_finite.asnumpy())

    # Two separately compiled graphs may fuse float32 ops differently: ~1e-5 relative.
    np.testing.assert_allclose(float(loss.asnumpy()), float(twin_loss.asnumpy()), rtol=1e-4)
    for q, k_param in zip(q0.values(), model.params_k):
        np.testing.assert_allclose(
            k_param.asnumpy(), M * k0[k_param.name] + (1 - M) * q, rtol=1e-5, atol=1e-7
        )
    for (name, q), grad, param in zip(q0.items(), grads, model.params_q):
        # First momentum step: the velocity is the (decayed) gradient itself; gamma/beta decay too.
        np.testing.assert_allclose(
            param.asnumpy(), q - LR * (grad + WD * q), rtol=1e-4, atol=1e-6, err_msg=name
        )
    np.testing.assert_allclose(model.queue.asnumpy()[:16], twin_keys.asnumpy(), atol=1e-5)
    assert model.queue_ptr.asnumpy()[0] == 16


def test_learning_rate_can_change_between_steps(mode):
    model, optimizer = build()
    step = MoCoTrainStep(model, optimizer)
    step.set_train()
    step(*batch(1))  # PyNative ignored Parameter.set_data on the lr after a first step
    set_learning_rate(optimizer, 0.0)
    before = snapshot(model.params_q)
    step(*batch(2))
    # lr 0: encoder_q is unchanged even though the step ran (and the queue moved).
    for param in model.params_q:
        np.testing.assert_array_equal(param.asnumpy(), before[param.name])
    assert model.queue_ptr.asnumpy()[0] == 0  # two steps of 16 keys wrap a queue of 32


def test_non_finite_gradients_are_flagged():
    """NaN images: ReLU hides them from the loss on CPU, but the gradient flag does not."""
    model, optimizer = build()
    step = MoCoTrainStep(model, optimizer)
    step.set_train()
    im_1, im_2, idx = batch(3)
    _, grads_finite = step(im_1 * float("nan"), im_2, idx)
    assert not bool(grads_finite.asnumpy())
