r"""Monte Carlo tree search with PUCT
=================================

Monte Carlo tree search (MCTS) plans a move by growing a search tree from the current position, one
simulated game at a time, spending its simulations on the moves that look best so far while still
trying the others; with the PUCT rule of AlphaZero it is the planner behind superhuman play at Go,
chess and shogi.

Equation
--------

.. math::

   \begin{aligned}
   a^{*} &= \arg\max_{a} \Big[ Q(s, a) + c\, P(s, a)\, \frac{\sqrt{\sum_{b} N(s, b)}}{1 + N(s, a)} \Big],
   \qquad Q(s, a) = \frac{W(s, a)}{N(s, a)}, \\
   N(s_k, a_k) &\leftarrow N(s_k, a_k) + 1, \qquad
   W(s_k, a_k) \leftarrow W(s_k, a_k) + (-1)^{d - k}\, v \quad (k = d-1, \ldots, 0)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`s`, :math:`a`, :math:`b`
     - a position in the tree and moves from it (the nine cells of the board)
     - ``boards``, ``action``
     - ``(M, 9)``, scalar
   * - :math:`N(s, a)`
     - how many simulations took move :math:`a` from :math:`s`
     - ``visits``
     - ``(M, 9)``
   * - :math:`W(s, a)`, :math:`Q(s, a)`
     - total and mean value of those simulations, for the player to move at :math:`s`
     - ``value_sums``, ``q``
     - ``(M, 9)``
   * - :math:`P(s, a)`
     - prior probability of the move (uniform over the legal moves here; a network in AlphaZero)
     - ``prior``
     - ``(9,)``
   * - :math:`c`
     - exploration constant
     - ``c_puct``
     - scalar
   * - :math:`a^{*}`
     - the move that the selection takes
     - ``action``
     - scalar
   * - :math:`s_k`, :math:`a_k`, :math:`k`, :math:`d`
     - the :math:`k`-th position and move on the simulation's path, and the path's length
     - ``path_nodes``, ``path_actions``, ``depth``
     - ``(10,)``, ``(10,)``, scalar
   * - :math:`v`
     - value of the leaf for the player to move there: the game's result, or random playouts' mean
     - ``value``, ``playouts``
     - scalar
   * - :math:`M`
     - nodes in the tree, one more than the simulations
     - ``num_simulations + 1``
     - scalar

Explanation
-----------

Monte Carlo tree search treats the choice at each position of the tree as a bandit problem
:footcite:p:`kocsis2006bandit`. Each simulation walks down the tree from the root, choosing at each
position the move that maximises the PUCT score :footcite:p:`silver2018general`: its mean value so far, plus a bonus that is
large for moves with a high prior and few visits and that shrinks as a move is tried. The first move
that leads out of the tree adds one new position to it; that position is evaluated, here by the
mean result of a few games played on from it with random moves (AlphaZero asks a value network
instead), and the result is backed up along the path. Tic-tac-toe is a zero-sum game between alternating players, so a value
good for one player is bad for the other: its sign flips at each level. Each move's visit count
grows where the search finds the best value, and after all simulations the most visited move is
played. As the simulations grow the mean values approach the minimax values of the game, which for
tic-tac-toe are known exactly: every position can be solved by a search of its 5478 legal positions,
and the tests do so to check the search's moves.

.. admonition:: Intuition

   A chess player thinking ahead looks hardest at the lines that seem promising, but glances now and
   then at a move that looked weak, in case it hides something. The bonus term is that glance: it
   shrinks each time a move is examined, so attention settles on the best line without ever
   abandoning the others completely.

*In code.* The tree is a set of fixed-size arrays, one row per node, so that the whole search is
one compiled program: ``boards`` holds each node's position from the view of the player to move
(+1 their marks, -1 the opponent's), ``children`` the node each move leads to (-1 while unexpanded).
An unvisited move has :math:`Q = 0`. A leaf's value is the mean of ``num_playouts`` random
playouts (4 by default; one alone is too noisy for 200 simulations to play tic-tac-toe
perfectly), which draw all their random numbers at once.
*Bad input.* The board must hold nine values in :math:`\{-1, 0, 1\}` and be a legal, unfinished
position (checked when concrete).

Inductive bias
--------------

MCTS assumes a model of the game that it can simulate exactly, whose moves and outcomes it knows; it
needs no training, but its estimate is only as good as its simulations and its leaf evaluation. With
random playouts it prefers moves that win against random continuations, which can mislead it in
sharp positions; AlphaZero's learned prior and value fix this. In the tests, 200 simulations per
move never lose to a random player over 20 games, moving first or second, draw against themselves,
and pick a minimax-optimal move in every one of 30 random positions.

Example
-------

The player to move (+1) has two in a row on the top line; the search finds the winning cell:

>>> import jax, jax.numpy as jnp
>>> from cookbook.reinforcement.mcts import play, outcome, search
>>> board = jnp.array([1, 1, 0, -1, -1, 0, 0, 0, 0], jnp.float32)
>>> visits, q = search(board, jax.random.key(0), 50)
>>> int(visits.argmax()), round(float(q[2]), 2)  # cell 2 completes the line: a sure win
(2, 1.0)
>>> after = play(board, 2)  # the board seen by the opponent, who has just lost
>>> outcome(after)  # (game over, value for the player to move)
(Array(True, dtype=bool), Array(-1., dtype=float32))
"""

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"play": (), "outcome": (), "search": ("num_simulations",)}

_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def _board(board):
    board = _checks.float_array(board, "board", ndim=1, what=" (9,)")
    _checks.same_shape(board, "board", (9,))
    if _checks.is_concrete(board):
        values = np.asarray(board)
        if not np.isin(values, (-1.0, 0.0, 1.0)).all():
            raise ValueError(f"board must hold only -1, 0 and 1, got {values.tolist()}")
        if abs(values.sum()) > 1:
            raise ValueError(f"board is not a reachable position (marks differ by more than one): {values.tolist()}")
    return board


def _outcome(board):
    sums = board[jnp.array(_LINES)].sum(axis=1)  # (8,)
    lost = jnp.any(sums == -3.0)  # the opponent has just completed a line
    full = jnp.all(board != 0.0)
    return lost | full, jnp.where(lost, -1.0, 0.0).astype(board.dtype)


def _play(board, action):
    return -board.at[action].set(1.0)  # place the mark, then look from the opponent's side


# The public functions check their input in Python, then hand it as it comes to one compiled core, so
# that a repeated call with the same shapes (the examples', the tests', the jit and bad-input checks')
# reuses one program instead of compiling each small operation alone.
_outcome_jit = jax.jit(_outcome)
_play_jit = jax.jit(_play)


def outcome(board):
    """``(done, value)``: whether the game is over, and its value for the player to move (-1 lost, 0 draw)."""
    return _outcome_jit(_board(board))


def play(board, action):
    """The board (9,) after the player to move marks cell ``action``, from the opponent's view."""
    board = _board(board)
    if _checks.is_concrete(board) and not isinstance(action, jax.core.Tracer):
        if not 0 <= int(action) < 9 or float(np.asarray(board)[int(action)]) != 0.0:
            raise ValueError(f"action must be an empty cell in [0, 9), got {action} on {np.asarray(board).tolist()}")
    return _play_jit(board, action)


def _playout(board, u):
    """Value for the player to move of a game finished with random moves, from uniform numbers u (9,)."""

    def step(carry, u_t):
        board, sign, value, done = carry
        over, v = _outcome(board)
        value = jnp.where(done | ~over, value, sign * v)
        done = done | over
        legal = (board == 0.0).astype(jnp.float32)
        cumulative = jnp.cumsum(legal)
        action = jnp.argmax(cumulative > u_t * cumulative[-1])  # a uniformly drawn empty cell
        board = jnp.where(done, board, _play(board, action))
        return (board, jnp.where(done, sign, -sign), value, done), None

    (_, _, value, _), _ = jax.lax.scan(step, (board, 1.0, 0.0, False), u)
    return value


def search(board, key, num_simulations, c_puct=1.5, *, num_playouts=4):
    """``(visits, q)`` (9,) at the root after ``num_simulations`` PUCT simulations from ``board``.

    ``board`` (9,) is seen by the player to move (+1 theirs, -1 the opponent's, 0 empty) and must be
    unfinished; the most visited move is the one to play, and ``q`` is each move's mean value.
    """
    board = _board(board)
    num_simulations = _checks.size(num_simulations, "num_simulations")
    c_puct = _checks.positive(c_puct, "c_puct")
    if _checks.is_concrete(board) and bool(_outcome_jit(board)[0]):
        raise ValueError(f"board must be an unfinished game, got {np.asarray(board).tolist()}")
    num_playouts = _checks.size(num_playouts, "num_playouts")
    if isinstance(c_puct, jax.core.Tracer):
        return _search_traced(board, key, num_simulations, c_puct, num_playouts)
    # A number (the usual case) is a constant of the program: the core then takes the function's
    # inputs as they come, and a jax.jit around search compiles nothing more.
    return _search_static(board, key, num_simulations, float(c_puct), num_playouts)


def _search(board, key, num_simulations, c_puct, num_playouts):
    M = num_simulations + 1
    u = jax.random.uniform(key, (num_simulations, num_playouts, 9))  # the random numbers of every playout
    tree = {"boards": jnp.zeros((M, 9)).at[0].set(board), "children": jnp.full((M, 9), -1),
            "visits": jnp.zeros((M, 9)), "value_sums": jnp.zeros((M, 9))}

    def select(tree, node):
        visits = tree["visits"][node]
        legal = tree["boards"][node] == 0.0
        prior = legal / legal.sum()
        q = tree["value_sums"][node] / jnp.maximum(visits, 1.0)
        score = q + c_puct * prior * jnp.sqrt(visits.sum()) / (1.0 + visits)
        return jnp.argmax(jnp.where(legal, score, -jnp.inf))

    def simulate(tree, inputs):
        index, u = inputs  # the new node's row, and the playout's random numbers

        def descend(carry):
            node, depth, path_nodes, path_actions, _ = carry
            action = select(tree, node)
            child = tree["children"][node, action]
            path_nodes, path_actions = path_nodes.at[depth].set(node), path_actions.at[depth].set(action)
            next_node = jnp.where(child < 0, index, child)
            stop = (child < 0) | _outcome(tree["boards"][jnp.maximum(child, 0)])[0]
            return next_node, depth + 1, path_nodes, path_actions, stop

        def keep_going(carry):
            return ~carry[4]

        start = (0, 0, jnp.zeros(10, jnp.int32), jnp.zeros(10, jnp.int32), False)
        leaf, depth, path_nodes, path_actions, _ = jax.lax.while_loop(keep_going, descend, start)
        parent, action = path_nodes[depth - 1], path_actions[depth - 1]
        expand = leaf == index  # the path left the tree: add the new position
        leaf_board = _play(tree["boards"][parent], action)
        tree = {**tree, "boards": tree["boards"].at[index].set(jnp.where(expand, leaf_board, tree["boards"][index])),
                "children": tree["children"].at[parent, action].set(leaf)}
        over, value = _outcome(leaf_board)
        playouts = jax.vmap(_playout, in_axes=(None, 0))(leaf_board, u).mean()  # (num_playouts,) averaged
        value = jnp.where(over, value, playouts)  # for the player to move at the leaf

        def backup(k, tree):
            level = depth - 1 - k  # from the leaf's parent up to the root
            sign = jnp.where(k % 2 == 0, -1.0, 1.0)  # the parent's player is the leaf's opponent
            node, act = path_nodes[level], path_actions[level]
            return {**tree, "visits": tree["visits"].at[node, act].add(1.0),
                    "value_sums": tree["value_sums"].at[node, act].add(sign * value)}

        return jax.lax.fori_loop(0, depth, backup, tree), None

    tree, _ = jax.lax.scan(simulate, tree, (jnp.arange(1, M), u))
    visits = tree["visits"][0]
    return visits, tree["value_sums"][0] / jnp.maximum(visits, 1.0)


_search_traced = jax.jit(_search, static_argnames=("num_simulations", "num_playouts"))
_search_static = jax.jit(_search, static_argnames=("num_simulations", "c_puct", "num_playouts"))
