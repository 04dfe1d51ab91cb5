import functools

import jax
import numpy as np
import pytest

from cookbook.reinforcement.mcts import outcome, play, search

SIMULATIONS = 200
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def numpy_outcome(board):
    lost = any(sum(board[i] for i in line) == -3 for line in LINES)
    return lost or all(x != 0 for x in board), (-1.0 if lost else 0.0)


def numpy_play(board, action):
    board = list(board)
    board[action] = 1
    return tuple(-x for x in board)


@functools.lru_cache(maxsize=None)
def minimax(board):
    """The exact value of a position for the player to move (+1 win, 0 draw, -1 loss), by full search."""
    done, value = numpy_outcome(board)
    if done:
        return value
    return max(-minimax(numpy_play(board, a)) for a in range(9) if board[a] == 0)


def optimal_moves(board):
    best = minimax(board)
    return {a for a in range(9) if board[a] == 0 and -minimax(numpy_play(board, a)) == best}


def random_positions(n, seed):
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < n:
        board = (0,) * 9
        for _ in range(rng.integers(0, 7)):
            board = numpy_play(board, rng.choice([a for a in range(9) if board[a] == 0]))
            if numpy_outcome(board)[0]:
                break
        if not numpy_outcome(board)[0]:
            positions.append(board)
    return positions


def test_the_game_rules_match_a_python_reference():
    positions = random_positions(11, 0)
    boards = np.asarray(positions, np.float32)
    done, value = (np.asarray(a) for a in jax.jit(jax.vmap(outcome))(boards))
    for position, d, v in zip(positions, done, value):
        assert (bool(d), float(v)) == numpy_outcome(position)
    action = 4 if positions[3][4] == 0 else positions[3].index(0)
    after = play(boards[3], action)  # its compiled core, as the example's call and the jit check run it
    np.testing.assert_array_equal(after, numpy_play(positions[3], action))
    # the game's exact value: a draw from the empty board, 5478 legal positions in all
    assert minimax((0,) * 9) == 0
    minimax.cache_clear()
    assert minimax((0,) * 9) == 0 and minimax.cache_info().currsize == 5478  # every position, finished ones too


#: One compiled program for every search of the module: a batch of 30 boards, searched one after
#: another, with the keys split from ``key`` inside (the first n of 30 keys are those of a split into n).
BATCH = 30
search_all = jax.jit(lambda boards, key: jax.lax.map(lambda x: search(x[0], x[1], SIMULATIONS),
                                                     (boards, jax.random.split(key, BATCH))))


@pytest.fixture(scope="module")
def games():
    """22 games, played in NumPy with the search's moves computed for all games at once at each ply:
    10 with the search moving first against a random player, 10 with it moving second, 2 against itself."""
    kinds = np.array([[1, 0]] * 10 + [[0, 1]] * 10 + [[1, 1]] * 2, bool)  # is player 0 / player 1 the search?
    n = len(kinds)
    rng = np.random.default_rng(1)
    boards, done, results = [(0,) * 9] * n, np.zeros(n, bool), np.zeros(n)
    filler = [(0,) * 9] * (BATCH - n)  # empty boards that fill the batch; their searches are not read
    for t in range(9):
        visits = np.asarray(search_all(np.asarray(boards + filler, np.float32), jax.random.key(t))[0])[:n]
        for g in range(n):
            if done[g]:
                continue
            empty = [a for a in range(9) if boards[g][a] == 0]
            action = int(visits[g].argmax()) if kinds[g, t % 2] else int(rng.choice(empty))
            assert action in empty
            boards[g] = numpy_play(boards[g], action)
            over, value = numpy_outcome(boards[g])
            if over:
                done[g], results[g] = True, (0.0 if value == 0 else (1.0 if t % 2 == 0 else -1.0))
    assert done.all()
    return kinds, results


def test_never_loses_to_a_random_player(games):
    kinds, results = games
    first, second = results[:10], results[10:20]
    assert (first >= 0).all() and (second <= 0).all()  # no loss, moving first or second
    assert (first > 0).mean() > 0.8  # and it mostly wins


def test_draws_against_itself(games):
    _, results = games
    np.testing.assert_array_equal(results[20:], 0.0)


def test_picks_a_minimax_optimal_move_in_random_positions():
    positions = random_positions(BATCH, 2)
    visits = search_all(np.asarray(positions, np.float32), jax.random.key(3))[0]
    for position, v in zip(positions, np.asarray(visits)):
        assert int(v.argmax()) in optimal_moves(position), (position, v)
        assert v.sum() == SIMULATIONS


def test_bad_input():
    with pytest.raises(ValueError, match="board must hold only"):
        search(np.array([2, 0, 0, 0, 0, 0, 0, 0, 0], np.float32), jax.random.key(0), 5)
    with pytest.raises(ValueError, match="board must have shape"):
        outcome(np.zeros(8, np.float32))
    with pytest.raises(TypeError, match="board must be a floating-point"):
        outcome(np.zeros(9, np.int32))
    with pytest.raises(ValueError, match="unfinished"):
        search(np.array([-1, -1, -1, 1, 1, 0, 1, 0, 0], np.float32), jax.random.key(0), 5)
    with pytest.raises(ValueError, match="action must be an empty cell"):
        play(np.array([1, 0, 0, 0, -1, 0, 0, 0, 0], np.float32), 4)
    with pytest.raises(TypeError, match="num_simulations"):
        search(np.zeros(9, np.float32), jax.random.key(0), 5.0)
    with pytest.raises(ValueError, match="reachable"):
        outcome(np.array([1, 1, 1, 0, 0, 0, 0, 0, 0], np.float32))
