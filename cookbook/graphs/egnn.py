r"""E(n)-equivariant graph networks
===============================

An E(n)-equivariant graph network (EGNN) passes messages between points that carry both features
and coordinates, and moves the coordinates along the differences between points, so that rotating,
reflecting, translating or renumbering the input does the same to the output: the network to reach
for when the input is a molecule or a cloud of particles and the answer must not depend on how it
sits in space.

Equation
--------

.. math::

   \begin{aligned}
   m_{ij} &= \phi_e\left(h_i, h_j, \lVert x_i - x_j \rVert^2\right), \\
   x_i' &= x_i + \frac{1}{d_i} \textstyle\sum_{j} a_{ij} \, (x_i - x_j) \, \phi_x(m_{ij}),
   \qquad d_i = \textstyle\sum_j a_{ij}, \\
   m_i &= \textstyle\sum_{j} a_{ij} \, m_{ij}, \qquad
   h_i' = h_i + \phi_h(h_i, m_i)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`h_i`, :math:`h_i'`
     - invariant features of node :math:`i` before and after a layer
     - a row of ``h``
     - ``(F,)``
   * - :math:`x_i`, :math:`x_i'`
     - coordinates of node :math:`i` before and after a layer
     - a row of ``x``
     - ``(3,)``
   * - :math:`a_{ij}`, :math:`i`, :math:`j`
     - edge weight, 0 where nodes :math:`i` and :math:`j` are not joined; node indices
     - ``adjacency``, ``A``
     - ``(N, N)``
   * - :math:`d_i`
     - the weighted degree of node :math:`i` (1 where it is 0)
     - ``degree``
     - ``(N,)``
   * - :math:`m_{ij}`, :math:`m_i`
     - message from :math:`j` to :math:`i`; the sum of the messages :math:`i` receives
     - ``m``, ``m_i``
     - ``(N, N, H)``, ``(N, H)``
   * - :math:`\phi_e`, :math:`\phi_x`, :math:`\phi_h`
     - the edge, coordinate and node MLPs (two layers, SiLU)
     - ``params["phi_e"]``, ``params["phi_x"]``, ``params["phi_h"]``
     - :math:`2F+1 \to H \to H`, :math:`H \to H \to 1`, :math:`F+H \to H \to F`

Explanation
-----------

A network on a point cloud should give the same answer, moved along, when the cloud is moved: if
:math:`Q` is a rotation or a reflection (an orthogonal matrix), :math:`t` a translation and
:math:`P` a renumbering of the points, then :math:`\operatorname{EGNN}(Ph, P x Q^\top + t)` must be
:math:`(Ph', P x' Q^\top + t)`. :footcite:t:`satorras2021en` get this with one observation: the
squared distance :math:`\lVert x_i - x_j \rVert^2` does not change under any of these maps, and
the difference :math:`x_i - x_j` turns with the cloud and ignores translations. So the messages
:math:`m_{ij}`, which read only features and distances, are invariant; the features :math:`h`, built
from them, are invariant; and the coordinate update, a sum of difference vectors each scaled by an
invariant number :math:`\phi_x(m_{ij})`, rotates and reflects exactly as the cloud does. Sums over
neighbours make the layer permutation equivariant as in :doc:`message_passing`. No step needs a
rotation matrix, spherical harmonics or a choice of axes, and the layer works in any dimension
:math:`n`; the code fixes :math:`n = 3`.

Each layer is a graph network (:doc:`message_passing`) whose edge update also sees a distance, and
whose node update also moves the node. The paper averages coordinate updates with a constant
:math:`1/(M-1)` over all :math:`M` other points; the code divides by each node's weighted degree
:math:`d_i`, which is the same on a complete graph. The feature update adds its result to
:math:`h_i` (a residual, as in the paper's code). Nodes are joined by a dense adjacency
:math:`(N, N)`: a complete graph for a small molecule, or a radius graph. The paper's optional edge
attributes are left out. The last layer of :math:`\phi_x` starts near zero (a gain of 0.01), so
that a deep stack at initialisation moves points only a little.

.. admonition:: Intuition

   A flock of birds: each bird looks at where its neighbours are relative to itself, decides from
   the distance alone how strongly to move toward or away from each, and steps accordingly. No bird
   needs to know where north is, so the same rules give the same flock seen from any direction.

Inductive bias
--------------

An EGNN assumes that the laws behind the data do not depend on where the origin is, which way is up,
or which particle is listed first, as in physics and chemistry. It therefore never has to learn a
rule once per orientation or once per numbering. Trained on 128 clouds of five charged particles,
all stretched along one axis, to predict where a pairwise force moves them, one EGNN layer predicts
the motion of new clouds with a mean squared error under 2 % of that of the motion itself, and
exactly the same on the new clouds rotated; a multilayer perceptron on the flattened coordinates
fits its 128 clouds perfectly and, on new clouds, rotated or not, does worse than predicting no
motion at all (the tests measure all three). The price is expressiveness: a layer sees only
distances and difference vectors, so it cannot tell a cloud from its mirror image (a reflection is
one of its symmetries), and messages built from distances alone miss some geometric facts that
features of higher order capture :footcite:p:`joshi2023expressive`, such as the spherical harmonics
of :doc:`spherical_harmonics`. The dense :math:`N \times N` messages cost :math:`O(N^2)` per layer.

Example
-------

Two layers on 5 points with 3 features each, joined in a complete graph; rotating and translating
the input rotates and translates the coordinates out and leaves the features alone:

>>> import jax, jax.numpy as jnp
>>> from cookbook.graphs.egnn import apply, init
>>> params = init(jax.random.key(0), feature_dim=3, hidden=8, num_layers=2)
>>> h = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
>>> x = jnp.cos(jnp.arange(15.0)).reshape(5, 3)
>>> A = 1.0 - jnp.eye(5)
>>> h_out, x_out = apply(params, h, x, A)
>>> h_out.shape, x_out.shape
((5, 3), (5, 3))
>>> Q = jnp.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
>>> t = jnp.array([[1.0, 2.0, 3.0]])  # one translation for every point
>>> h_rot, x_rot = apply(params, h, x @ Q.T + t, A)
>>> bool(jnp.allclose(h_rot, h_out, atol=1e-5)), bool(jnp.allclose(x_rot, x_out @ Q.T + t, atol=1e-5))
(True, True)

Implementation notes
--------------------

The layers are stacked (every parameter has a leading axis of length ``num_layers``) and run with
:func:`jax.lax.scan`, so a deep network compiles one layer. For large sparse graphs, an edge list
with segment sums (:doc:`message_passing`) costs :math:`O(E)` instead of :math:`O(N^2)`. The
paper's code offers to divide :math:`x_i - x_j` by its length plus a constant, and to bound
:math:`\phi_x` with a tanh, both for stability in deep networks; the tests train on the task of
moving charged particles one step of a pairwise force, in the spirit of the paper's N-body
experiment, and compare with a multilayer perceptron on the flattened coordinates.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": ("feature_dim", "hidden", "num_layers"), "apply": ()}

#: The gain of the last layer of phi_x at initialisation: coordinates start by moving a little.
COORDINATE_GAIN = 0.01


def _shapes(F, H, L):
    """The shape of every weight, each with the leading layer axis L."""
    return {
        "phi_e": [{"W": (L, 2 * F + 1, H), "b": (L, H)}, {"W": (L, H, H), "b": (L, H)}],
        "phi_x": [{"W": (L, H, H), "b": (L, H)}, {"W": (L, H, 1)}],
        "phi_h": [{"W": (L, F + H, H), "b": (L, H)}, {"W": (L, H, F), "b": (L, F)}],
    }


def init(key, *, feature_dim, hidden, num_layers):
    """Parameters of ``num_layers`` EGNN layers on features of width ``feature_dim``, with MLPs of
    width ``hidden``: LeCun-normal weights, zero biases, the last weight of phi_x scaled by
    :data:`COORDINATE_GAIN`. Every leaf has a leading axis of length ``num_layers``."""
    F = _checks.size(feature_dim, "feature_dim")
    H = _checks.size(hidden, "hidden")
    L = _checks.size(num_layers, "num_layers")
    return _init(key, F, H, L)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, F, H, L):
    shapes = _shapes(F, H, L)
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    # One draw cut into the weights: one random-number kernel to compile rather than one per weight.
    sizes = [math.prod(s) for s in leaves if len(s) == 3]
    z = iter(jnp.split(jax.random.normal(key, (sum(sizes),)), list(itertools.accumulate(sizes))[:-1]))
    params = jax.tree.unflatten(treedef, [
        next(z).reshape(s) / jnp.sqrt(s[1]) if len(s) == 3 else jnp.zeros(s) for s in leaves])
    params["phi_x"][1]["W"] = COORDINATE_GAIN * params["phi_x"][1]["W"]
    return params


def _check_params(params):
    """``(F, H, L)`` read from ``params``, every leaf checked against the shapes ``init`` makes."""
    if not isinstance(params, dict) or set(params) != {"phi_e", "phi_x", "phi_h"}:
        raise ValueError("params must be the dict of 'phi_e', 'phi_x' and 'phi_h' that init returns, got "
                         f"{type(params).__name__} {sorted(params) if isinstance(params, dict) else ''}")
    W = _checks.float_array(params["phi_h"][1]["W"], "params['phi_h'][1]['W']", ndim=3, what=" (L, H, F)")
    L, H, F = W.shape
    want = _shapes(F, H, L)
    for mlp_name, layers in want.items():
        got = params[mlp_name]
        if not isinstance(got, (list, tuple)) or len(got) != len(layers):
            raise ValueError(f"params['{mlp_name}'] must be a list of {len(layers)} layers, got {got!r:.80}")
        for k, layer in enumerate(layers):
            if not isinstance(got[k], dict) or set(got[k]) != set(layer):
                raise ValueError(f"params['{mlp_name}'][{k}] must be a dict with keys {sorted(layer)}")
            for leaf, shape in layer.items():
                name = f"params['{mlp_name}'][{k}]['{leaf}']"
                value = _checks.float_array(got[k][leaf], name)
                _checks.same_shape(value, name, shape, expected_from=f"L = {L}, H = {H}, F = {F}")
    return F, H, L


def _mlp2(layers, z, last_bias=True):
    """Two dense layers on the last axis of ``z``, SiLU between them (weights of one layer, no L axis)."""
    lead = (None,) * (z.ndim - 1)
    z = jax.nn.silu(z @ layers[0]["W"] + layers[0]["b"][lead])
    z = z @ layers[1]["W"]
    return z + layers[1]["b"][lead] if last_bias else z


def layer(p, h, x, A):
    """One EGNN layer (the weights ``p`` of one layer, without the leading L axis)."""
    N, F = h.shape
    diff = x[:, None, :] - x[None, :, :]  # (N, N, 3): x_i - x_j
    dist2 = jnp.sum(diff**2, axis=-1, keepdims=True)  # (N, N, 1)
    pair = jnp.concatenate([jnp.broadcast_to(h[:, None, :], (N, N, F)),
                            jnp.broadcast_to(h[None, :, :], (N, N, F)), dist2], axis=-1)  # (N, N, 2F+1)
    m = jax.nn.silu(_mlp2(p["phi_e"], pair))  # (N, N, H)
    weight = _mlp2(p["phi_x"], m, last_bias=False)  # (N, N, 1)
    degree = A.sum(axis=1)  # (N,)
    degree = jnp.where(degree == 0, jnp.ones_like(degree), degree)
    x = x + jnp.sum(A[:, :, None] * diff * weight, axis=1) / degree[:, None]  # (N, 3)
    m_i = jnp.sum(A[:, :, None] * m, axis=1)  # (N, H)
    h = h + _mlp2(p["phi_h"], jnp.concatenate([h, m_i], axis=-1))  # (N, F)
    return h, x


@jax.jit
def _forward(params, h, x, A):
    def step(carry, p):
        return layer(p, *carry, A), None

    (h, x), _ = jax.lax.scan(step, (h, x), params)
    return h, x


def apply(params, h, x, adjacency):
    """The EGNN on invariant features ``h`` (N, feature_dim), coordinates ``x`` (N, 3) and a dense
    ``adjacency`` (N, N) of edge weights: ``(h, x)`` of the same shapes after ``num_layers`` layers."""
    F, H, L = _check_params(params)
    h = _checks.float_array(h, "h", ndim=2, what=" (N, F)")
    N = h.shape[0]
    _checks.same_shape(h, "h", (N, F), expected_from=f"F = {F} from params")
    x = _checks.float_array(x, "x", ndim=2, what=" (N, 3)")
    _checks.same_shape(x, "x", (N, 3), expected_from="N from h, three coordinates")
    A = _checks.adjacency_array(adjacency)
    _checks.same_shape(A, "adjacency", (N, N), expected_from="N from h")
    return _forward(params, h, x, A)
