"""Autograd against central differences, for gradients through a time grid (the grid of
``tests/test_grid_search.py``, the network times of ``tests/test_network_times.py``)."""

import pytest


def assert_gradient_matches_central_differences(f, point, *, rel, abs_tol, label):
    """d f / d point_i by autograd (``f(p, grad=True)`` with p requiring grad) against
    (f(point + h e_i) - f(point - h e_i)) / 2h, h = 1e-6 point_i, for every i after the first
    (T, which tuning keeps fixed)."""
    p = point.clone().requires_grad_(True)
    f(p, grad=True).backward()
    for i in range(1, len(point)):
        h = 1e-6 * float(point[i])
        up, down = point.clone(), point.clone()
        up[i] += h
        down[i] -= h
        fd = float(f(up) - f(down)) / (2 * h)
        assert float(p.grad[i]) == pytest.approx(fd, rel=rel, abs=abs_tol), (label, i)
