"""The order of the map's points in regl-scatterplot's spatial index (a KDBush tree), computed on the server.

regl-scatterplot answers hover and lasso queries from a KDBush index it builds on every
``draw``: a kd-sort of the points on the browser's main thread, about 120 ms of the first
load at 32,000 concepts on a busy 2-core machine (Chrome's profiler: KDBush's ``select``
100 ms, ``sort`` 21 ms), and again on every change of colour. The layout is the same for
every model and colour, so the server sorts it once and sends the order (``uint32`` per
point); the page fills KDBush's buffer from it and its own coordinates and hands that to
``draw`` (its ``spatialIndex`` option), which then skips the sort: the first load at 32,000
concepts went from 1.39 to 1.28 s (medians of 16 interleaved loads each, busy machine);
the sort here takes about 55 ms, once per server.

KDBush's layout (``kdbush`` 4, as bundled): the range ``[left, right]`` of the ids is a
leaf when it holds at most ``node_size + 1`` points; otherwise its middle ``m = (left +
right) >> 1`` holds the median on the level's axis (x at the root, then alternating),
everything left of it no greater on that axis and everything right of it no smaller, and
both halves are sorted the same way on the other axis. Any order with that property
answers KDBush's queries; a full sort of each range on its axis has it. The order is the
same on the page's normalised coordinates: they are an increasing function of these.
"""

from __future__ import annotations

import numpy as np

NODE_SIZE = 64  # KDBush's default, which regl-scatterplot uses


def kd_order(x: np.ndarray, y: np.ndarray, node_size: int = NODE_SIZE) -> np.ndarray:
    """The point ids in KDBush's order for coordinates (x, y): (n,) uint32. One sort per tree level, over all
    the level's ranges at once (ids grouped by range, then by coordinate)."""
    coords = np.stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    n = coords.shape[1]
    ids = np.arange(n, dtype=np.int64)
    left, right = np.array([0]), np.array([n - 1])
    axis = 0
    while left.size:
        split = right - left > node_size  # the ranges that are not leaves
        left, right = left[split], right[split]
        if not left.size:
            break
        sizes = right - left + 1
        positions = np.repeat(left, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        group = np.repeat(np.arange(left.size), sizes)
        order = np.lexsort((coords[axis, ids[positions]], group))
        ids[positions] = ids[positions[order]]
        middle = (left + right) >> 1
        left, right = np.concatenate([left, middle + 1]), np.concatenate([middle - 1, right])
        axis = 1 - axis
    return ids.astype(np.uint32)
