r"""Speculative decoding
====================

A small draft model proposes several tokens and the large target model checks them all in one pass,
keeping the longest run it agrees with: faster sampling whose output distribution is exactly the
target's, to reach for when decoding a large model is bound by memory rather than arithmetic.

Equation
--------

.. math::

   \begin{aligned}
   \tilde{x}_i &\sim q_i, \quad i = 1, \dots, \gamma, &
   \text{accept } \tilde{x}_i \text{ with probability } & \min\!\left(1, \frac{p_i(\tilde{x}_i)}{q_i(\tilde{x}_i)}\right)
     \text{ until the first rejection}, \\
   x_{n+1} &\sim \begin{cases} p'_{n+1} & n < \gamma \\ p_{\gamma+1} & n = \gamma \end{cases}, &
   p'_i(x) &= \frac{\max\bigl(0,\, p_i(x) - q_i(x)\bigr)}{\sum_{v} \max\bigl(0,\, p_i(v) - q_i(v)\bigr)}, \\
   \alpha &= \sum_{v} \min\bigl(p(v), q(v)\bigr), &
   \mathbb{E}[n + 1] &= \frac{1 - \alpha^{\gamma + 1}}{1 - \alpha}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`q_i`
     - the draft model's next-token distribution after the prefix and the first :math:`i - 1` drafts
     - ``q``, its row i − 1
     - ``(gamma, V)``
   * - :math:`p_i`
     - the target model's next-token distribution at the same prefix; one more row, after all drafts
     - ``p``, its row i − 1
     - ``(gamma + 1, V)``
   * - :math:`\tilde{x}_i`
     - the :math:`i`-th draft token, sampled from :math:`q_i`
     - ``drafts``
     - ``(gamma,)``
   * - :math:`\gamma`
     - the number of draft tokens per round
     - ``gamma``
     - scalar
   * - :math:`n`
     - the number of drafts accepted, from 0 to :math:`\gamma`
     - ``n_accepted``
     - scalar
   * - :math:`x_{n+1}`
     - the token the target adds: a correction after a rejection, a bonus after none
     - ``tokens[n]``
     - scalar
   * - :math:`p'_i`
     - the residual distribution a rejected draft is replaced from
     - returned by ``residual_distribution``
     - ``(..., V)``
   * - :math:`x`, :math:`v`
     - tokens of the vocabulary of size :math:`V`
     - indices into the last axis
     - scalar
   * - :math:`\alpha`
     - the acceptance rate: the chance that a draft token is accepted
     - returned by ``acceptance_rate``; ``alpha``
     - ``(...)``
   * - :math:`\mathbb{E}[n + 1]`
     - the expected number of tokens one round (one target pass) produces
     - returned by ``expected_tokens``
     - ``(...)``

Explanation
-----------

Sampling from a large language model produces one token per forward pass, and each pass reads all
of the model's weights from memory to do little arithmetic on them. Scoring :math:`\gamma + 1`
positions in one pass costs about as much as scoring one, so if someone guessed the next few tokens,
the target could check them all at once. :footcite:t:`leviathan2023fast` and
:footcite:t:`chen2023accelerating` let a small draft model guess and showed how to check the guesses
so that nothing about the output changes: the tokens come out distributed exactly as if the target
had sampled them one by one.

The check is a rejection step. Draft token :math:`\tilde{x}` is kept with probability
:math:`\min(1, p(\tilde{x}) / q(\tilde{x}))`: always where the target likes it at least as much as
the draft, less often where the draft over-proposes it. The first rejected token is replaced by a
sample from the residual :math:`p'`, the part of :math:`p` that :math:`q` leaves uncovered, and the
round ends (the drafts after it were built on a token that is gone). If all :math:`\gamma` drafts
pass, the target's last row gives one more token for free. Why this is exact, for one token:

.. math::

   P(x) = q(x) \min\!\left(1, \tfrac{p(x)}{q(x)}\right) + (1 - \alpha)\, p'(x)
        = \min(p(x), q(x)) + \max(0, p(x) - q(x)) = p(x),

since the rejection probability :math:`1 - \alpha` is exactly the residual's normalising sum
:math:`\sum_v \max(0, p(v) - q(v))`. The tests verify it by exact enumeration of every draft and
every accept-or-reject outcome on a vocabulary of 3 tokens, and by sampling.

Each draft is accepted with probability :math:`\alpha = \sum_v \min(p(v), q(v))`, one minus the
total variation distance between the two models. If the drafts are accepted independently with
the same :math:`\alpha`, :math:`n` is a geometric count cut at :math:`\gamma` and one round yields
:math:`(1 - \alpha^{\gamma+1}) / (1 - \alpha)` tokens on average (``expected_tokens``): 2.18 for
:math:`\alpha = 0.6, \gamma = 3`, up to :math:`\gamma + 1` as :math:`\alpha \to 1`. With the draft
costing a fraction :math:`c` of a target pass, the wall-clock speed-up is that number divided by
:math:`\gamma c + 1`. The page's sampled rounds match the formula within their standard error.

.. plot::

   from cookbook.efficiency.speculative_decoding import expected_tokens
   alphas = np.linspace(0.0, 0.95, 96)
   fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
   for gamma in (1, 2, 4, 8):
       tokens = np.asarray(expected_tokens(alphas, gamma))
       left.plot(alphas, tokens, label=f"gamma = {gamma}")
       right.plot(alphas, tokens / (0.05 * gamma + 1), label=f"gamma = {gamma}")
   left.set(xlabel="acceptance rate alpha", ylabel="tokens per target pass", title="E[n + 1]")
   right.axhline(1.0, color="0.5", lw=0.8)
   right.set(xlabel="acceptance rate alpha", ylabel="speed-up", title="speed-up, draft cost c = 0.05")
   left.legend(fontsize=7)
   fig.tight_layout()

Long drafts pay only when the draft agrees often: at :math:`\alpha = 0.5` the fourth and later
drafts add almost nothing, and each still costs a draft pass.

.. admonition:: Intuition

   An assistant drafts the next few lines of a letter; the author reads them in one go, keeps the
   words up to the first she would not have written, writes her own word there, and hands the pen
   back. Reading is much quicker than writing, so the letter is finished sooner, and it says
   exactly what the author would have written alone.

*Numerical traps.* The ratio :math:`p/q` is needed only where :math:`q(\tilde{x}) > 0`, since the
draft never proposes a token it gives no probability. When :math:`p = q` the residual is all zero
and its normalisation would divide 0 by 0; a rejection then happens with probability 0, so any
distribution is correct there, and ``residual_distribution`` returns :math:`p` itself (normalised),
never a NaN. Where :math:`p` and :math:`q` differ only by float rounding the residual is noise, but
it is drawn from only as often as a rejection happens, about as rarely as that noise is small.

*Bad input.* Distributions are floating-point arrays over the last axis; ``p`` has one more row than
``q`` and ``drafts`` one entry per row of ``q``. ``residual_distribution`` and ``acceptance_rate``
pass a NaN on to their result; ``speculative_step`` and ``decode``, which turn distributions into
tokens, refuse a NaN when the input is concrete, and tokens or a context outside the vocabulary (a
``ValueError`` names the argument); under :func:`jax.jit` these checks cannot run, a NaN makes the
sampled tokens meaningless and an out-of-range token reads a clamped row.

Inductive bias
--------------

Nothing about the output: whatever the draft, the tokens follow the target exactly; a poor draft
only costs time. The speed-up assumes that the draft agrees with the target often (easy tokens:
the end of a word, a closing bracket, code that repeats a pattern) and that one target pass over
:math:`\gamma + 1` positions costs about as much as a pass over one, which holds while decoding is
bound by memory bandwidth and fails when a large batch already makes it bound by arithmetic.

Example
-------

The residual of two distributions over three tokens, and the acceptance rate:

>>> import jax, jax.numpy as jnp
>>> from cookbook.efficiency.speculative_decoding import (acceptance_rate, expected_tokens,
...     residual_distribution)
>>> p, q = jnp.array([0.5, 0.3, 0.2]), jnp.array([0.2, 0.5, 0.3])
>>> residual_distribution(p, q)
Array([1., 0., 0.], dtype=float32)
>>> residual_distribution(p, p)  # never needed: no rejection happens; p itself, not NaN
Array([0.5, 0.3, 0.2], dtype=float32)
>>> round(float(acceptance_rate(p, q)), 4), round(float(expected_tokens(jnp.array(0.6), 3)), 4)
(0.7, 2.176)

One round with :math:`\gamma = 2` drafts, and a whole decoding run, with bigram tables standing in
for the two models (row :math:`c` of ``P`` is the target's next-token distribution after token
:math:`c`). After token 0 the draft proposed 1 then 2, so the target's rows at the three prefixes
are those of tokens 0, 1 and 2:

>>> from cookbook.efficiency.speculative_decoding import decode, speculative_step
>>> P = jnp.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
>>> Q = jnp.array([[0.5, 0.4, 0.1], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]])
>>> drafts = jnp.array([1, 2])
>>> speculative_step(jax.random.key(0), P, Q[:2], drafts)  # draft 1 rejected, replaced by 0; -1 pads
(Array([ 0, -1, -1], dtype=int32), Array(0, dtype=int32))

These tables agree with acceptance rate 0.9 after every token, so the closed form holds exactly, and
20000 rounds measure it:

>>> acceptance_rate(P, Q), expected_tokens(jnp.array(0.9), 2)
(Array([0.9, 0.9, 0.9], dtype=float32), Array(2.71, dtype=float32))
>>> tokens, n_accepted = decode(jax.random.key(1), P, Q, 0, gamma=2, rounds=20000)
>>> tokens.shape, tokens[:3].tolist()
((20000, 3), [[0, 1, 2], [2, 2, 2], [1, 1, 2]])
>>> round(float((n_accepted + 1).mean()), 2)  # tokens per target pass
2.71

Implementation notes
--------------------

With real models, the draft runs :math:`\gamma` ordinary decoding steps, and the target runs once
on the prefix plus all drafts, its causal mask giving :math:`p_1, \dots, p_{\gamma+1}` from one
pass; the key-value caches of both are then rolled back to the accepted prefix. ``decode`` stands in
for that with bigram tables, so that the exact distribution of its output can be computed and
tested. Temperature and top-:math:`k` are applied to both models' logits before the check; greedy
decoding reduces it to keeping drafts while they equal the target's argmax. Libraries call the idea
assisted generation (Hugging Face ``transformers``) or speculative decoding (vLLM); variants draft
with extra heads of the target itself (Medusa) or with trees of candidates.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "residual_distribution": (),
    "acceptance_rate": (),
    "expected_tokens": ("gamma",),
    "speculative_step": (),
}
# decode is jitted inside (its loop is one compiled program already) and left out of JIT, so that the
# book's replay of its example does not compile the whole loop a second time.


def _pair(p, q):
    """``p`` and ``q`` as float arrays of one shape ``(..., V)``, computed in at least float32."""
    p = _checks.float_array(p, "p", min_ndim=1, what=" (..., V)")
    q = _checks.float_array(q, "q", min_ndim=1, what=" (..., V)")
    _checks.same_shape(q, "q", p.shape, expected_from="the shape of p")
    dtype = jnp.promote_types(jnp.result_type(p, q), jnp.float32)
    return p.astype(dtype), q.astype(dtype), jnp.result_type(p, q)


def residual_distribution(p, q):
    """``normalise(max(0, p - q))`` over the last axis: what a rejected draft token is resampled from.

    Where the residual is all zero (``p == q``, or ``p <= q`` everywhere) a rejection never happens;
    there ``p / sum(p)`` is returned instead of 0 / 0 (all zeros if ``p`` is all zero too).
    """
    p, q, dtype = _pair(p, q)
    return _residual(p, q).astype(dtype)


@jax.jit  # one compiled program rather than several small ones when called eagerly
def _residual(p, q):
    r = jnp.maximum(p - q, 0.0)  # (..., V)
    mass = jnp.sum(r, axis=-1, keepdims=True)  # 1 - alpha for distributions
    p_mass = jnp.sum(p, axis=-1, keepdims=True)
    fallback = p / jnp.where(p_mass > 0, p_mass, 1.0)
    # mass == 0 rather than mass > 0 picks the fallback, so that a NaN in p or q still shows as NaN.
    return jnp.where(mass == 0, fallback, r / jnp.where(mass == 0, 1.0, mass))


def acceptance_rate(p, q):
    """``alpha = sum(min(p, q))`` over the last axis: the probability that a draft from ``q`` is accepted."""
    p, q, dtype = _pair(p, q)
    return _acceptance_rate(p, q).astype(dtype)


@jax.jit  # one compiled program rather than a minimum and a sum when called eagerly
def _acceptance_rate(p, q):
    return jnp.sum(jnp.minimum(p, q), axis=-1)


def expected_tokens(alpha, gamma):
    """``(1 - alpha**(gamma + 1)) / (1 - alpha)``: the mean tokens per round (``gamma + 1`` at ``alpha = 1``)."""
    alpha = _checks.float_array(alpha, "alpha")
    gamma = _checks.size(gamma, "gamma")
    if _checks.is_concrete(alpha) and alpha.size:
        values = np.asarray(alpha).astype(np.float64)  # exact; checked in NumPy, not by eager programs
        if not np.all((values >= 0) & (values <= 1)):
            raise ValueError(f"alpha must lie in [0, 1], got values from {float(values.min())} to {float(values.max())}")
    return _expected_tokens(alpha, gamma)


@functools.partial(jax.jit, static_argnums=1)
def _expected_tokens(alpha, gamma):
    one = alpha == 1
    safe = jnp.where(one, 0.0, alpha)
    return jnp.where(one, gamma + 1.0, (1 - safe ** (gamma + 1)) / (1 - safe)).astype(alpha.dtype)


def _distributions(p, q, p_rows, q_rows, names=("p", "q")):
    """``p`` (p_rows, V) and ``q`` (q_rows, V) as float arrays with one V; a NaN refused when concrete."""
    p = _checks.float_array(p, names[0], ndim=2)
    q = _checks.float_array(q, names[1], ndim=2)
    if p.shape != (p_rows, q.shape[1]) or q.shape[0] != q_rows:
        raise ValueError(f"{names[0]} must have shape ({p_rows}, V) and {names[1]} shape ({q_rows}, V) with the "
                         f"same vocabulary size V, got {names[0]} {tuple(p.shape)} and {names[1]} {tuple(q.shape)}")
    return _checks.check_no_nan(p, names[0]), _checks.check_no_nan(q, names[1])


def speculative_step(key, p, q, drafts):
    """One verify round: ``(tokens, n_accepted)``.

    ``p`` (gamma + 1, V) and ``q`` (gamma, V) are the target's and the draft's next-token
    distributions at each prefix, ``drafts`` (gamma,) the tokens sampled from ``q``. ``tokens``
    (gamma + 1,) int32 holds the ``n_accepted`` kept drafts, then the target's token, then -1.
    """
    gamma, V = _checks.float_array(q, "q", ndim=2, what=" (gamma, V)").shape
    p, q = _distributions(p, q, gamma + 1, gamma)
    drafts = _checks.int_array(drafts, "drafts", ndim=1, what=" (gamma,)")
    _checks.same_shape(drafts, "drafts", (gamma,), expected_from="one token for each row of q")
    _checks.check_range(drafts, "drafts", 0, V)
    return _step(key, p, q, drafts)


@jax.jit  # one compiled program rather than a score of small ones when called eagerly
def _step(key, p, q, drafts):
    return _verify(p, q, drafts, jax.random.uniform(key, (drafts.shape[0] + 1,)))


def _sample(dist, u):
    """The token that the uniform ``u`` picks from ``dist`` (V,) by inverting its cumulative sum."""
    cdf = jnp.cumsum(dist)
    return jnp.argmax(cdf > u * cdf[-1]).astype(jnp.int32)  # a token of probability 0 is never picked


def _verify(p, q, drafts, u):
    """The round on checked inputs, its randomness given as ``gamma + 1`` uniforms ``u``."""
    gamma = drafts.shape[0]
    p32, q32 = p.astype(jnp.promote_types(p.dtype, jnp.float32)), q.astype(jnp.promote_types(q.dtype, jnp.float32))
    p_draft = jnp.take_along_axis(p32[:-1], drafts[:, None], axis=1)[:, 0]  # (gamma,)
    q_draft = jnp.take_along_axis(q32, drafts[:, None], axis=1)[:, 0]
    ratio = jnp.where(q_draft > 0, p_draft / jnp.where(q_draft > 0, q_draft, 1.0), 1.0)
    accepted = u[:gamma] < jnp.minimum(1.0, ratio)
    n_accepted = jnp.sum(jnp.cumprod(accepted.astype(jnp.int32)))  # drafts before the first rejection
    candidates = jnp.concatenate([_residual(p32[:-1], q32), p32[-1:]])  # (gamma + 1, V)
    extra = _sample(candidates[n_accepted], u[gamma])
    positions = jnp.arange(gamma + 1)
    tokens = jnp.where(positions < n_accepted, jnp.concatenate([drafts, drafts[:1]]), -1)
    tokens = jnp.where(positions == n_accepted, extra, tokens).astype(jnp.int32)
    return tokens, n_accepted.astype(jnp.int32)


def decode(key, P, Q, context, *, gamma, rounds):
    """Speculative decoding with bigram tables: ``P[c]`` (target) and ``Q[c]`` (draft) are the
    next-token distributions after token ``c``; starts after token ``context``.

    Returns ``tokens`` (rounds, gamma + 1), each row as ``speculative_step`` gives it (-1 pads), and
    ``n_accepted`` (rounds,). The emitted sequence is ``tokens[tokens >= 0]``.
    """
    P = _checks.float_array(P, "P", ndim=2, what=" (V, V)")
    V = P.shape[0]
    _checks.same_shape(P, "P", (V, V), expected_from="(V, V), a row per context token")
    P, Q = _distributions(P, Q, V, V, names=("P", "Q"))
    context = _checks.int_array(context, "context", ndim=0, what=" (a token)")
    _checks.check_range(context, "context", 0, V)
    gamma, rounds = _checks.size(gamma, "gamma"), _checks.size(rounds, "rounds")
    return _decode(key, P, Q, context.astype(jnp.int32), gamma, rounds)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _decode(key, P, Q, context, gamma, rounds):
    """The decoding loop, on checked inputs."""

    def draft(c, u):
        x = _sample(Q[c], u)
        return x, x

    def round_(c, u):
        _, drafts = jax.lax.scan(draft, c, u[:gamma])  # (gamma,)
        prefix = jnp.concatenate([c[None], drafts])  # (gamma + 1,) contexts of each row
        tokens, n = _verify(P[prefix], Q[prefix[:-1]], drafts, u[gamma:])
        return tokens[n], (tokens, n)

    # All the randomness at once: gamma uniforms to draft with, gamma + 1 to verify with, per round.
    uniforms = jax.random.uniform(key, (rounds, 2 * gamma + 1))
    _, (tokens, n_accepted) = jax.lax.scan(round_, context, uniforms)
    return tokens, n_accepted
