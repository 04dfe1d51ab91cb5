r"""Sample recipe
=============

A well-formed page that the check accepts; the broken samples beside it each break one rule.

Explanation
-----------

Words :footcite:`bishop2006pattern`.

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

Inductive bias
--------------

A linear boundary.

Example
-------

>>> 1 + 1
2
"""
