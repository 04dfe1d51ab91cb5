r"""Sample recipe
=============

Its legend names ``bias``, which the code calls ``b``.

Equation
--------

.. math::

   y = \sigma(x w + b)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`y`
     - input; output
     - ``x``; ``y``
     - ``(D,)``; ``()``
   * - :math:`w`, :math:`b`
     - weights; bias
     - ``w``; ``bias``
     - ``(D,)``; ``()``
   * - :math:`\sigma`
     - the logistic sigmoid
     - ``jax.nn.sigmoid``
     - elementwise

Explanation
-----------

Words :footcite:`bishop2006pattern`.

.. admonition:: Intuition

   A vote: each input casts a weighted ballot and the sigmoid turns the tally into a probability.

Inductive bias
--------------

A linear boundary.

Example
-------

>>> 1 + 1
2

Implementation notes
--------------------

Measured figures and library layouts go here, after the code and the example.
"""

import jax


def predict(x, w, b):
    y = jax.nn.sigmoid(x @ w + b)
    return y
