"""seqlib.newton: Newton's method solves a nonlinear recurrence in parallel over time. It equals the
sequential loop, converges in a number of steps that does not grow with T, makes at least one more
state exact per step, and its implicit gradient equals backpropagation through the loop."""
import pytest
import torch

from seqlib.gated import gru_cell
from seqlib.newton import (DiagonalGRU, DiagonalGRUCell, matrix_linear_scan,
                           matrix_linear_scan_sequential, newton_solve, sequential_solve)

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _problem(T, dtype=torch.float64, B=4, D=8, N=16, seed=0):
    torch.manual_seed(seed)
    cell = DiagonalGRUCell(D, N, dtype=dtype)
    return cell, torch.randn(B, T, D, dtype=dtype), torch.randn(B, N, dtype=dtype)


def _dense_gru_cell(D, N, seed=0):
    torch.manual_seed(seed)
    w = [p.detach() for p in torch.nn.GRU(D, N, dtype=torch.float64).parameters()]
    return lambda x, h: gru_cell(x, h, *w)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T", [1, 64, 1000])
def test_equals_the_sequential_run(dtype, T):
    cell, x, h0 = _problem(T, dtype)
    with torch.no_grad():
        H, res = newton_solve(cell, x, h0)
        ref = sequential_solve(cell, x, h0)
    assert res[-1] <= (1e-12 if dtype == torch.float64 else 1e-6), res
    assert (H - ref).abs().max() < TOL[dtype]


def test_iterations_do_not_grow_with_length():
    # The chapter's paper check (ParaRNN): a contractive cell converges in a few Newton steps,
    # the same number for T = 64, 256 and 1024. Measured: 4, 4, 4 in float64 (tol 1e-12) and
    # 3, 3, 3 in float32 (tol 1e-6); the fixed-point iteration needs about 50.
    counts = {}
    for dtype in (torch.float64, torch.float32):
        for T in (64, 256, 1024):
            cell, x, h0 = _problem(T, dtype)
            with torch.no_grad():
                H, res = newton_solve(cell, x, h0)
            assert (H - sequential_solve(cell, x, h0)).abs().max() < TOL[dtype]
            counts[dtype, T] = len(res) - 1
    for dtype in (torch.float64, torch.float32):
        c = [counts[dtype, T] for T in (64, 256, 1024)]
        assert max(c) <= 6 and max(c) - min(c) <= 1, counts


def test_quadratic_convergence():
    cell, x, h0 = _problem(256)
    with torch.no_grad():
        _, res = newton_solve(cell, x, h0)
    # once close, each step squares the error (up to a constant): 1e-4 -> 1e-8 -> 1e-16
    close = [r for r in res if r < 1e-2]
    assert all(b < 10 * a ** 2 or b < 1e-14 for a, b in zip(close, close[1:])), res


def test_fixed_point_iteration_is_much_slower():
    cell, x, h0 = _problem(256)
    with torch.no_grad():
        H, res_picard = newton_solve(cell, x, h0, jacobian="none", iters=1000)
        _, res_newton = newton_solve(cell, x, h0)
    assert (H - sequential_solve(cell, x, h0)).abs().max() < 1e-10
    assert len(res_picard) > 5 * len(res_newton), (len(res_picard), len(res_newton))


def test_each_step_makes_one_more_state_exact():
    # Even for a cell far from contractive, k Newton steps leave h_0 .. h_{k-1} exact.
    torch.manual_seed(1)
    cell = DiagonalGRUCell(2, 3, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_hh.mul_(40)
        x, h0 = 5 * torch.randn(1, 12, 2, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
        ref = sequential_solve(cell, x, h0)
        for k in range(1, 5):
            H, _ = newton_solve(cell, x, h0, iters=k, tol=0.0)
            assert (H[:, :k] - ref[:, :k]).abs().max() < 1e-12


def test_dense_jacobian_solves_a_full_gru_cell():
    cell = _dense_gru_cell(4, 8)
    counts = []
    for T in (64, 256, 1024):
        x = torch.randn(2, T, 4, dtype=torch.float64)
        h0 = torch.randn(2, 8, dtype=torch.float64)
        with torch.no_grad():
            H, res = newton_solve(cell, x, h0, jacobian="dense")
            assert (H - sequential_solve(cell, x, h0)).abs().max() < 1e-10
        counts.append(len(res) - 1)
    assert max(counts) <= 6, counts  # measured 4, 4, 4


def test_a_wrong_jacobian_still_converges_but_slowly():
    # jacobian="diagonal" on a cell whose units mix gives a wrong Jacobian (ones^T J, not its
    # diagonal): a quasi-Newton method, still exact after enough steps but far slower.
    cell = _dense_gru_cell(4, 8)
    x, h0 = torch.randn(2, 40, 4, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    with torch.no_grad():
        H, res = newton_solve(cell, x, h0, jacobian="diagonal", iters=200)
    assert (H - sequential_solve(cell, x, h0)).abs().max() < 1e-10
    assert len(res) - 1 > 8


@pytest.mark.parametrize("T", [1, 2, 7, 64, 100])
def test_matrix_scan_equals_the_loop(T):
    torch.manual_seed(T)
    A = 0.4 * torch.randn(3, T, 5, 5, dtype=torch.float64)
    b, h0 = torch.randn(3, T, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    for h in (None, h0):
        torch.testing.assert_close(matrix_linear_scan(A, b, h), matrix_linear_scan_sequential(A, b, h))


def test_matrix_scan_gradcheck():
    torch.manual_seed(0)
    A = (0.5 * torch.randn(1, 5, 2, 2, dtype=torch.float64)).requires_grad_()
    b = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(matrix_linear_scan, (A, b, h0))


@pytest.mark.parametrize("jacobian", ["diagonal", "dense"])
def test_implicit_gradient_equals_backprop_through_the_loop(jacobian):
    cell, x, h0 = _problem(150, B=2, D=3, N=4)
    x.requires_grad_(), h0.requires_grad_()
    up = torch.randn(2, 150, 4, dtype=torch.float64)
    inputs = [x, h0] + list(cell.parameters())
    H, _ = newton_solve(cell, x, h0, jacobian=jacobian)
    ours = torch.autograd.grad((H * up).sum(), inputs)
    ref = torch.autograd.grad((sequential_solve(cell, x, h0) * up).sum(), inputs)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_diagonal_gru_module_faces_agree():
    torch.manual_seed(0)
    model = DiagonalGRU(3, 5, dtype=torch.float64)
    x = torch.randn(2, 90, 3, dtype=torch.float64)
    H, h_T = model(x)
    assert model.last_residuals[-1] <= 1e-12
    model.method = "sequential"
    H_seq, _ = model(x)
    h, hs = None, []
    for x_t in x.unbind(1):
        y, h = model.step(h, x_t)
        hs.append(y)
    torch.testing.assert_close(H, H_seq, rtol=0, atol=1e-10)
    torch.testing.assert_close(H, torch.stack(hs, 1), rtol=0, atol=1e-10)
    torch.testing.assert_close(h_T, h)


def test_diagonal_cell_has_a_diagonal_jacobian():
    cell, _, _ = _problem(1, B=1, D=2, N=3)
    x, h = torch.randn(2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda h: cell(x, h), h)
    torch.testing.assert_close(J, torch.diag(torch.diagonal(J)))


def test_bad_input():
    cell, x, h0 = _problem(5, B=2, D=8, N=16)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, D\).*got \(5, 8\)"):
        newton_solve(cell, x[0], h0)
    with pytest.raises(ValueError, match=r"h0: expected shape \(B, N\) = .*2, .*got \(3, 16\)"):
        newton_solve(cell, x, torch.zeros(3, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="h0: expected dtype/device torch.float64"):
        newton_solve(cell, x, h0.float())
    with pytest.raises(ValueError, match=r"cell: calling it on x of shape \(2, 1, 8\) and h of shape "
                                         r"\(2, 1, 5\) .* failed: is h0's size N the cell's hidden size"):
        newton_solve(cell, x, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"cell: expected an output of shape \(B, T, N\) = \(2, 1, 16\)"):
        newton_solve(lambda x, h: h[..., 1:], x, h0)
    with pytest.raises(ValueError, match="jacobian must be one of"):
        newton_solve(cell, x, h0, jacobian="full")
    with pytest.raises(ValueError, match=r"init: expected shape \(B, T, N\) = \(2, 5, 16\)"):
        newton_solve(cell, x, h0, init=torch.zeros(2, 4, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"A: expected shape \(B, T, N, N\) = \(1, 3, 2, 2\)"):
        matrix_linear_scan(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
