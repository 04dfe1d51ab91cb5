r"""Training loop
=============

Train a network by minibatch stochastic gradient descent: shuffle the training set with a fresh key
every epoch, cut it into batches, take one compiled gradient step per batch, and measure held-out
accuracy after each epoch; the skeleton that every model in this book is trained with.

Equation
--------

Epoch :math:`e` visits the training set in the order of a fresh random permutation, in batches of
:math:`B` examples, and takes one gradient step per batch:

.. math::

   \rho_e = \operatorname{permutation}(k_e, N), \qquad
   \mathcal{B}_{e,b} = \left\{\rho_e(bB + 1), \dots, \rho_e(bB + B)\right\},
   \qquad b = 0, \dots, \lfloor N / B \rfloor - 1

   \theta \leftarrow \theta - \eta \, \nabla_\theta \frac{1}{B} \sum_{i \in \mathcal{B}_{e,b}}
   \ell(\theta; x_i, y_i), \qquad
   \ell(\theta; x, y) = \operatorname{logsumexp}\left(f_\theta(x)\right) - f_\theta(x)_y

and is scored on :math:`M` held-out examples:

.. math::

   \operatorname{accuracy} = \frac{1}{M} \sum_{i=1}^{M}
   \mathbb{1}\left[\operatorname*{arg\,max}_c f_\theta(x_i)_c = y_i\right]

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`e`
     - epoch index (here not the constant 2.718...)
     - the scan step in ``fit``
     - scalar
   * - :math:`k_e`
     - the key of epoch :math:`e`, split from the run's key, used once
     - ``epoch_key``, one of ``jax.random.split(k_epochs, epochs)``
     - key
   * - :math:`N`, :math:`M`
     - training and held-out examples
     - ``X_train.shape[0]``, ``X_test.shape[0]``
     - scalar
   * - :math:`\rho_e`
     - a random permutation of :math:`1, \dots, N`
     - ``jax.random.permutation(key, N)``
     - ``(N,)``
   * - :math:`B`
     - batch size
     - ``batch_size``
     - scalar
   * - :math:`b`
     - batch index within an epoch
     - the scan step in ``train_epoch``
     - scalar
   * - :math:`\mathcal{B}_{e,b}`
     - the indices of one batch
     - a row of ``batch_indices``
     - ``(B,)``
   * - :math:`\theta`
     - all parameters of the network
     - ``params``, a list of layers, each a dict of weights and biases
     - pytree
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`x_i`, :math:`y_i`, :math:`x`, :math:`y`, :math:`i`
     - standardised features and class label of example :math:`i`
     - a row of ``X`` and the entry of ``y`` at the same position
     - ``(D,)``, ``()``
   * - :math:`f_\theta`, :math:`f`
     - the network: logits for one example
     - ``apply``
     - ``(D,) -> (K,)``
   * - :math:`c`
     - a class, 0 to :math:`K - 1`
     - ``argmax`` over the last axis
     - scalar
   * - :math:`\ell`
     - softmax cross-entropy of one example
     - inside ``batch_loss``
     - ``()``

Explanation
-----------

**Stochastic gradients.** The training loss is an average over :math:`N` examples, so its gradient
is an average too, and the average over a random batch of :math:`B` examples is an unbiased estimate
of it that costs :math:`B/N` as much. Stochastic approximation :footcite:`robbins1951stochastic`
turns those noisy estimates into a method that converges, and for large data sets taking many cheap
noisy steps beats taking few exact ones :footcite:`bottou2018optimization`. The step here is plain
SGD with a constant learning rate; the later optimisation chapter replaces only the line that
updates ``params``.

.. admonition:: Intuition

   Minibatch SGD is a hiker descending in fog who asks a few passers-by at a time which way is
   down. Each small poll is noisy, but it is cheap, and a hundred quick noisy steps get further
   than one slow careful survey of everyone. Shuffling every epoch makes sure the hiker meets the
   passers-by in a new order each day, so no streak of like-minded advice leads them astray.

**Shuffling from an explicit key.** Each epoch draws a fresh permutation with its own key, split
once from the run's key: every example is used once per epoch (sampling without replacement), the
order differs between epochs, so no fixed sequence of batches can imprint itself on the weights, and
the whole run is a pure function of its key: the same key reproduces it bit for bit, another key
gives another order. Never iterate a data set in its stored order: data sets are often stored sorted
by class or by the time they were collected, and a model trained on sorted batches chases one class
(or one period) after another.

**A partial last batch is dropped.** When :math:`B` does not divide :math:`N`, the last
:math:`N \bmod B` shuffled examples of each epoch are left out: all batches then have one shape (one
compilation, equal weight per step), and because the order is reshuffled, a different handful is
skipped each epoch, so every example is used in almost every epoch. The alternative, padding the
last batch and masking the padded rows out of the mean, uses every example every epoch at the cost of
a mask; with :math:`N \gg B` the difference is negligible.

**Compiled steps.** ``train_step`` is a pure function from parameters and a batch to new
parameters, so :func:`jax.jit` compiles it once and every later call reuses the compiled program;
``train_epoch`` runs it over the batches with :func:`jax.lax.scan`, and ``fit`` scans over
the epochs, so a whole training run is one compiled program with no Python in the inner loop (each
of the three checks its input and then calls a jitted core; sizes such as the batch size are
static, because they fix array shapes, while the learning rate is traced and changing it does not
recompile). Batches are gathered from the device-resident arrays by index. Shapes and dtypes are
checked before anything is computed (before each core); labels are values, so ``batch_loss``,
``evaluate`` and ``train_epoch`` check their range when called eagerly, while inside the compiled
functions a label outside :math:`0, \dots, K - 1` makes the loss NaN. ``train_step`` leaves the
range unchecked even eagerly, so that a Python loop of steps never waits to read the labels back
from the device.

**Held-out evaluation.** The data are split once, with a fixed seed, into 75% for training and 25%
held out, stratified by class; features are standardised with the mean and standard deviation of
the *training* split only (statistics of the test split would leak into training), and pixels that
are constant in the training set are divided by 1 instead of 0. The network is the ReLU
:doc:`mlp` with one hidden layer; any ``init``/``apply`` pair trains the same way (the test file
checks that one step equals SGD with the hand-written gradients of :doc:`backpropagation`). A
64-64-10 network reaches about 98% held-out accuracy on scikit-learn's handwritten digits
(:func:`sklearn.datasets.load_digits`, 1,797 images of 8 by 8 pixels) in ten epochs:

.. plot::

   import jax
   from cookbook.foundations.training_loop import fit, load_digits_split
   X_train, X_test, y_train, y_test = load_digits_split()
   params, history = fit(jax.random.key(0), X_train, y_train, X_test, y_test,
                         hidden=64, epochs=10, batch_size=32, learning_rate=0.3)
   epochs = np.arange(1, 11)
   fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3))
   ax_loss.plot(epochs, history["train_loss"], "o-")
   ax_loss.set(xlabel="epoch", ylabel="mean training loss", yscale="log", title="Training loss")
   ax_acc.plot(epochs, history["test_accuracy"], "o-", color="C1")
   ax_acc.set(xlabel="epoch", ylabel="held-out accuracy", title="Held-out accuracy")
   fig.tight_layout()

The training loss of an epoch is the mean of its batch losses, measured while the parameters were
still moving, so it runs slightly behind the loss of the final parameters of that epoch.

Inductive bias
--------------

The loop assumes that the examples are exchangeable: independent draws from one distribution, so
that any order is as good as another, a random batch is a fair sample of the whole, and the held-out
split measures what the model will meet next. Where that fails (time series, where the future must
not leak into the past; grouped data, where one writer's digits belong on one side of the split;
data that drift) the split and the shuffling must respect the structure. Plain SGD also assumes
that one learning rate suits every parameter and every moment of training; adaptive optimisers
and learning-rate schedules relax that.

Example
-------

Batches are drawn without repetition, and training on the digits reaches a high held-out accuracy:

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.training_loop import batch_indices, evaluate, fit, load_digits_split
>>> idx = batch_indices(jax.random.key(1), 11, 3)  # 11 examples, batches of 3: 2 are dropped
>>> idx.shape, len(set(idx.ravel().tolist()))
((3, 3), 9)
>>> X_train, X_test, y_train, y_test = load_digits_split()
>>> X_train.shape, X_test.shape
((1347, 64), (450, 64))
>>> params, history = fit(jax.random.key(0), X_train, y_train, X_test, y_test,
...                       hidden=64, epochs=10, batch_size=32, learning_rate=0.3)
>>> bool(history["train_loss"][-1] < history["train_loss"][0])
True
>>> accuracy, loss = evaluate(params, X_test, y_test)
>>> bool(accuracy > 0.95)
True

The pieces that ``fit`` is made of, one step and one epoch at a time:

>>> from cookbook.foundations.training_loop import batch_loss, train_epoch, train_step
>>> before = batch_loss(params, X_train[:32], y_train[:32])
>>> params, step_loss = train_step(params, X_train[:32], y_train[:32], 0.3)
>>> bool(step_loss == before)  # the loss before the step
True
>>> params, epoch_loss = train_epoch(params, jax.random.key(2), X_train, y_train,
...                                  batch_size=32, learning_rate=0.3)  # 42 batches, 3 examples left out
>>> bool(epoch_loss < 0.1)
True
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.foundations.mlp import _check_params, apply, init
from cookbook._memo import cached
from cookbook._extras import needs_extra

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "batch_indices": ("N", "batch_size"),
    "batch_loss": (),
    "train_step": (),
    "train_epoch": ("batch_size",),
    "evaluate": (),
    "fit": ("hidden", "epochs", "batch_size", "num_classes"),
}


def load_digits_split(test_fraction=0.25, seed=0):
    """scikit-learn's digits, split (stratified, fixed ``seed``) and standardised with training statistics.

    Returns ``X_train (N, 64)``, ``X_test (M, 64)`` as float32 and ``y_train (N,)``, ``y_test (M,)``
    as integer labels 0 to 9. The data ship with scikit-learn: nothing is downloaded.
    """
    with needs_extra("data"):  # scikit-learn: pip install 'deep-learning-cookbook[data]'
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # pixels that are always 0 in the training set stay 0
    X_train, X_test = ((X_train - mean) / std, (X_test - mean) / std)
    # Converted by NumPy and placed on the device: jnp.asarray would compile a conversion per shape.
    return (jax.device_put(X_train.astype(np.float32)), jax.device_put(X_test.astype(np.float32)),
            jax.device_put(y_train.astype(np.int32)), jax.device_put(y_test.astype(np.int32)))


def _check_data(X, y, X_name="X", y_name="y", params=None, labels=True):
    """``X`` (N, D) as floats and ``y`` (N,) as integer labels, in [0, K) when concrete, ``params`` given
    and ``labels`` true."""
    X = _checks.float_array(X, X_name, ndim=2, what=" (N, D)")
    y = _checks.int_array(y, y_name)
    if y.shape != (X.shape[0],):
        raise ValueError(f"{y_name} must have shape (N,) = ({X.shape[0]},) to match {X_name} {X.shape}, got shape {y.shape}")
    if params is not None:
        D, K = _check_params(params)
        _checks.same_shape(X, X_name, (X.shape[0], D), expected_from="(N, D) to match params[0]['W']")
        if labels:
            _checks.check_range(y, y_name, 0, K)
    return X, y


def batch_indices(key, N, batch_size):
    """A fresh shuffle of ``range(N)`` cut into ``N // batch_size`` batches, shape (num_batches, B).

    The last ``N % batch_size`` shuffled indices are dropped, so every batch has the same shape.
    """
    N, batch_size = _checks.size(N, "N"), _checks.size(batch_size, "batch_size")
    if not 1 <= batch_size <= N:
        raise ValueError(f"batch_size must be between 1 and N = {N}, got {batch_size}")
    return _batch_indices(key, N, batch_size)


# The public functions check their input, then run compiled cores like this one: a repeated call
# with the same shapes (the tests', the bad-input replay's) reuses one compilation instead of
# dispatching op by op.
@partial(jax.jit, static_argnums=(1, 2))
def _batch_indices(key, N, batch_size):
    num_batches = N // batch_size
    order = jax.random.permutation(key, N)  # (N,)
    return order[: num_batches * batch_size].reshape(num_batches, batch_size)


def batch_loss(params, X, y):
    """Mean softmax cross-entropy of the network over a batch ``X`` (B, D), ``y`` (B,).

    A label outside [0, K) raises when ``y`` is concrete; under :func:`jax.jit` it makes the loss NaN.
    """
    X, y = _check_data(X, y, params=params)
    return _batch_loss(params, X, y)


@jax.jit
def _batch_loss(params, X, y):
    logits = jax.vmap(apply, in_axes=(None, 0))(params, X)  # (B, K)
    log_norm = jax.nn.logsumexp(logits, axis=-1)  # subtracts the max before exp
    valid = (y >= 0) & (y < logits.shape[-1])
    picked = jnp.take_along_axis(logits, jnp.where(valid, y, 0)[:, None], axis=-1)[:, 0]
    return jnp.mean(jnp.where(valid, log_norm - picked, jnp.nan))


def train_step(params, X, y, learning_rate):
    """One SGD step on one batch: returns the new parameters and the batch's loss before the step.

    Its labels are not checked against the classes (reading them back would make a Python loop of
    steps wait for the device at every step): a label outside [0, K) makes the loss NaN.
    """
    X, y = _check_data(X, y, params=params, labels=False)  # shapes and dtypes, before jax.grad sees them
    return _train_step(params, X, y, learning_rate)


@jax.jit
def _train_step(params, X, y, learning_rate):
    loss, grads = jax.value_and_grad(batch_loss)(params, X, y)
    params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
    return params, loss


def train_epoch(params, key, X, y, *, batch_size, learning_rate):
    """One pass over ``X``, ``y`` in a fresh order from ``key``; returns params and the mean batch loss.

    Labels outside [0, K) raise a ``ValueError`` when ``y`` is concrete (once per epoch); traced, as
    inside ``fit``, they make the loss NaN.
    """
    X, y = _check_data(X, y, params=params)  # a list of labels becomes one array here
    batch_size = _checks.size(batch_size, "batch_size")  # a static argument of the core: an int
    return _train_epoch(params, key, X, y, batch_size, learning_rate)


@partial(jax.jit, static_argnums=4)
def _train_epoch(params, key, X, y, batch_size, learning_rate):
    def step(params, idx):
        return train_step(params, X[idx], y[idx], learning_rate)

    params, losses = jax.lax.scan(step, params, batch_indices(key, X.shape[0], batch_size))
    return params, losses.mean()


def evaluate(params, X, y):
    """Accuracy and mean cross-entropy of ``params`` on ``X`` (M, D), ``y`` (M,)."""
    X, y = _check_data(X, y, params=params)
    return _evaluate(params, X, y)


@jax.jit
def _evaluate(params, X, y):
    logits = jax.vmap(apply, in_axes=(None, 0))(params, X)  # (M, K)
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == y)
    return accuracy, _batch_loss(params, X, y)


@cached  # the page's figure and the tests share this run when the book is built (cookbook/_memo.py)
def fit(key, X_train, y_train, X_test, y_test, *, hidden, epochs, batch_size, learning_rate, num_classes=10):
    """Initialise a D-``hidden``-``num_classes`` network and train it for ``epochs`` epochs of minibatch SGD.

    Returns the final parameters and a history of ``"train_loss"`` (mean batch loss of each epoch),
    ``"test_accuracy"`` and ``"test_loss"`` after each epoch, each of shape ``(epochs,)``. The run
    is a pure function of ``key``.
    """
    X_train, y_train = _check_data(X_train, y_train, "X_train", "y_train")
    X_test, y_test = _check_data(X_test, y_test, "X_test", "y_test")
    hidden, num_classes = _checks.size(hidden, "hidden"), _checks.size(num_classes, "num_classes")
    _checks.size(epochs, "epochs")
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_test must have {X_train.shape[1]} features like X_train, got shape {X_test.shape}")
    return _fit(key, X_train, y_train, X_test, y_test, hidden, epochs, batch_size, learning_rate, num_classes)


# Checked in Python first, so that a list of labels is an array before it meets jax.jit, which
# would otherwise take each number of the list as an argument of its own and compile again.
@partial(jax.jit, static_argnums=(5, 6, 7, 9))
def _fit(key, X_train, y_train, X_test, y_test, hidden, epochs, batch_size, learning_rate, num_classes):
    k_init, k_epochs = jax.random.split(key)
    params = init(k_init, (X_train.shape[1], hidden, num_classes))

    def epoch(params, epoch_key):
        params, train_loss = train_epoch(
            params, epoch_key, X_train, y_train, batch_size=batch_size, learning_rate=learning_rate
        )
        test_accuracy, test_loss = evaluate(params, X_test, y_test)
        return params, {"train_loss": train_loss, "test_accuracy": test_accuracy, "test_loss": test_loss}

    return jax.lax.scan(epoch, params, jax.random.split(k_epochs, epochs))
