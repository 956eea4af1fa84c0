"""The Linear Recurrent Unit (Orvieto et al., 2023, "Resurrecting Recurrent Neural Networks for
Long Sequences"): a complex, diagonal, linear recurrence, parameterised to stay stable.

Shapes (book/notation.md):
    B  batch      T  length      D  model width (input = output)      N  state size
    u, y : (B, T, D)      x : (B, T, N) complex      x0, x_t : (B, N) complex
    Lambda, gamma : (N,)      B : (N, D) complex      C : (D, N) complex      D : (D,)

The recurrence and its read-out:

    x_t = Lambda * x_{t-1} + gamma * (B u_t)          (elementwise in N: diagonal)
    y_t = Re(C x_t) + D * u_t

Three choices make a linear RNN train like a deep state-space model:
  * diagonal and complex: a dense real recurrence matrix W = P diag(Lambda) P^-1 loses nothing
    (almost every W diagonalises over C), and a diagonal recurrence is an elementwise scan;
  * stable exponential parameterisation: Lambda = exp(-exp(nu) + i exp(theta)), so
    |Lambda| = exp(-exp(nu)) < 1 for every real nu. No gradient step can leave the unit disk;
  * normalisation: gamma = sqrt(1 - |Lambda|^2). For white-noise input of unit variance the state's
    variance is then gamma^2 / (1 - |Lambda|^2) = 1, however close to the circle Lambda sits
    (without it, 1 / (1 - |Lambda|^2), which is 500 at |Lambda| = 0.999).
The eigenvalues start uniform on the ring r_min <= |Lambda| <= r_max (uniform in area: |Lambda|^2
uniform on [r_min^2, r_max^2]), with phase uniform on [0, max_phase]. Close to the circle means
long memory: an input is forgotten on a time scale of 1 / (1 - |Lambda|) steps.

``LRU.forward`` runs the recurrence as one complex ``linear_scan`` over time; ``LRU.step`` is the
recurrent face. The paper learns gamma (from the value above); ``gamma="tied"`` (the default here)
recomputes it from Lambda instead, so the bound holds throughout training.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from seqlib.recurrent import check_tensor
from seqlib.scan import linear_scan

__all__ = ["LRU", "ring_init"]

GAMMAS = ("tied", "learned", "none")


def ring_init(d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, generator=None,
              dtype=torch.float32, device=None):
    """(nu_log, theta_log), each (N,): eigenvalues uniform on the ring's area, as in the paper.

    |Lambda|^2 = u1 (r_max^2 - r_min^2) + r_min^2 and arg Lambda = max_phase u2, u1, u2 ~ U(0, 1);
    nu_log = log(-log|Lambda|) = log(-0.5 log |Lambda|^2), theta_log = log(arg Lambda).
    """
    _check_ring(r_min, r_max, max_phase)
    u1, u2 = torch.rand(2, d_state, generator=generator, dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny  # u = 0 would give log 0 (and an infinite parameter)
    r2 = u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2
    nu_log = torch.log((-0.5 * torch.log(r2.clamp_min(tiny))).clamp_min(tiny))
    theta_log = torch.log((max_phase * u2).clamp_min(tiny))
    return nu_log.to(dtype=dtype, device=device), theta_log.to(dtype=dtype, device=device)


class LRU(nn.Module):
    """The Linear Recurrent Unit, one layer.

    LRU(d_model D, d_state N, r_min=0.0, r_max=1.0, max_phase=2*pi, gamma="tied"|"learned"|"none")
    forward(u (B, T, D), x0=None) -> (y (B, T, D), x_T (B, N) complex)
    step(state (B, N) complex or None, u_t (B, D)) -> (y_t (B, D), state (B, N))
    eigenvalues() -> Lambda (N,) complex;  normalization() -> gamma (N,)
    Parameters (real): nu_log, theta_log (N,); B_re, B_im (N, D); C_re, C_im (D, N); D (D,);
    gamma_log (N,) with gamma="learned".
    """

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi,
                 gamma="tied", device=None, dtype=None):
        super().__init__()
        for name, val in (("d_model", d_model), ("d_state", d_state)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if gamma not in GAMMAS:
            raise ValueError(f"gamma must be one of {GAMMAS}, got {gamma!r}")
        _check_ring(r_min, r_max, max_phase)
        self.d_model, self.d_state, self.gamma = d_model, d_state, gamma
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        dtype = torch.get_default_dtype() if dtype is None else dtype
        factory = {"device": device, "dtype": dtype}
        nu_log, theta_log = ring_init(d_state, r_min, r_max, max_phase, **factory)
        self.nu_log, self.theta_log = nn.Parameter(nu_log), nn.Parameter(theta_log)
        self.B_re = nn.Parameter(torch.randn(d_state, d_model, **factory) / math.sqrt(2 * d_model))
        self.B_im = nn.Parameter(torch.randn(d_state, d_model, **factory) / math.sqrt(2 * d_model))
        self.C_re = nn.Parameter(torch.randn(d_model, d_state, **factory) / math.sqrt(d_state))
        self.C_im = nn.Parameter(torch.randn(d_model, d_state, **factory) / math.sqrt(d_state))
        self.D = nn.Parameter(torch.randn(d_model, **factory))
        if gamma == "learned":
            self.gamma_log = nn.Parameter(torch.log(_tied_gamma(self.nu_log.detach())))

    def extra_repr(self):
        return (f"{self.d_model}, {self.d_state}, r_min={self.r_min}, r_max={self.r_max}, "
                f"max_phase={self.max_phase:.4g}, gamma={self.gamma!r}")

    def eigenvalues(self):
        """Lambda = exp(-exp(nu) + i exp(theta)), (N,) complex: in the unit disk for every nu."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def normalization(self):
        """gamma (N,): sqrt(1 - |Lambda|^2) (tied), exp(gamma_log) (learned) or ones (none)."""
        if self.gamma == "tied":
            return _tied_gamma(self.nu_log)
        if self.gamma == "learned":
            return torch.exp(self.gamma_log)
        return torch.ones_like(self.nu_log)

    def input_matrix(self):
        """gamma * B, (N, D) complex: the normalised input map."""
        return torch.complex(self.B_re, self.B_im) * self.normalization().unsqueeze(-1)

    def forward(self, u, x0=None):
        """u: (B, T, D) real; x0: (B, N) complex or None (zeros).
        Returns (y (B, T, D), x_T (B, N) complex), x_T = x0 if T = 0."""
        check_tensor("u", u, (None, None, self.d_model), "(B, T, D)")
        Bsz, T, _ = u.shape
        x0 = self._check_state("x0", x0, Bsz, u)
        if T == 0:
            return u.new_zeros(Bsz, 0, self.d_model), \
                x0 if x0 is not None else u.new_zeros(Bsz, self.d_state, dtype=_complex(u))
        Bu = u.to(_complex(u)) @ self.input_matrix().T                        # (B, T, N)
        lam = self.eigenvalues().expand(Bsz, T, self.d_state).contiguous()
        x = linear_scan(lam, Bu, x0)                                          # (B, T, N)
        return self._readout(x, u), x[:, -1]

    def step(self, state, u_t):
        """The recurrent face: state (B, N) complex or None (zeros), u_t (B, D) -> (y_t, state)."""
        check_tensor("u_t", u_t, (None, self.d_model), "(B, D)")
        state = self._check_state("state", state, u_t.shape[0], u_t)
        Bu = u_t.to(_complex(u_t)) @ self.input_matrix().T
        x = Bu if state is None else self.eigenvalues() * state + Bu
        return self._readout(x, u_t), x

    def _readout(self, x, u):
        """y = Re(C x) + D * u = Re(x) C_re^T - Im(x) C_im^T + D * u."""
        return x.real @ self.C_re.T - x.imag @ self.C_im.T + self.D * u

    def _check_state(self, name, state, Bsz, u):
        if state is None:
            return None
        check_tensor(name, state, (Bsz, self.d_state), "(B, N)")
        if state.dtype != _complex(u):
            raise TypeError(f"{name}: expected dtype {_complex(u)} (the complex type of u's "
                            f"{u.dtype}), got {state.dtype}")
        return state


def _tied_gamma(nu_log):
    # 1 - |Lambda|^2 = 1 - exp(-2 exp(nu)) = -expm1(-2 exp(nu)): accurate even when |Lambda| ~ 1
    return torch.sqrt(-torch.expm1(-2 * torch.exp(nu_log)))


def _complex(u):
    return torch.complex128 if u.dtype == torch.float64 else torch.complex64


def _check_ring(r_min, r_max, max_phase):
    if not 0.0 <= r_min <= r_max <= 1.0:
        raise ValueError(f"r_min, r_max: expected 0 <= r_min <= r_max <= 1, got r_min={r_min!r}, "
                         f"r_max={r_max!r}")
    if not max_phase > 0:
        raise ValueError(f"max_phase must be positive, got {max_phase!r}")
