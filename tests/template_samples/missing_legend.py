r"""Sample recipe
=============

A well-formed page that the check accepts; the broken samples beside it each break one rule.

Equation
--------

.. math::

   y = \sigma(x w + b)

Explanation
-----------

Words :footcite:`bishop2006pattern`.

Inductive bias
--------------

A linear boundary.

Example
-------

>>> 1 + 1
2
"""
