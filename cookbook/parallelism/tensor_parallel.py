r"""Tensor parallelism (Megatron-LM)
================================

Cut the weight matrices of each layer across devices, the first by its columns and the second by
its rows (or attention by its heads), so that every device computes a slice of the layer and one
all-reduce sums the slices: the way to fit and speed up layers too wide for one device.

Equation
--------

.. math::

   A = \left[A_1, \dots, A_N\right], \quad
   B = \begin{bmatrix} B_1 \\ \vdots \\ B_N \end{bmatrix}, \qquad
   Z = \sum_{k=1}^{N} \phi\left(X A_k + a_k\right) B_k + b

   Y = \sum_{k=1}^{N} \sum_{h \in \mathcal{H}_k}
       \operatorname{softmax}\left(\frac{X W^{\mathrm{Q}}_h \left(X W^{\mathrm{K}}_h\right)^\top}{\sqrt{d}}\right)
       X W^{\mathrm{V}}_h W^{\mathrm{O}}_h

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`
     - the input rows (a batch of examples, or the tokens of a sequence), the same on every device
     - ``X``
     - ``(T, D)``
   * - :math:`N`, :math:`k`
     - number of devices along the model axis; a device's position on it
     - ``axis_size(mesh, axis)``; the device's index along ``axis``
     - scalars
   * - :math:`A`, :math:`a`
     - the first weight matrix and bias of the MLP, cut by columns: device :math:`k` holds
       :math:`A_k`, :math:`a_k`
     - ``params["W1"]``, ``params["b1"]``
     - ``(D, F)``, ``(F,)``; ``(D, F / N)`` on a device
   * - :math:`B`, :math:`b`
     - the second weight matrix, cut by rows, and its bias, held whole and added once
     - ``params["W2"]``, ``params["b2"]``
     - ``(F, C)``, ``(C,)``; ``(F / N, C)`` on a device
   * - :math:`\phi`
     - the hidden activation (GELU)
     - ``jax.nn.gelu``
     - elementwise
   * - :math:`Z`
     - the output of the MLP
     - ``mlp(params, X)``
     - ``(T, C)``
   * - :math:`h`, :math:`\mathcal{H}_k`
     - an attention head; the :math:`H / N` heads on device :math:`k`
     - the ``H`` axis of ``Wq``
     - ``H / N`` heads
   * - :math:`W^{\mathrm{Q}}_h`, :math:`W^{\mathrm{K}}_h`, :math:`W^{\mathrm{V}}_h`
     - query, key and value projections of head :math:`h`
     - ``params["Wq"]``, ``params["Wk"]``, ``params["Wv"]``
     - ``(D, H, K)``
   * - :math:`W^{\mathrm{O}}_h`
     - the output projection of head :math:`h` (rows of the output matrix)
     - ``params["Wo"]``
     - ``(H, K, D)``
   * - :math:`d`
     - the width of one head
     - ``K``
     - scalar
   * - :math:`Y`
     - the output of attention
     - ``attention(params, X)``
     - ``(T, D)``

Explanation
-----------

An MLP multiplies twice. Cut the first matrix :math:`A` by its columns and each device computes
some of the hidden units, :math:`\phi(X A_k + a_k)`, from the whole input, with no communication:
the nonlinearity acts on each unit alone, so it can be applied to the slice. Cut the second matrix
:math:`B` by its rows, matching, and each device multiplies its hidden units by its rows: a
product of partitioned matrices is the sum of the products of the parts, so the output is the sum
of the devices' partial outputs, one all-reduce. Cutting :math:`A` by rows instead would need a
sum *before* the nonlinearity, a second all-reduce; pairing a column-parallel layer with a
row-parallel one is what makes one enough :footcite:`shoeybi2019megatron`. Attention is already
cut: its heads are independent until the output projection, whose rows belong to the heads, so
each device computes :math:`H/N` whole heads and the outputs are again summed by one all-reduce.

.. admonition:: Intuition

   A translation agency splits a long report by chapters: each translator reads the whole brief
   (every device has :math:`X`), translates only their chapters (their columns of :math:`A`), and
   their chapters are bound together into one volume at the end (the all-reduce). Nobody waits for
   anybody until the binding.

The backward pass mirrors this: the gradient with respect to the replicated input :math:`X` is a
sum over devices too, so each layer costs one all-reduce forward and one backward (Megatron's
:math:`g` and :math:`f` operators). Here JAX inserts the second: :func:`jax.shard_map` tracks that
:math:`A_k` differs from device to device while :math:`X` does not, and differentiating a use of
an unvarying value on every device sums its gradient over them. The tests read the compiled HLO:
one all-reduce for the forward pass of each layer, two with the backward pass to :math:`X`.

Every device holds :math:`1/N` of the weights (the tests read it from the compiled program) and
computes :math:`1/N` of the products, but the all-reduce carries the full activations
:math:`(T, C)` at every layer, so tensor parallelism is kept within the fast links of one machine;
across machines one uses :doc:`data_parallel` or :doc:`fsdp`. On a 2 × 4 mesh they combine: the
batch is cut over the first axis and the weights over the second, and with ``fully_sharded=True``
each device's slice of the weights is cut again over the first axis and gathered just before use,
as in :doc:`fsdp`, so that each of the eight devices holds an eighth of the weights.

Inductive bias
--------------

None is added: the sharded layers compute the same functions as the single-device ones. The cut
does assume a structure, though: hidden units that are independent until the next matrix
multiplies them (true of MLPs and of heads), and widths :math:`F` and :math:`H` divisible by the
number of devices.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.parallelism.tensor_parallel import (attention, attention_init, mlp, mlp_init,
...                                                    parallel_attention, parallel_mlp)
>>> mesh = jax.make_mesh((4,), ("model",))
>>> X = jnp.linspace(-1.0, 1.0, 15).reshape(3, 5)  # T = 3 rows of D = 5
>>> params = mlp_init(jax.random.key(0), 5, 8, 2)  # F = 8 hidden units, 2 per device
>>> Z = parallel_mlp(params, X, mesh)
>>> Z.shape, bool(jnp.allclose(Z, mlp(params, X), atol=1e-6))
((3, 2), True)
>>> heads = attention_init(jax.random.key(1), 5, heads=4, head_width=2)  # one head per device
>>> Y = parallel_attention(heads, X, mesh)
>>> Y.shape, bool(jnp.allclose(Y, attention(heads, X), atol=1e-6))
((3, 5), True)

Implementation notes
--------------------

* **Measured here** (tests): the sharded MLP on 1, 2, 4 and 8 devices and the sharded attention
  on 2 and 8 equal the single-device layers within :math:`10^{-6}` (gradients, on 4 devices,
  within :math:`10^{-5}`); each device's weights take :math:`1/N` of the bytes; an MLP trained on a 2 × 4 mesh (data × model), with its weights
  cut over the model axis or fully sharded over both, follows single-device gradient descent to
  within :math:`10^{-5}` in the loss over thirty steps.
* **Beyond this page.** Megatron also cuts the embedding and the softmax over the vocabulary, and
  later work cuts the activations that tensor parallelism leaves whole (layer norms and dropout)
  along the sequence (the chapter's sequence-parallel page covers ring attention instead).
  In JAX, giving the weights the same ``NamedSharding`` (on a mesh whose axes are of type
  ``AxisType.Auto``, which lets the compiler choose) and calling :func:`jax.jit` on the
  single-device MLP yields the same plan without writing the all-reduce by hand: the tests find
  one all-reduce and the same values.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cookbook import _checks
from cookbook.parallelism.data_parallel import axis_size, divisible

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"mlp": (), "parallel_mlp": ("mesh", "axis"), "attention": (),
       "parallel_attention": ("mesh", "axis")}

_MLP_KEYS = ("W1", "b1", "W2", "b2")
_ATTENTION_KEYS = ("Wq", "Wk", "Wv", "Wo")


def mlp_init(key, d_in, d_hidden, d_out):
    """``{"W1", "b1", "W2", "b2"}`` of an MLP ``D -> F -> C``: normal weights scaled by the fan-in,
    small random biases (so that the tests see them)."""
    D, F, C = (_checks.size(v, name) for v, name in ((d_in, "d_in"), (d_hidden, "d_hidden"), (d_out, "d_out")))
    return _mlp_init(key, D, F, C)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _mlp_init(key, D, F, C):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {"W1": jax.random.normal(k1, (D, F)) / jnp.sqrt(D), "b1": 0.1 * jax.random.normal(k2, (F,)),
            "W2": jax.random.normal(k3, (F, C)) / jnp.sqrt(F), "b2": 0.1 * jax.random.normal(k4, (C,))}


def attention_init(key, d_model, *, heads, head_width):
    """``{"Wq", "Wk", "Wv"}`` of shape (D, H, K) and ``Wo`` of shape (H, K, D)."""
    D, H, K = (_checks.size(v, name) for v, name in ((d_model, "d_model"), (heads, "heads"), (head_width, "head_width")))
    return _attention_init(key, D, H, K)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _attention_init(key, D, H, K):
    kq, kk, kv, ko = jax.random.split(key, 4)
    return {"Wq": jax.random.normal(kq, (D, H, K)) / jnp.sqrt(D), "Wk": jax.random.normal(kk, (D, H, K)) / jnp.sqrt(D),
            "Wv": jax.random.normal(kv, (D, H, K)) / jnp.sqrt(D), "Wo": jax.random.normal(ko, (H, K, D)) / jnp.sqrt(H * K)}


def _check_mlp(params, X):
    if not isinstance(params, dict) or set(params) != set(_MLP_KEYS):
        raise TypeError(f"params must be a dict with keys {_MLP_KEYS}, got {type(params).__name__}")
    W1 = _checks.float_array(params["W1"], "params['W1']", ndim=2, what=" (D, F)")
    D, F = W1.shape
    _checks.same_shape(_checks.float_array(params["b1"], "params['b1']"), "params['b1']", (F,))
    W2 = _checks.float_array(params["W2"], "params['W2']", ndim=2, what=" (F, C)")
    _checks.same_shape(W2, "params['W2']", (F, W2.shape[1]), expected_from="(F, C) to match params['W1']")
    _checks.same_shape(_checks.float_array(params["b2"], "params['b2']"), "params['b2']", (W2.shape[1],))
    X = _checks.float_array(X, "X", ndim=2, what=" (T, D)")
    return _checks.same_shape(X, "X", (X.shape[0], D), expected_from="(T, D) to match params['W1']")


def _check_attention(params, X):
    if not isinstance(params, dict) or set(params) != set(_ATTENTION_KEYS):
        raise TypeError(f"params must be a dict with keys {_ATTENTION_KEYS}, got {type(params).__name__}")
    Wq = _checks.float_array(params["Wq"], "params['Wq']", ndim=3, what=" (D, H, K)")
    for name in ("Wk", "Wv"):
        _checks.same_shape(_checks.float_array(params[name], f"params['{name}']"), f"params['{name}']", Wq.shape,
                           expected_from="as params['Wq']")
    D, H, K = Wq.shape
    _checks.same_shape(_checks.float_array(params["Wo"], "params['Wo']"), "params['Wo']", (H, K, D),
                       expected_from="(H, K, D) to match params['Wq']")
    X = _checks.float_array(X, "X", ndim=2, what=" (T, D)")
    return _checks.same_shape(X, "X", (X.shape[0], D), expected_from="(T, D) to match params['Wq']")


@jax.jit
def _mlp(params, X):
    return _hidden_times_rows(params, X) + params["b2"][None, :]


def _hidden_times_rows(params, X):
    """The MLP without its output bias: on a device, its partial output phi(X A_k + a_k) B_k."""
    return jax.nn.gelu(X @ params["W1"] + params["b1"][None, :]) @ params["W2"]  # (T, C)


def _heads(params, X):
    """Attention with the heads that ``params`` holds (all, or one device's), before any sum."""
    K = params["Wq"].shape[-1]
    q, k, v = (jnp.einsum("TD,DHK->THK", X, params[name]) for name in ("Wq", "Wk", "Wv"))
    scores = jnp.einsum("THK,SHK->HTS", q, k) / jnp.sqrt(K)  # (H, T, S)
    o = jnp.einsum("HTS,SHK->THK", jax.nn.softmax(scores, axis=-1), v)  # (T, H, K)
    return jnp.einsum("THK,HKD->TD", o, params["Wo"])  # (T, D), summed over these heads


def mlp(params, X):
    """The single-device MLP ``gelu(X W1 + b1) W2 + b2`` on rows ``X`` (T, D): shape (T, C)."""
    return _mlp(params, _check_mlp(params, X))


def attention(params, X):
    """Single-device multi-head self-attention (no mask) on the rows ``X`` (T, D): shape (T, D)."""
    return jax.jit(_heads)(params, _check_attention(params, X))


def _mlp_specs(axis):
    return {"W1": P(None, axis), "b1": P(axis), "W2": P(axis, None), "b2": P()}


def _attention_specs(axis):
    return {"Wq": P(None, axis), "Wk": P(None, axis), "Wv": P(None, axis), "Wo": P(axis)}


def _placed(mesh, tree, specs):
    return jax.tree.map(lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec)), tree, specs)


@functools.partial(jax.jit, static_argnames=("mesh", "axis"))
def _parallel_mlp(params, X, mesh, axis):
    specs = _mlp_specs(axis)

    def on_device(params_k, X):
        return jax.lax.psum(_hidden_times_rows(params_k, X), axis) + params_k["b2"][None, :]  # one all-reduce

    return jax.shard_map(on_device, mesh=mesh, in_specs=(specs, P()), out_specs=P())(
        _placed(mesh, params, specs), jax.device_put(X, NamedSharding(mesh, P())))


def parallel_mlp(params, X, mesh, *, axis="model"):
    """:func:`mlp` with ``W1`` cut by columns and ``W2`` by rows over the mesh axis ``axis``; the
    hidden width F must be a multiple of the devices along it. Same result, replicated."""
    X = _check_mlp(params, X)
    divisible(params["W1"].shape[1], axis_size(mesh, axis), "params['W1']", "hidden width F")
    return _parallel_mlp(params, X, mesh, axis)


@functools.partial(jax.jit, static_argnames=("mesh", "axis"))
def _parallel_attention(params, X, mesh, axis):
    specs = _attention_specs(axis)

    def on_device(params_k, X):
        return jax.lax.psum(_heads(params_k, X), axis)  # one all-reduce

    return jax.shard_map(on_device, mesh=mesh, in_specs=(specs, P()), out_specs=P())(
        _placed(mesh, params, specs), jax.device_put(X, NamedSharding(mesh, P())))


def parallel_attention(params, X, mesh, *, axis="model"):
    """:func:`attention` with the heads cut over the mesh axis ``axis``; the number of heads H must
    be a multiple of the devices along it. Same result, replicated."""
    X = _check_attention(params, X)
    divisible(params["Wq"].shape[1], axis_size(mesh, axis), "params['Wq']", "number of heads H")
    return _parallel_attention(params, X, mesh, axis)


def _train_specs(data_axis, model_axis, fully_sharded):
    """Weights cut over the model axis; with ``fully_sharded``, each device's block of hidden units
    is cut again over the data axis (FSDP), the model axis major."""
    if not fully_sharded:
        return _mlp_specs(model_axis)
    both = (model_axis, data_axis)
    return {"W1": P(None, both), "b1": P(both), "W2": P(both, None), "b2": P()}


@functools.partial(jax.jit, static_argnames=("mesh", "data_axis", "model_axis", "steps", "fully_sharded"))
def _train(params, X, Y, learning_rate, mesh, data_axis, model_axis, steps, fully_sharded):
    specs = _train_specs(data_axis, model_axis, fully_sharded)

    def on_device(params_k, X_k, Y_k):
        def loss(params_k):  # the mean squared error of the whole batch
            if fully_sharded:  # gather this model shard's hidden units from the data axis
                gather = lambda a, axis: jax.lax.all_gather(a, data_axis, axis=axis, tiled=True)
                params_k = {"W1": gather(params_k["W1"], 1), "b1": gather(params_k["b1"], 0),
                            "W2": gather(params_k["W2"], 0), "b2": params_k["b2"]}
            Z = jax.lax.psum(_hidden_times_rows(params_k, X_k), model_axis) + params_k["b2"][None, :]
            return jax.lax.pmean(jnp.mean((Z - Y_k) ** 2), data_axis)

        def step(params_k, _):
            # Differentiation inserts the collectives of the backward pass: an all-reduce over the
            # model axis for the input's gradient, over the data axis for the weights' gradients
            # (a reduce-scatter, the derivative of the all-gather, when they are fully sharded).
            value, grads = jax.value_and_grad(loss)(params_k)
            return jax.tree.map(lambda p, g: p - learning_rate * g, params_k, grads), value

        return jax.lax.scan(step, params_k, length=steps)

    X, Y = (jax.device_put(a, NamedSharding(mesh, P(data_axis))) for a in (X, Y))
    return jax.shard_map(on_device, mesh=mesh, in_specs=(specs, P(data_axis), P(data_axis)),
                         out_specs=(specs, P()))(_placed(mesh, params, specs), X, Y)


def train(params, X, Y, mesh, *, learning_rate, steps, data_axis="data", model_axis="model",
          fully_sharded=False):
    """Gradient descent on the mean squared error of :func:`mlp`, with the batch cut over
    ``data_axis`` and the weights over ``model_axis`` (data and tensor parallelism on a 2-D mesh);
    with ``fully_sharded=True`` the weights are also cut over ``data_axis`` and gathered for use (fully
    sharded data parallelism and tensor parallelism). Returns the parameters, sharded, and the loss
    before each step."""
    X = _check_mlp(params, X)
    Y = _checks.float_array(Y, "Y", ndim=2, what=" (T, C)")
    _checks.same_shape(Y, "Y", (X.shape[0], params["W2"].shape[1]), expected_from="(T, C) to match X and params['W2']")
    if not isinstance(fully_sharded, bool):
        raise TypeError(f"fully_sharded must be a bool, got {fully_sharded!r}")
    n_model = axis_size(mesh, model_axis, "model_axis")
    n_data = axis_size(mesh, data_axis, "data_axis")
    divisible(params["W1"].shape[1], n_model * n_data if fully_sharded else n_model, "params['W1']", "hidden width F")
    divisible(X.shape[0], n_data, "X", "batch size")
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _train(params, X, Y, learning_rate, mesh, data_axis, model_axis, steps, fully_sharded)
