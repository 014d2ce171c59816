"""Token orders for autoregressive pre-training on a patch grid.

The AIM paper (El-Nouby et al., ICML 2024, Section 5 "Ablations") compares
the order in which patches are predicted: raster (the default and the best),
spiral, checkerboard and a fixed random order. An order is a permutation
`order` of the raster indices `0..N-1`: position `k` of the autoregressive
sequence holds the patch whose raster index is `order[k]`, so a sequence in
raster order is reordered with `take(x, order, axis=1)`.
"""

import numpy as np

from keras_aim.utils.validation import positive_int

TOKEN_ORDERS = ("raster", "spiral", "checkerboard", "random")


def _check_grid(grid_h, grid_w):
    return positive_int(grid_h, "grid_h"), positive_int(grid_w, "grid_w")


def spiral_order(grid_h, grid_w):
    """Outside-in clockwise spiral over a `grid_h` x `grid_w` patch grid.

    Starts at the top-left patch, runs right along the top row, down the
    right column, left along the bottom row and up the left column, then
    continues with the next ring inwards until the centre is reached.

    Example:

    >>> spiral_order(3, 3).tolist()
    [0, 1, 2, 5, 8, 7, 6, 3, 4]
    """
    grid_h, grid_w = _check_grid(grid_h, grid_w)
    grid = np.arange(grid_h * grid_w).reshape(grid_h, grid_w)
    order = []
    top, bottom, left, right = 0, grid_h - 1, 0, grid_w - 1
    while top <= bottom and left <= right:
        order.extend(grid[top, left : right + 1])
        order.extend(grid[top + 1 : bottom + 1, right])
        if top < bottom:
            order.extend(grid[bottom, left:right][::-1])
        if left < right:
            order.extend(grid[top + 1 : bottom, left][::-1])
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return np.asarray(order, dtype="int32")


def checkerboard_order(grid_h, grid_w):
    """All "black" squares (`row + col` even) in raster order, then "white".

    Example:

    >>> checkerboard_order(2, 3).tolist()
    [0, 2, 4, 1, 3, 5]
    """
    grid_h, grid_w = _check_grid(grid_h, grid_w)
    rows, cols = np.divmod(np.arange(grid_h * grid_w), grid_w)
    black = (rows + cols) % 2 == 0
    raster = np.arange(grid_h * grid_w)
    return np.concatenate([raster[black], raster[~black]]).astype("int32")


def token_order(name, grid_h, grid_w, seed=0):
    """Returns the permutation of raster patch indices for a token order.

    Args:
        name: `"raster"` (identity), `"spiral"` (outside-in clockwise, see
            `spiral_order`), `"checkerboard"` (see `checkerboard_order`) or
            `"random"` (one fixed permutation drawn from `seed`, the same
            for every image and every step, as in the paper's "fixed
            random" order).
        grid_h: int, patch rows.
        grid_w: int, patch columns.
        seed: int, seed of the `"random"` order. Defaults to 0.

    Returns:
        A NumPy `int32` array of shape `(grid_h * grid_w,)`: position `k` of
        the sequence holds the patch with raster index `order[k]`.

    Example:

    >>> token_order("raster", 2, 2).tolist()
    [0, 1, 2, 3]
    >>> token_order("spiral", 2, 3).tolist()
    [0, 1, 2, 5, 4, 3]
    >>> sorted(token_order("random", 2, 3, seed=1).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    grid_h, grid_w = _check_grid(grid_h, grid_w)
    if name == "raster":
        return np.arange(grid_h * grid_w, dtype="int32")
    if name == "spiral":
        return spiral_order(grid_h, grid_w)
    if name == "checkerboard":
        return checkerboard_order(grid_h, grid_w)
    if name == "random":
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(
                f"`seed` of the random token order must be an int; got "
                f"{seed!r}."
            )
        rng = np.random.default_rng(int(seed))
        return rng.permutation(grid_h * grid_w).astype("int32")
    raise ValueError(
        f"Unknown token order {name!r}; expected one of {TOKEN_ORDERS}."
    )
