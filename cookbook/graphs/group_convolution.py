r"""Group-equivariant convolution
=============================

A convolution that shares its filters over rotations as well as over positions, so that turning
the input by a quarter turn turns its feature maps and cycles their orientation channels, exactly:
the layer to reach for when the orientation of a pattern carries no meaning (cells under a
microscope, galaxies, aerial images, textures).

Equation
--------

For the group p4 of translations :math:`t \in \mathbb{Z}^2` and rotations by :math:`r \in \{0, 1,
2, 3\}` quarter turns, with :math:`R` the quarter turn of the plane:

.. math::

   \begin{aligned}
   \text{lifting:}\quad [f \star \psi](t, r) &= \sum_{y \in \mathbb{Z}^2} \sum_{c}
      f_c(y)\, \psi_c\!\left(R^{-r}(y - t)\right), \\
   \text{group:}\quad [F \star \Psi](t, r) &= \sum_{s=0}^{3} \sum_{y \in \mathbb{Z}^2} \sum_{c}
      F_c(y, s)\, \Psi_c\!\left(R^{-r}(y - t),\, s - r\right), \\
   \text{action:}\quad [L_u F](t, r) &= F\!\left(R^{-u} t,\, r - u\right), \qquad
   [L_u f] \star \psi = L_u [f \star \psi], \\
   \text{invariant:}\quad z_c &= \max_{t, r} F_c(t, r)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`f`, :math:`f_c`
     - input image, and its channel :math:`c`
     - ``x``
     - ``(H, W, C)``
   * - :math:`F`, :math:`F_c`
     - a feature map on p4: one plane per rotation :math:`r`
     - ``features``
     - ``(4, H, W, C)``
   * - :math:`\psi`
     - lifting filter, one per output channel
     - ``params["W"]`` of ``lift``
     - ``(k, k, C, O)``
   * - :math:`\Psi`
     - group filter: a small filter for each input rotation :math:`s`
     - ``params["W"]`` of ``group_conv``
     - ``(4, k, k, C, O)``
   * - :math:`t`, :math:`y`
     - output position; input position (row, column)
     - indices of the spatial axes
     - pairs of ints
   * - :math:`r`, :math:`s`, :math:`u`
     - rotations in quarter turns, counted modulo 4: of the output, of the input, of the action
     - the first axis of ``features``; ``turns``
     - ints in 0..3
   * - :math:`R`
     - the quarter turn of the plane, as ``jnp.rot90`` turns an array
     - ``jnp.rot90``
     - 2 x 2
   * - :math:`c`
     - input channel
     - the last axis of ``x`` and ``features``
     - int
   * - :math:`L_u`
     - the group acting on a feature map: turn each plane by :math:`u` and cycle the planes
     - ``rotate``
     - ``(4, H, W, C)``
   * - :math:`z`
     - invariant features: the maximum over positions and rotations
     - ``z`` in ``apply``
     - ``(C,)``

Explanation
-----------

An ordinary convolution is *translation equivariant*: shift the image and the feature maps shift
with it, because the same filter is tried at every position. It is not rotation equivariant: a
filter that finds a vertical edge does not find a horizontal one. :footcite:t:`cohen2016group`
extend the weight sharing to rotations. The **lifting layer** tries every filter at every position
*and* in each of the four orientations, :math:`\psi` turned by :math:`r` quarter turns, and keeps
the four answers as four planes: its output is a function on p4, indexed by a position and a
rotation. Turning the input by :math:`u` quarter turns turns each plane by :math:`u` and moves
the answer of orientation :math:`r` to plane :math:`r + u`: the action :math:`L_u`.

Below, one edge filter lifted from a drawn 7 (top) and from the 7 turned a quarter turn (bottom):
each plane of the bottom row is the plane to its left in the top row, turned (the last plane wraps
round to the first).

.. plot::

   import jax.numpy as jnp
   from cookbook.graphs.group_convolution import lift
   x = np.zeros((9, 9, 1), np.float32)
   x[1:8, 5, 0] = 1.0  # the stem of a 7
   x[1, 2:6, 0] = 1.0  # its top bar
   edge = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)  # dark on the left, bright on the right
   params = {"W": jnp.asarray(edge)[:, :, None, None], "b": jnp.zeros(1)}
   fig, axes = plt.subplots(2, 5, figsize=(7.5, 3.4))
   for row, image in enumerate((x, np.ascontiguousarray(np.rot90(x)))):
       planes = lift(params, jnp.asarray(image))
       axes[row, 0].imshow(image[:, :, 0], cmap="gray_r")
       axes[row, 0].set_title("input" if row == 0 else "input turned by 90°", fontsize=8)
       for r in range(4):
           axes[row, r + 1].imshow(planes[r, :, :, 0], cmap="RdBu_r", vmin=-4, vmax=4)
           axes[row, r + 1].set_title(f"plane r = {r}", fontsize=8)
   for ax in axes.flat:
       ax.set_xticks([])
       ax.set_yticks([])
   plt.tight_layout()

Later layers read such four-plane maps. A **group convolution** turns its filter :math:`\Psi` too,
and since the filter has a rotation axis of its own, turning it also cycles that axis (the
:math:`s - r` in the equation). Every layer then commutes with :math:`L_u`, so does a pointwise
nonlinearity, and so does a bias, if it is shared by the four planes of a channel. A stack of
such layers is equivariant; a maximum over the positions and the four planes, :math:`z`, is
*invariant*, and a classifier on :math:`z` gives the same answer for all four turns of an image.

In code both layers are one ordinary convolution (``correlate``) with a bank of expanded filters:
the lifting filter and its three turns stacked as :math:`4O` output channels; the group filter,
turned and cycled, as a :math:`4C \to 4O` filter (``lifted_filters``, ``group_filters``).
``jnp.rot90`` turns the filters and the images alike, so equivariance holds to the last bit up to
the order of float additions. Three things would break it: an even filter size, whose centre
falls between pixels; padding that is not the same on all sides; and a stride or a pooling window
that does not tile the turned image the same way. The code takes odd filters and zero "same"
padding, and pools only at the end, globally.

.. admonition:: Intuition

   A p4 layer is a panel of four inspectors holding the same stencil, each turned a quarter turn
   further than the last. Turn the photograph and the same findings come out, on a turned map and
   called out by the next inspector in the row; the group convolution is a second panel reading
   the first panel's reports, with its own stencils turned and its reading order shifted to match.

Inductive bias
--------------

A p4 network assumes that a pattern means the same in all four orientations. It learns that from
the architecture, not from data: trained on upright digits only, the invariant network of the tests
answers exactly as well on digits turned by 90°, 180° and 270°, where an ordinary CNN of the same
size drops to near chance. The same assumption is a handicap where orientation matters: an
invariant network cannot tell a 6 from a 9, and upright it scores below the ordinary CNN. The
filters are shared four ways, so a p4 layer with :math:`4O` output planes has four times fewer
parameters than an ordinary convolution of the same width. The equivariance is exact for quarter
turns only; a 45° turn resamples the pixel grid, and the network is merely approximately
invariant to it.

Example
-------

A lifting layer and a group convolution on a 5 x 5 image with 2 channels; turning the image by a
quarter turn acts on the output as ``rotate``:

>>> import jax, numpy as np
>>> from cookbook.graphs.group_convolution import apply, group_conv, init, lift, rotate
>>> x = np.linspace(-1.0, 1.0, 50).reshape(5, 5, 2) ** 3
>>> params = init(jax.random.key(0), in_channels=2, channels=(3, 4), num_classes=3)
>>> F = group_conv(params["convs"][0], jax.nn.relu(lift(params["lift"], x)))
>>> F.shape
(4, 5, 5, 4)
>>> F_turned = group_conv(params["convs"][0], jax.nn.relu(lift(params["lift"], np.rot90(x))))
>>> bool(np.allclose(F_turned, rotate(F, 1), atol=1e-5))
True

Turning the planes without cycling them is not the action: it does not match.

>>> bool(np.allclose(F_turned, np.rot90(F, axes=(1, 2)), atol=1e-5))
False

The classifier whose first two layers these are gives the same logits for all four turns of its
input:

>>> logits = np.stack([apply(params, np.rot90(x, u)) for u in range(4)])
>>> logits.shape, float(np.abs(logits - logits[:1]).max()) < 1e-5
((4, 3), True)

Implementation notes
--------------------

Measured by the tests: the lifting and group layers agree with a float64 loop over the definition
and with ``jax.lax.conv_general_dilated`` on the four turned filters to :math:`10^{-5}` (the
gradients with respect to the filter to :math:`10^{-4}`), and the equivariance holds to :math:`10^{-6}` of the outputs' size. Trained for 200 Adam steps on 1200
upright digits of scikit-learn's 8 x 8 set, a p4 network (lifting to 4 channels, one group
convolution to 8, 1290 parameters) labels 81 % of the 597 held-out digits, identically at every
quarter turn, while an ordinary CNN (8 and 16 channels, 1418 parameters) labels 93 % upright and
11 % and 12 % turned by 90° and 270° (34 % at 180°, where a 0, a 1 or an 8 still looks like itself).

``correlate`` gathers the :math:`k^2` shifted copies of the padded image and contracts them with
the filters in one ``einsum`` (im2col): on a CPU, for these small images and channel counts, it
trains much faster than ``jax.lax.conv_general_dilated``, which the tests use as the reference; on
an accelerator the library convolution is the one to use. The same construction extends to p4m (adding reflections: eight planes) and, with
interpolated filters, to finer rotation groups; e2cnn and escnn implement those steerable forms,
and the layers of :doc:`egnn` and :doc:`spherical_harmonics` carry the idea to rotations in 3D.
Turned filters can also be made cheaper by weight sharing inside each filter, at the cost of
generality.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"lift": (), "group_conv": (), "rotate": ("turns",), "apply": ()}

ROTATIONS = 4  # the quarter turns of p4


# ---- The two layers as one ordinary convolution -------------------------------------------------

def _check_filter(W, name, rotation_axis):
    """A filter ``(k, k, C, O)``, or ``(4, k, k, C, O)`` with a rotation axis, with odd square k."""
    shape = " (4, k, k, C, O)" if rotation_axis else " (k, k, C, O)"
    W = _checks.float_array(W, name, ndim=5 if rotation_axis else 4, what=shape)
    spatial = W.shape[1:3] if rotation_axis else W.shape[0:2]
    if rotation_axis and W.shape[0] != ROTATIONS:
        raise ValueError(f"{name} must have {ROTATIONS} planes on its first axis{shape}, got shape {W.shape}")
    if spatial[0] != spatial[1] or spatial[0] % 2 == 0:
        raise ValueError(f"{name} must be square with an odd size k (a centre pixel that turns onto itself)"
                         f"{shape}, got shape {W.shape}")
    return W


def _correlate(x, w):
    """Zero-padded "same" cross-correlation of ``x`` (H, W, C) with ``w`` (k, k, C, O), by im2col."""
    H, Wd, C = x.shape
    k = w.shape[0]
    m = k // 2
    padded = jnp.pad(x, ((m, m), (m, m), (0, 0))).reshape(-1, C)  # (pixels of the padded image, C)
    patches = padded[_patch_index(H, Wd, k)]  # (H, W, k*k, C): the window under each output pixel
    return jnp.einsum("hwpc,pco->hwo", patches, w.reshape(k * k, C, -1))  # (H, W, O)


@functools.lru_cache(maxsize=64)
def _patch_index(H, Wd, k):
    """Row ``(i + a) * (W + k - 1) + j + b`` of the padded image for output (i, j) and offset (a, b)."""
    i, j, a, b = np.ix_(np.arange(H), np.arange(Wd), np.arange(k), np.arange(k))
    return ((i + a) * (Wd + k - 1) + j + b).reshape(H, Wd, k * k)


def correlate(x, w):
    """Cross-correlation ``out[t] = sum over offsets z of x[t + z] @ w[z]`` of an image ``x``
    (H, W, C) with a filter ``w`` (k, k, C, O), odd k, zero "same" padding: (H, W, O)."""
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, C)")
    w = _check_filter(w, "w", rotation_axis=False)
    _checks.same_shape(w, "w", w.shape[:2] + (x.shape[2],) + w.shape[3:], expected_from="C from x")
    return _correlate_core(x, w)


_correlate_core = jax.jit(_correlate)  # called eagerly: one program per shape, not one per operation


def lifted_filters(W):
    """The lifting filter ``W`` (k, k, C, O) turned by 0, 1, 2, 3 quarter turns, stacked as
    (k, k, C, 4, O): slot ``[..., r, o]`` is filter ``o`` turned by ``r``."""
    return W.reshape(-1)[_lifted_index(W.shape)]


def group_filters(W):
    """The group filter ``W`` (4, k, k, C, O) as an ordinary filter (k, k, 4, C, 4, O) on the
    stacked planes: slot ``[..., s, c, r, o]`` is ``W[s - r]`` turned by ``r`` (the turn and the
    cycle of the rotation axis)."""
    return W.reshape(-1)[_group_index(W.shape)]


# The turns and cycles are applied once, in NumPy, to the positions 0, 1, 2, ... of the filter's
# entries; the expanded filter is then one gather (and its gradient one scatter-add), which
# compiles far faster than a dozen turned and stacked copies.

@functools.lru_cache(maxsize=64)
def _lifted_index(shape):
    index = np.arange(np.prod(shape)).reshape(shape)
    return np.stack([np.rot90(index, r, axes=(0, 1)) for r in range(ROTATIONS)], axis=3)


@functools.lru_cache(maxsize=64)
def _group_index(shape):
    index = np.arange(np.prod(shape)).reshape(shape)
    turned = [np.rot90(np.roll(index, r, axis=0), r, axes=(1, 2)) for r in range(ROTATIONS)]  # W[s - r] at s
    return np.stack([np.moveaxis(w, 0, 2) for w in turned], axis=4)  # (k, k, 4, C, 4, O)


# ---- Layers ----------------------------------------------------------------------------------

def _odd_size(kernel_size):
    k = _checks.size(kernel_size, "kernel_size")
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a centre pixel that turns onto itself), got {k}")
    return k


def _check_layer(params, name, rotation_axis):
    if not isinstance(params, dict) or set(params) != {"W", "b"}:
        raise ValueError(f"{name} must be a dict {{'W', 'b'}} as the init functions return, got "
                         f"{type(params).__name__} {sorted(params) if isinstance(params, dict) else ''}")
    W = _check_filter(params["W"], f"{name}['W']", rotation_axis)
    b = _checks.float_array(params["b"], f"{name}['b']", ndim=1, what=" (O,)")
    _checks.same_shape(b, f"{name}['b']", W.shape[-1:], expected_from="one per output channel")
    return W, b


def _check_features(features, name="features"):
    features = _checks.float_array(features, name, ndim=4, what=" (4, H, W, C)")
    if features.shape[0] != ROTATIONS:
        raise ValueError(f"{name} must have {ROTATIONS} rotation planes on its first axis (4, H, W, C), "
                         f"got shape {features.shape}")
    return features


@jax.jit  # one program after the boundary checks, not a dozen small eager ones
def _lift(W, b, x):
    H, Wd, _ = x.shape
    k, _, C, O = W.shape
    out = _correlate(x, lifted_filters(W).reshape(k, k, C, ROTATIONS * O))  # (H, W, 4 O)
    return jnp.moveaxis(out.reshape(H, Wd, ROTATIONS, O), 2, 0) + b[None, None, None, :]  # (4, H, W, O)


@jax.jit
def _group_conv(W, b, features):
    _, H, Wd, C = features.shape
    k, O = W.shape[1], W.shape[-1]
    stacked = jnp.moveaxis(features, 0, 2).reshape(H, Wd, ROTATIONS * C)  # planes side by side
    out = _correlate(stacked, group_filters(W).reshape(k, k, ROTATIONS * C, ROTATIONS * O))
    return jnp.moveaxis(out.reshape(H, Wd, ROTATIONS, O), 2, 0) + b[None, None, None, :]  # (4, H, W, O)


def lift(params, x):
    """The lifting layer Z² -> p4: an image ``x`` (H, W, C) to a feature map (4, H, W, O) whose
    plane ``r`` is the correlation with the filters turned by ``r`` quarter turns."""
    W, b = _check_layer(params, "params", rotation_axis=False)
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, C)")
    _checks.same_shape(x, "x", x.shape[:2] + W.shape[2:3], expected_from="C from params")
    return _lift(W, b, x)


def group_conv(params, features):
    """The group convolution p4 -> p4: ``features`` (4, H, W, C) to (4, H, W, O)."""
    W, b = _check_layer(params, "params", rotation_axis=True)
    features = _check_features(features)
    _checks.same_shape(features, "features", features.shape[:3] + W.shape[3:4], expected_from="C from params")
    return _group_conv(W, b, features)


def rotate(features, turns):
    """The action :math:`L_u` of ``turns`` quarter turns (any int; 4 is a full turn) on a feature map
    (4, H, W, C): every plane turned as ``jnp.rot90`` turns an image, and plane ``r`` moved to
    ``r + turns``. Shape (4, W, H, C) for an odd number of turns."""
    features = _check_features(features)
    if isinstance(turns, bool) or not isinstance(turns, (int, np.integer)):
        raise TypeError(f"turns must be an int (quarter turns), got {type(turns).__name__} {turns!r}")
    return _rotate(features, int(turns) % ROTATIONS)


@functools.partial(jax.jit, static_argnums=1)
def _rotate(features, turns):
    return jnp.roll(jnp.rot90(features, turns, axes=(1, 2)), turns, axis=0)


# ---- A p4 classifier ---------------------------------------------------------------------------

def init(key, *, in_channels=1, channels=(4, 8), num_classes=10, kernel_size=3):
    """A lifting layer to ``channels[0]``, group convolutions through the rest of ``channels``, and a
    linear read-out of the invariant features: ``{"lift", "convs", "out"}``, each a dict ``{"W",
    "b"}``. He-normal filters; zero biases, one per channel, shared by its 4 planes."""
    if not isinstance(channels, (tuple, list)) or not channels:
        raise ValueError(f"channels must be a non-empty tuple of channel counts, got {channels!r}")
    channels = [_checks.size(c, f"channels[{i}]") for i, c in enumerate(channels)]
    C = _checks.size(in_channels, "in_channels")
    classes = _checks.size(num_classes, "num_classes")
    k = _odd_size(kernel_size)
    shapes = [(k, k, C, channels[0])] + [(ROTATIONS, k, k, c_in, c_out)
                                         for c_in, c_out in zip(channels[:-1], channels[1:])]
    shapes.append((channels[-1], classes))
    return _init(key, tuple(shapes))


@functools.partial(jax.jit, static_argnums=1)  # one compiled program per configuration
def _init(key, shapes):
    # One draw cut into the layers: one random-number kernel rather than one per layer.
    sizes = [int(np.prod(shape)) for shape in shapes]
    z = jnp.split(jax.random.normal(key, (sum(sizes),)), np.cumsum(sizes)[:-1].tolist())
    layers = [{"W": w.reshape(shape) * np.sqrt(2.0 / np.prod(shape[:-1])), "b": jnp.zeros((shape[-1],))}
              for w, shape in zip(z, shapes)]
    layers[-1]["W"] = layers[-1]["W"] / np.sqrt(2.0)  # the read-out: variance 1 / fan-in
    return {"lift": layers[0], "convs": layers[1:-1], "out": layers[-1]}


def apply(params, x):
    """Logits (num_classes,) of an image ``x`` (H, W, C), invariant to quarter turns of ``x``:
    lift, ReLU, group convolutions with ReLU, maximum over positions and rotations, linear."""
    if not isinstance(params, dict) or set(params) != {"lift", "convs", "out"}:
        raise ValueError("params must be the dict {'lift', 'convs', 'out'} that init returns")
    W, b = _check_layer(params["lift"], "params['lift']", rotation_axis=False)
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, C)")
    _checks.same_shape(x, "x", x.shape[:2] + W.shape[2:3], expected_from="C from params")
    layers, width = [], W.shape[-1]
    for l, layer in enumerate(params["convs"]):
        W_l, b_l = _check_layer(layer, f"params['convs'][{l}]", rotation_axis=True)
        _checks.same_shape(W_l, f"params['convs'][{l}]['W']", W_l.shape[:3] + (width,) + W_l.shape[4:],
                           expected_from="to read the previous layer's channels")
        layers.append((W_l, b_l))
        width = W_l.shape[-1]
    W_out = _checks.float_array(params["out"]["W"], "params['out']['W']", ndim=2, what=" (C, classes)")
    _checks.same_shape(W_out, "params['out']['W']", (width, W_out.shape[1]), expected_from="C of the last layer")
    b_out = _checks.float_array(params["out"]["b"], "params['out']['b']", ndim=1, what=" (classes,)")
    _checks.same_shape(b_out, "params['out']['b']", W_out.shape[1:])

    return _forward(layers, W, b, W_out, b_out, x)


# The arguments in the order of params' leaves (convs, lift, out), so that under jax.jit apply is this
# one compiled core taking its inputs as they come (the program its eager call ran).
@jax.jit
def _forward(layers, W, b, W_out, b_out, x):
    h = jax.nn.relu(_lift(W, b, x))  # (4, H, W, C0)
    for W_l, b_l in layers:
        h = jax.nn.relu(_group_conv(W_l, b_l, h))  # (4, H, W, C_l)
    z = jnp.max(h, axis=(0, 1, 2))  # (C,): invariant
    return z @ W_out + b_out
