r"""Sampling from a language model
==============================

Turn the logits a language model predicts for the next token into one token: greedily, or at random
with a temperature and with the unlikely tail cut off by top-k or nucleus (top-p) filtering; the
choice to make every time a model such as :doc:`gpt` generates text.

Equation
--------

.. math::

   p_i = \operatorname{softmax}(z / \tau)_i, \qquad
   y_{\text{greedy}} = \operatorname*{arg\,max}_i z_i

   \mathcal{V}_k = \{\, k \text{ tokens of largest } z_i \,\}, \qquad
   \mathcal{V}_\rho = \text{the fewest tokens of largest } p_i \text{ with }
   \sum_{i \in \mathcal{V}_\rho} p_i \ge \rho

   \tilde{p}_i = \frac{p_i\, \mathbb{1}[i \in \mathcal{V}]}{\sum_{j \in \mathcal{V}} p_j}, \qquad
   y \sim \tilde{p}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z`, :math:`z_i`
     - the model's logits for the next token; the logit of token :math:`i`
     - ``logits``
     - ``(V,)``
   * - :math:`i`, :math:`j`
     - indices of tokens of the vocabulary
     - positions in ``logits``
     - scalar
   * - :math:`\tau`
     - temperature: below 1 sharpens the distribution, above 1 flattens it
     - ``temperature``
     - scalar
   * - :math:`p_i`
     - probability of token :math:`i` after the temperature
     - ``jax.nn.softmax(logits / temperature)``
     - ``(V,)``
   * - :math:`k`
     - how many tokens top-k keeps
     - ``top_k``
     - scalar
   * - :math:`\rho`
     - the probability mass the nucleus must reach (the *p* of top-p)
     - ``top_p``
     - scalar
   * - :math:`\mathcal{V}`, :math:`\mathcal{V}_k`, :math:`\mathcal{V}_\rho`
     - the tokens that may be sampled: all, the top :math:`k`, the nucleus
     - ``top_k_mask``, ``top_p_mask``
     - ``(V,)`` boolean
   * - :math:`\tilde{p}`
     - the distribution restricted to :math:`\mathcal{V}` and renormalised
     - masked logits in ``sample``
     - ``(V,)``
   * - :math:`y`, :math:`y_{\text{greedy}}`
     - the chosen token; the most probable one
     - ``sample(...)``, ``greedy(logits)``
     - ``()``

Explanation
-----------

**Greedy** decoding takes the most probable token every time. It is deterministic and right when
there is one correct continuation (the sorting task of :doc:`gpt`), but on open-ended text it falls
into loops: the most probable next sentence is often the one just written
:footcite:`holtzman2020curious`. **Sampling** draws from the predicted distribution instead; its
randomness comes from an explicit key, so the same key gives the same text.

.. admonition:: Intuition

   Picture the model as a panel that votes on the next word. Greedy decoding always announces the
   favourite; sampling draws one ballot from the box, so a word with a fifth of the votes wins a
   fifth of the time. Temperature makes the panel more or less unanimous before the draw. Top-k and
   the nucleus throw away the ballots of fringe candidates first: top-k keeps a shortlist of fixed
   length, the nucleus keeps the candidates that together hold most of the votes, a short list when
   the panel agrees and a long one when it is split.

**Temperature** divides the logits before the softmax. As :math:`\tau \to 0` all the mass goes to
the largest logit and sampling becomes greedy; :math:`\tau = 1` is the model's own distribution;
large :math:`\tau` approaches the uniform distribution. Like heating a physical system, a higher
temperature makes unlikely states more reachable.

**Truncation.** A model spreads a little probability over thousands of implausible tokens; each is
unlikely, but together they are drawn often, and one bad token derails everything after it.
*Top-k* keeps the :math:`k` largest logits :footcite:`fan2018hierarchical` (GPT-2's samples used
it :footcite:`radford2019language`), but a fixed :math:`k` is too many when the model is sure and too few when many continuations fit. *Nucleus* sampling
:footcite:`holtzman2020curious` keeps instead the smallest set of most probable tokens whose mass
reaches :math:`\rho` (the *nucleus*), so the set shrinks and grows with the model's certainty. Both
renormalise over the kept tokens; in code, the other logits are replaced by the most negative float
and :func:`jax.random.categorical` draws from what is left. The filters apply after the
temperature, and they compose (top-k first, then the nucleus of what remains).

**Ties and edges.** ``top_k_mask`` keeps *exactly* :math:`k` tokens: among equal logits at
the boundary it keeps the lower indices (the order of :func:`jax.lax.top_k`). ``top_p_mask``
always keeps the most probable token, even when its probability alone exceeds :math:`\rho`, sorts
stably (equal probabilities in index order) and includes the token whose probability makes the
running sum reach :math:`\rho`. With :math:`\rho = 1` it keeps every token but those ranked after
the point where the float32 running sum rounds to 1 (tokens of probability below about
:math:`10^{-7}`), which can never be drawn anyway in practice.

**Bad input.** Logits must be floats of shape ``(V,)``, :math:`k` a Python ``int``. A NaN logit
raises a ``ValueError`` when the logits are concrete; under :func:`jax.jit` the check cannot see
values, and the NaN token is the one chosen (``argmax`` and ``top_k`` rank NaN above every number).

The figure shows what each filter keeps of one distribution over twenty tokens.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.transformers.sampling import top_k_mask, top_p_mask
   logits = jnp.sort(2.0 * jax.random.normal(jax.random.key(3), (20,)))[::-1]
   p = np.asarray(jax.nn.softmax(logits))
   fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), sharey=True)
   for ax, mask, title in ((axes[0], top_k_mask(logits, 5), "top-k, k = 5"),
                           (axes[1], top_p_mask(logits, 0.9), "nucleus, rho = 0.9")):
       ax.bar(np.arange(20), p, color=np.where(np.asarray(mask), "tab:blue", "lightgray"))
       ax.set_title(title)
       ax.set_xlabel("token (sorted by probability)")
   axes[0].set_ylabel("probability")
   plt.tight_layout()

Inductive bias
--------------

Truncation assumes that the model's tail is mostly noise: that its ranking of the likely tokens can
be trusted while the small probabilities it assigns elsewhere cannot. That trades diversity for
quality, and it makes the generated text differ systematically from the model's own distribution
(truncated samples are more typical, less surprising). Temperature assumes the model is correct up
to a confidence scale. None of these choices changes the model; they change which of its beliefs
are acted on.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.transformers.sampling import greedy, sample, top_k_mask, top_p_mask
>>> logits = jnp.log(jnp.array([0.5, 0.2, 0.15, 0.1, 0.05]))
>>> int(greedy(logits))
0
>>> top_k_mask(logits, 2)
Array([ True,  True, False, False, False], dtype=bool)
>>> top_p_mask(logits, 0.8)  # 0.5 + 0.2 < 0.8 <= 0.5 + 0.2 + 0.15
Array([ True,  True,  True, False, False], dtype=bool)
>>> keys = jax.random.split(jax.random.key(0), 1000)
>>> draws = jax.vmap(lambda k: sample(k, logits, top_p=0.8))(keys)
>>> sorted(set(draws.tolist()))
[0, 1, 2]
>>> int(sample(jax.random.key(1), logits, temperature=0.01, top_k=3))
0
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"greedy": (), "top_k_mask": ("k",), "top_p_mask": (), "sample": ("temperature", "top_k", "top_p")}


def _check_logits(logits):
    """Floating logits (V,), V >= 1, without NaN when concrete (a NaN would be the token chosen)."""
    logits = _checks.float_array(logits, "logits", ndim=1, what=" (V,)")
    if logits.shape[0] < 1:
        raise ValueError(f"logits must have shape (V,) with V >= 1, got shape {logits.shape}")
    return _checks.check_no_nan(logits, "logits")


def greedy(logits):
    """The index of the largest logit (the lowest index among ties)."""
    logits = _check_logits(logits)
    return jnp.argmax(logits)


def top_k_mask(logits, k):
    """Boolean (V,): ``True`` for exactly ``k`` largest logits, ties broken towards lower indices."""
    logits = _check_logits(logits)
    V = logits.shape[0]
    k = _checks.size(k, "k")
    if k > V:
        raise ValueError(f"k must be between 1 and the vocabulary size {V} of logits, got k={k}")
    return _top_k_mask(logits, k)


@functools.partial(jax.jit, static_argnums=1)  # one program, where each eager operation compiled its own
def _top_k_mask(logits, k):
    _, indices = jax.lax.top_k(logits, k)
    return jnp.zeros(logits.shape, bool).at[indices].set(True)


def _check_p(p, name):
    p = _checks.positive(p, name)
    if _checks.is_concrete(p) and not p <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {name}={p}")
    return p


def top_p_mask(logits, p):
    """Boolean (V,): ``True`` for the nucleus, the fewest most probable tokens with mass at least ``p``.

    The most probable token is always kept; equal probabilities are ranked by index.
    """
    logits = _check_logits(logits)
    p = _check_p(p, "p")
    return _top_p_mask(logits, p)


@jax.jit
def _top_p_mask(logits, p):
    probs = jax.nn.softmax(logits.astype(jnp.float32))
    order = jnp.argsort(-probs, stable=True)  # most probable first
    sorted_probs = probs[order]
    mass_before = jnp.cumsum(sorted_probs) - sorted_probs  # mass of the tokens ranked above each
    keep_sorted = (mass_before < p) | (jnp.arange(probs.shape[0]) == 0)
    return jnp.zeros_like(keep_sorted).at[order].set(keep_sorted)


def sample(key, logits, *, temperature=1.0, top_k=None, top_p=None):
    """Draw one token from ``softmax(logits / temperature)``, optionally restricted by top-k, then top-p.

    ``temperature`` must be positive (use :func:`greedy` for zero). ``top_k`` is a Python int,
    ``top_p`` a number in (0, 1].
    """
    logits = _check_logits(logits)
    temperature = _checks.positive(temperature, "temperature")
    if top_p is not None:
        top_p = _check_p(top_p, "top_p")
    if top_k is not None and _checks.size(top_k, "top_k") > logits.shape[0]:
        raise ValueError(f"top_k must be between 1 and the vocabulary size {logits.shape[0]} of logits, "
                         f"got top_k={top_k}")
    return _sample(key, logits, temperature, top_p, top_k)


@functools.partial(jax.jit, static_argnums=4)  # temperature and top_p may be traced, top_k fixes a shape
def _sample(key, logits, temperature, top_p, top_k):
    z = logits.astype(jnp.float32) / temperature
    keep = jnp.ones(z.shape, bool)
    if top_k is not None:
        keep = _top_k_mask(z, top_k)
    z = jnp.where(keep, z, jnp.finfo(jnp.float32).min)
    if top_p is not None:
        z = jnp.where(_top_p_mask(z, top_p), z, jnp.finfo(jnp.float32).min)
    return jax.random.categorical(key, z)
