"""Token orders: each is a permutation with the documented layout."""

import numpy as np
import pytest

from keras_aim.layers.token_orders import TOKEN_ORDERS
from keras_aim.layers.token_orders import token_order

GRIDS = [(1, 1), (1, 5), (4, 1), (2, 3), (3, 3), (4, 4), (5, 7), (7, 4)]


@pytest.mark.parametrize("name", TOKEN_ORDERS)
@pytest.mark.parametrize("grid", GRIDS)
def test_every_order_is_a_permutation(name, grid):
    order = token_order(name, *grid, seed=3)
    assert order.dtype == np.int32
    assert order.shape == (grid[0] * grid[1],)
    np.testing.assert_array_equal(np.sort(order), np.arange(order.size))


def test_raster_is_identity():
    np.testing.assert_array_equal(token_order("raster", 3, 5), np.arange(15))


def test_spiral_known_grids():
    # Grids written out by hand: outside-in, clockwise, from the top-left.
    assert token_order("spiral", 3, 3).tolist() == [0, 1, 2, 5, 8, 7, 6, 3, 4]
    assert token_order("spiral", 4, 4).tolist() == [
        0, 1, 2, 3, 7, 11, 15, 14, 13, 12, 8, 4, 5, 6, 10, 9,
    ]  # fmt: skip
    assert token_order("spiral", 3, 4).tolist() == [
        0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6,
    ]  # fmt: skip


@pytest.mark.parametrize("grid", GRIDS)
def test_spiral_walks_between_neighbours_and_ends_inside(grid):
    grid_h, grid_w = grid
    rows, cols = np.divmod(token_order("spiral", grid_h, grid_w), grid_w)
    steps = np.abs(np.diff(rows)) + np.abs(np.diff(cols))
    assert np.all(steps == 1)  # each next patch touches the previous one
    assert rows[0] == 0 and cols[0] == 0
    # Distance to the border never increases along the spiral.
    ring = np.minimum.reduce([rows, cols, grid_h - 1 - rows, grid_w - 1 - cols])
    assert np.all(np.diff(ring) >= 0)


@pytest.mark.parametrize("grid", GRIDS)
def test_checkerboard_black_squares_first_in_raster_order(grid):
    grid_h, grid_w = grid
    order = token_order("checkerboard", grid_h, grid_w)
    rows, cols = np.divmod(order, grid_w)
    colour = (rows + cols) % 2
    num_black = int(
        np.sum((np.add.outer(np.arange(grid_h), np.arange(grid_w)) % 2) == 0)
    )
    assert np.all(colour[:num_black] == 0) and np.all(colour[num_black:] == 1)
    assert np.all(np.diff(order[:num_black]) > 0)
    assert np.all(np.diff(order[num_black:]) > 0)


def test_random_order_is_fixed_by_its_seed():
    first = token_order("random", 4, 4, seed=7)
    np.testing.assert_array_equal(first, token_order("random", 4, 4, seed=7))
    assert not np.array_equal(first, token_order("random", 4, 4, seed=8))
    assert not np.array_equal(first, np.arange(16))


@pytest.mark.parametrize(
    "args",
    [("zigzag", 2, 2), ("raster", 0, 2), ("spiral", 2, 2.5), ("raster", -1, 3)],
)
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError, match="token order|grid_"):
        token_order(*args)


def test_bad_random_seed_raises():
    with pytest.raises(ValueError, match="seed"):
        token_order("random", 2, 2, seed="a")
