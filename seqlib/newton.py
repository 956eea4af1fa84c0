"""A nonlinear recurrence solved for all time steps at once by Newton's method (ParaRNN,
Danieli et al., 2025; the idea goes back to DEER, Lim et al., 2024).

Shapes (book/notation.md):
    B  batch      T  length      D  input width      N  hidden (state) size
    x : (B, T, D)      h0 : (B, N)      H : (B, T, N), the states h_0 .. h_{T-1}
    J : (B, T, N) (a diagonal Jacobian)  or  (B, T, N, N) (a dense one)

The recurrence h_t = f(h_{t-1}, x_t) is T equations in T unknown states. Collect them as one
residual, zero at the solution:

    F(H)_t = h_t - f(h_{t-1}, x_t)                       (h_{-1} = h0, given)

Newton's method linearises F around the current guess H^k and solves the linear system for the
correction. With J_t = df/dh at (h^k_{t-1}, x_t) that system is

    delta_t = J_t delta_{t-1} - F_t,        delta_{-1} = 0,        H^{k+1} = H^k + delta

a *linear* recurrence in delta: one parallel scan per Newton step. For a cell whose units do not
mix (each output unit reads only its own unit of h: the diagonal GRU below), J_t is diagonal and
the step is exactly ``seqlib.scan.linear_scan`` with a_t = diag J_t (computed as one forward-mode
derivative: the vector of ones times J_t). For a cell with a full W_hh the Jacobian is a dense
N x N matrix, and the scan runs over matrices (``matrix_linear_scan``).

Two facts the chapter checks. Each Newton step makes at least one more state exact (delta_0 = -F_0
is exact because h0 is known), so T steps always suffice; and near the solution convergence is
quadratic, so for a contractive cell a handful of steps reach machine precision, however long the
sequence. ``jacobian="none"`` drops J (the fixed-point or Picard iteration h^{k+1}_t =
f(h^k_{t-1}, x_t)), which only has the first fact: it needs about as many steps as the memory of
the cell.

Gradients. Once H solves F(H) = 0, the implicit function theorem gives dH/dtheta = -(dF/dH)^-1
dF/dtheta, and (dF/dH)^-1 is the same scan. So ``newton_solve`` runs its iterations without
autograd and, when gradients are wanted, takes one last Newton step with autograd on: its
derivative is exactly that formula (the terms through J multiply F, which is zero), and
backpropagating through the scan is BPTT's reverse recurrence, run in parallel.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from seqlib.recurrent import check_tensor
from seqlib.scan import linear_scan

__all__ = ["newton_solve", "sequential_solve", "matrix_linear_scan",
           "matrix_linear_scan_sequential", "DiagonalGRUCell", "DiagonalGRU"]

JACOBIANS = ("diagonal", "dense", "none")
DEFAULT_TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


def newton_solve(cell, x, h0, iters=100, tol=None, jacobian="diagonal", init=None,
                 backend="auto"):
    """Solve h_t = cell(x_t, h_{t-1}) for every t at once. Returns (H (B, T, N), residuals).

    cell: a callable cell(x (..., D), h (..., N)) -> (..., N), applied to every time step at once
        (leading dimensions are batch). With jacobian="diagonal" its output unit i must depend on
        h through h[..., i] only.
    x: (B, T, D); h0: (B, N); iters: the most Newton steps to take; tol: stop once
        max |F(H)| <= tol (default 1e-12 for float64, 1e-6 for float32, 1e-3 otherwise);
    jacobian: "diagonal" (a linear_scan per step), "dense" (a matrix scan per step) or "none"
        (the fixed-point iteration); init: the first guess (B, T, N), zeros by default;
    backend: passed to ``linear_scan``.
    residuals: a list of floats, max |F(H^k)| of the first guess and of every iterate, so
        len(residuals) - 1 Newton steps were taken. The iteration also stops when, within
        1000 tol, the residual stops decreasing (rounding has set the floor).
    Differentiable in x, h0 and the cell's parameters (see the module docstring): with autograd
    on, H is one (differentiable) Newton step past the last iterate that residuals describe.
    """
    if jacobian not in JACOBIANS:
        raise ValueError(f"jacobian must be one of {JACOBIANS}, got {jacobian!r}")
    check_tensor("x", x, (None, None, None), "(B, T, D)")
    check_tensor("h0", h0, (x.shape[0], None), "(B, N)")
    if h0.dtype != x.dtype or h0.device != x.device:
        raise TypeError(f"h0: expected dtype/device {x.dtype}/{x.device} (those of x), got "
                        f"{h0.dtype}/{h0.device}")
    B, T, _ = x.shape
    N = h0.shape[1]
    if init is not None:
        check_tensor("init", init, (B, T, N), "(B, T, N)")
    tol = DEFAULT_TOL.get(x.dtype, 1e-3) if tol is None else tol
    if T == 0:
        return x.new_zeros(B, 0, N), []
    out = _check_cell_output(cell, x[:, :1], h0[:, None])
    if out != (B, 1, N):
        raise ValueError(f"cell: expected an output of shape (B, T, N) = {(B, 1, N)} for x[:, :1] "
                         f"and h of shape {(B, 1, N)}, got {out}")

    H = x.new_zeros(B, T, N) if init is None else init.detach().clone()
    xd, h0d = x.detach(), h0.detach()
    residuals = []
    with torch.no_grad():
        for k in range(iters + 1):
            f, J = _linearise(cell, xd, _shift(h0d, H), jacobian)
            F = H - f
            residuals.append(F.abs().max().item())
            done = residuals[-1] <= tol or (k > 0 and residuals[-1] <= 1e3 * tol
                                            and residuals[-1] >= residuals[-2])
            if done or k == iters or not math.isfinite(residuals[-1]):
                break
            H = H + _solve_linear(J, -F, jacobian, backend)
    if torch.is_grad_enabled():  # one more Newton step, with autograd: the implicit gradient
        F = H - cell(x, _shift(h0, H))
        H = H + _solve_linear(J, -F, jacobian, backend)
    return H, residuals


def sequential_solve(cell, x, h0):
    """The reference: h_t = cell(x_t, h_{t-1}), one step at a time.
    x (B, T, D), h0 (B, N) -> H (B, T, N)."""
    h, hs = h0, []
    for x_t in x.unbind(1):  # split once: per-step indexing would make backward quadratic in T
        h = cell(x_t, h)
        hs.append(h)
    return torch.stack(hs, 1) if hs else x.new_zeros(x.shape[0], 0, h0.shape[1])


def matrix_linear_scan(A, b, h0=None):
    """All states of h_t = A_t h_{t-1} + b_t with matrices A_t, in log2(T) parallel steps.

    A: (B, T, N, N); b: (B, T, N); h0: (B, N) or None. Returns h: (B, T, N).
    Hillis and Steele's scan with the combine (A1, b1) . (A2, b2) = (A2 A1, A2 b1 + b2): after the
    step with offset s, element t holds the composition of steps t-2s+1 .. t. Work O(T log T N^3)
    (matrix products), depth O(log T); differentiable (plain PyTorch operations).
    """
    check_tensor("b", b, (None, None, None), "(B, T, N)")
    Bsz, T, N = b.shape
    check_tensor("A", A, (Bsz, T, N, N), "(B, T, N, N)")
    if h0 is not None:
        check_tensor("h0", h0, (Bsz, N), "(B, N)")
        b = torch.cat([b[:, :1] + (A[:, 0] @ h0.unsqueeze(-1)).transpose(1, 2), b[:, 1:]], 1)
    s = 1
    while s < T:
        # element t <- (element t-s) then (element t); elements t < s are already complete
        b = torch.cat([b[:, :s], (A[:, s:] @ b[:, :-s].unsqueeze(-1)).squeeze(-1) + b[:, s:]], 1)
        A = torch.cat([A[:, :s], A[:, s:] @ A[:, :-s]], 1)
        s *= 2
    return b


def matrix_linear_scan_sequential(A, b, h0=None):
    """The reference loop for ``matrix_linear_scan``."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    hs = []
    for A_t, b_t in zip(A.unbind(1), b.unbind(1)):
        h = (A_t @ h.unsqueeze(-1)).squeeze(-1) + b_t
        hs.append(h)
    return torch.stack(hs, 1) if hs else b.clone()


class DiagonalGRUCell(nn.Module):
    """A GRU cell whose recurrent weights are diagonal (ParaRNN's choice), so units do not mix
    through h and the Newton step is an elementwise scan.

        r = sigmoid(x W_ir^T + b_ir + w_hr * h + b_hr)     z likewise
        n = tanh(x W_in^T + b_in + r * (w_hn * h + b_hn))
        h' = (1 - z) * n + z * h

    DiagonalGRUCell(input_size D, hidden_size N, bias=True)
    forward(x (..., D), h (..., N)) -> h' (..., N)
    Parameters: weight_ih (3N, D), weight_hh (3N,) (the three diagonals, gates r, z, n as in
    torch.nn.GRU), bias_ih, bias_hh (3N,); all uniform in (-1/sqrt(N), 1/sqrt(N)) like torch's GRU.
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        for name, val in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        factory = {"device": device, "dtype": dtype}
        N = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * N, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(3 * N, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(3 * N, **factory))
            self.bias_hh = nn.Parameter(torch.empty(3 * N, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        k = 1 / math.sqrt(N)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"

    def forward(self, x, h):
        xw = x @ self.weight_ih.T
        hw = torch.cat([h, h, h], -1) * self.weight_hh        # the three diagonal products
        if self.bias:
            xw, hw = xw + self.bias_ih, hw + self.bias_hh
        x_r, x_z, x_n = xw.chunk(3, -1)
        h_r, h_z, h_n = hw.chunk(3, -1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h


class DiagonalGRU(nn.Module):
    """One layer of the diagonal GRU, trained in parallel over time by Newton's method.

    DiagonalGRU(input_size D, hidden_size N, bias=True, method="newton"|"sequential",
                iters=100, tol=None)
    forward(x (B, T, D), h0=None) -> (H (B, T, N), h_T (B, N)); after a Newton forward,
        ``last_residuals`` holds the residual history (see ``newton_solve``).
    step(state (B, N) or None, x_t (B, D)) -> (h_t, h_t)
    """

    def __init__(self, input_size, hidden_size, bias=True, method="newton", iters=100, tol=None,
                 device=None, dtype=None):
        super().__init__()
        if method not in ("newton", "sequential"):
            raise ValueError(f"method must be 'newton' or 'sequential', got {method!r}")
        self.cell = DiagonalGRUCell(input_size, hidden_size, bias, device, dtype)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.method, self.iters, self.tol = method, iters, tol
        self.last_residuals = None

    def extra_repr(self):
        return f"method={self.method!r}, iters={self.iters}, tol={self.tol}"

    def forward(self, x, h0=None):
        check_tensor("x", x, (None, None, self.input_size), "(B, T, D)")
        if h0 is None:
            h0 = x.new_zeros(x.shape[0], self.hidden_size)
        check_tensor("h0", h0, (x.shape[0], self.hidden_size), "(B, N)")
        if self.method == "sequential":
            H = sequential_solve(self.cell, x, h0)
        else:
            H, self.last_residuals = newton_solve(self.cell, x, h0, self.iters, self.tol)
        return H, (H[:, -1] if H.shape[1] else h0)

    def step(self, state, x_t):
        check_tensor("x_t", x_t, (None, self.input_size), "(B, D)")
        if state is None:
            state = x_t.new_zeros(x_t.shape[0], self.hidden_size)
        check_tensor("state", state, (x_t.shape[0], self.hidden_size), "(B, N)")
        h = self.cell(x_t, state)
        return h, h


def _shift(h0, H):
    """(h_{-1}, h_0, ..., h_{T-2}): the previous state of every step."""
    return torch.cat([h0.unsqueeze(1), H[:, :-1]], 1)


def _linearise(cell, x, h_prev, jacobian):
    """f = cell(x, h_prev) and its Jacobian in h_prev: (B, T, N) diagonal, (B, T, N, N) dense, or
    None. Reverse-mode products: ones^T J is the diagonal when J is diagonal; e_i^T J is row i."""
    if jacobian == "none":
        return cell(x, h_prev), None
    with torch.enable_grad():
        h = h_prev.detach().requires_grad_()
        f = cell(x, h)
    if jacobian == "diagonal":
        return f.detach(), _vjp(f, h, torch.ones_like(f), retain=False)
    rows = []
    for i in range(f.shape[-1]):
        e = torch.zeros_like(f)
        e[..., i] = 1
        rows.append(_vjp(f, h, e, retain=i < f.shape[-1] - 1))
    return f.detach(), torch.stack(rows, -2)  # J[..., i, j] = d f_i / d h_j


def _vjp(f, h, v, retain):
    if not f.requires_grad:  # the cell ignores h (and has no parameters)
        return torch.zeros_like(h)
    (g,) = torch.autograd.grad(f, h, v, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(h) if g is None else g


def _solve_linear(J, rhs, jacobian, backend):
    """delta with delta_t = J_t delta_{t-1} + rhs_t, delta_{-1} = 0."""
    if jacobian == "none":
        return rhs  # J = 0: H^{k+1} = H^k - F = f(H^k shifted)
    if jacobian == "diagonal":
        return linear_scan(J, rhs, backend=backend)
    return matrix_linear_scan(J, rhs)


def _check_cell_output(cell, x, h):
    try:
        with torch.no_grad():
            out = cell(x, h)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"cell: calling it on x of shape {tuple(x.shape)} and h of shape "
                         f"{tuple(h.shape)} (x[:, :1] and h0[:, None]) failed: is h0's size N "
                         f"the cell's hidden size? ({err})") from err
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"cell: expected it to return a torch.Tensor, got {type(out).__name__}")
    return tuple(out.shape)
