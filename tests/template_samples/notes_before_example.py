r"""Sample recipe
=============

A well-formed page that the check accepts; the broken samples beside it each break one rule.

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
     - ``w``; ``b``
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

Implementation notes
--------------------

Measured figures and library layouts go here, after the code and the example.

Example
-------

>>> 1 + 1
2
"""

import jax


def predict(x, w, b):
    y = jax.nn.sigmoid(x @ w + b)
    return y
