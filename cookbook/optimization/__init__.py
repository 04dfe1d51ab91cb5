"""Optimization
============

How a network's parameters are moved downhill. Every recipe here is an optimiser (or a piece of one)
with the interface that optax made familiar: a factory returns a pair of pure functions,
``init(params) -> state`` and ``update(grads, state, params) -> (updates, state)``, and
``apply_updates`` adds the updates to the parameters, whatever pytree they are. Because the pieces
are pure they compile under :func:`jax.jit` and run inside :func:`jax.lax.scan`, and because they
share one interface they can be swapped, compared and chained.

The chapter goes from the simplest idea to the most expensive: stochastic gradient descent and
momentum; per-parameter step sizes learned from the gradients' history (AdaGrad, RMSProp, Adam and
AdamW); the sign-based Lion; the memory-saving Adafactor; Muon, which steps along the orthogonalised momentum
of each weight matrix; Shampoo and SOAP, which precondition each matrix from both sides; learning-rate schedules, and schedule-free AdamW, which replaces the schedule by an
average of the iterates; sharpness-aware minimisation, which takes each gradient at the worst nearby point; gradient clipping,
which composes with any optimiser; and second-order methods, which use curvature instead of
history. Every optimiser is checked step for step against optax's optimiser of the same name, on a
least-squares problem and on the Rosenbrock function; the :doc:`adam` page draws the paths of SGD,
momentum, RMSProp and Adam on the Rosenbrock function side by side.
"""

#: The recipes in reading order.
RECIPES = (
    "sgd",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "lion",
    "adafactor",
    "muon",
    "shampoo",
    "schedules",
    "schedule_free",
    "sam",
    "gradient_clipping",
    "second_order",
)
