import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.niche.capsules import predictions, routing, squash

I, J, D = 11, 5, 7
routing_jit = jax.jit(routing, static_argnums=1)


def random(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def numpy_squash(s):
    n = np.linalg.norm(s, axis=-1, keepdims=True)
    return n**2 / (1 + n**2) * s / n


def numpy_routing(u_hat, r):
    u_hat = np.float64(u_hat)
    b = np.zeros(u_hat.shape[:2])
    for _ in range(r):
        c = np.exp(b - b.max(1, keepdims=True))
        c /= c.sum(1, keepdims=True)
        v = numpy_squash(np.einsum("ij,ijd->jd", c, u_hat))
        b = b + np.einsum("ijd,jd->ij", u_hat, v)
    return v, c


def test_squash_keeps_the_direction_and_maps_the_length_into_zero_one():
    s = random(0, 3, 7) * np.array([[0.01], [1.0], [100.0]], np.float32)
    v = np.asarray(squash(s))
    np.testing.assert_allclose(v, numpy_squash(np.float64(s)), rtol=1e-5, atol=1e-7)
    cos = np.sum(v * s, -1) / (np.linalg.norm(v, axis=-1) * np.linalg.norm(s, axis=-1))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-6)
    lengths = np.linalg.norm(v, axis=-1)
    assert np.all(lengths < 1) and lengths[0] < 1e-3 and lengths[2] > 0.999
    np.testing.assert_allclose(lengths, np.linalg.norm(s, axis=-1) ** 2 / (1 + np.linalg.norm(s, axis=-1) ** 2), rtol=1e-5)


def test_squash_of_zero_is_zero_with_a_finite_gradient():
    zero = jnp.zeros(3)
    np.testing.assert_array_equal(squash(zero), zero)
    g = jax.jit(jax.jacobian(squash))(zero)
    assert np.all(np.isfinite(g))


def test_predictions_match_numpy():
    W, u = random(1, I, J, 3, D), random(2, I, 3)
    want = np.einsum("ijed,ie->ijd", np.float64(W), np.float64(u))
    np.testing.assert_allclose(predictions(W, u), want, rtol=1e-5, atol=1e-5)


def test_routing_matches_a_numpy_loop_and_couplings_sum_to_one():
    u_hat = random(3, I, J, D)
    for r in (1, 3):
        v, c = routing_jit(u_hat, r)
        want_v, want_c = numpy_routing(u_hat, r)
        np.testing.assert_allclose(v, want_v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(c).sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(numpy_routing(u_hat, 1)[1], 1 / J)  # one iteration: uniform couplings


def test_agreement_raises_the_coupling_with_every_iteration():
    rng = np.random.default_rng(4)
    u_hat = rng.standard_normal((I, J, D)).astype(np.float32) * 0.3
    pose = rng.standard_normal(D).astype(np.float32)
    u_hat[:6, 2] = pose + 0.05 * rng.standard_normal((6, D))  # six children agree on parent 2
    couplings = [np.asarray(routing_jit(u_hat, r)[1])[:6, 2] for r in (1, 2, 3)]
    assert np.all(couplings[0] == np.float32(1 / J))
    assert np.all(couplings[1] > couplings[0]) and np.all(couplings[2] > couplings[1]), couplings
    v, _ = routing_jit(u_hat, 3)
    assert int(np.argmax(np.linalg.norm(v, axis=1))) == 2  # the agreed-on parent is the most present


def test_routing_is_equivariant_to_parents_and_invariant_to_children_order():
    u_hat = random(5, I, J, D)
    v, c = routing_jit(u_hat, 3)
    pj, pi = np.random.default_rng(6).permutation(J), np.random.default_rng(7).permutation(I)
    v2, c2 = routing_jit(u_hat[pi][:, pj], 3)
    np.testing.assert_allclose(v2, np.asarray(v)[pj], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c2, np.asarray(c)[pi][:, pj], rtol=1e-5, atol=1e-6)


def test_routing_gradients_match_finite_differences():
    u_hat = random(8, I, J, D)
    check_grads(lambda u: routing_jit(u, 3)[0], (u_hat,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_bfloat16_is_close():
    u_hat = random(9, I, J, D)
    v, c = routing_jit(u_hat.astype(jnp.bfloat16), 3)
    assert v.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(v), numpy_routing(u_hat, 3)[0], atol=3e-2)


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="u_hat"):
        routing(np.ones((3, 2), np.float32), 3)
    with pytest.raises(TypeError, match="u_hat"):
        routing(np.ones((3, 2, 2), np.int32), 3)
    with pytest.raises(TypeError, match="n_iters"):
        routing(np.ones((3, 2, 2), np.float32), 3.0)
    with pytest.raises(ValueError, match="n_iters"):
        routing(np.ones((3, 2, 2), np.float32), 0)
    with pytest.raises(ValueError, match="u"):
        predictions(np.ones((3, 2, 4, 5), np.float32), np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match="s"):
        squash(np.ones(3, np.int32))
