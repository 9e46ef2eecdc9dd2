"""The server-side order of regl-scatterplot's KDBush index: the kd-tree property, and KDBush's queries on it."""

from __future__ import annotations

import numpy as np
import pytest

from backend.kdindex import kd_order


def kdbush_range(ids, coords, node_size, box):
    """KDBush 4's ``range`` query, transcribed from the bundled library, over an index in this order."""
    min_x, min_y, max_x, max_y = box
    stack, found = [(0, len(ids) - 1, 0)], []
    while stack:
        left, right, axis = stack.pop()
        if right - left <= node_size:
            found += [ids[i] for i in range(left, right + 1)
                      if min_x <= coords[i, 0] <= max_x and min_y <= coords[i, 1] <= max_y]
            continue
        m = (left + right) >> 1
        x, y = coords[m]
        if min_x <= x <= max_x and min_y <= y <= max_y:
            found.append(ids[m])
        if (min_x <= x) if axis == 0 else (min_y <= y):
            stack.append((left, m - 1, 1 - axis))
        if (max_x >= x) if axis == 0 else (max_y >= y):
            stack.append((m + 1, right, 1 - axis))
    return sorted(int(i) for i in found)


@pytest.mark.parametrize("n, node_size", [(5, 64), (1000, 8), (20_000, 64)])
def test_the_order_answers_kdbush_queries_like_a_scan(n, node_size):
    rng = np.random.default_rng(n)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    xy[: n // 10] = xy[0]  # ties on both axes
    ids = kd_order(xy[:, 0], xy[:, 1], node_size)
    assert sorted(ids.tolist()) == list(range(n)) and ids.dtype == np.uint32
    coords = xy[ids].astype(np.float64)
    for box in [(-0.5, -0.5, 0.5, 0.5), (-3, -3, 3, 3), (0.1, -2, 0.4, 0.0), (*xy[0], *xy[0])]:
        inside = np.flatnonzero((xy[:, 0] >= box[0]) & (xy[:, 0] <= box[2]) & (xy[:, 1] >= box[1])
                                & (xy[:, 1] <= box[3]))
        assert kdbush_range(ids, coords, node_size, box) == inside.tolist()


def test_an_unsorted_order_breaks_the_queries():
    """The control: the identity order (no kd-sort) misses points, so the test above can fail."""
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(2000, 2))
    box = (-0.5, -0.5, 0.5, 0.5)
    inside = np.flatnonzero((np.abs(xy) <= 0.5).all(axis=1)).tolist()
    assert kdbush_range(np.arange(2000), xy, 8, box) != inside
