"""Law families in log space, batched over many parameter vectors at once.

Every form predicts log L from log inputs Z (n, k) for a batch of parameter vectors theta (S, P),
and returns the vector-Jacobian product needed for the gradient. Working on (S, n) arrays is what
lets the fitter run thousands of starts (or bootstrap resamples) as one computation.

theta is the *fitting* parameterization: a scale parameter such as A is stored as a = log A so
that log L is a log-sum-exp of affine terms (well scaled, no overflow); `to_params` maps theta to
the named, natural parameters people read (E, A, alpha, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Vjp = Callable[[np.ndarray], np.ndarray]
# alloc(name, shape) -> an array to write into; the fitter passes one that hands back the same
# memory every call (see objective.Workspace), everything else gets fresh arrays.
Alloc = Callable[[str, tuple[int, ...]], np.ndarray]


def fresh(name: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape)


def _lse(*terms: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stable log-sum-exp of same-shape terms, and the softmax weight of each term."""
    m = terms[0]
    for t in terms[1:]:
        m = np.maximum(m, t)
    exps = [np.exp(t - m) for t in terms]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    inv = 1.0 / total
    return m + np.log(total), [e * inv for e in exps]


def _e_plus_powers(theta: np.ndarray, Z: np.ndarray, terms: list[tuple[int, int, int]],
                   alloc: Alloc = fresh) -> tuple[np.ndarray, Vjp]:
    """log(E + sum_k exp(theta[:, a_k] - theta[:, alpha_k]·Z[..., z_k])), E = exp(theta[:, 0]).

    `terms` lists (scale column a_k, exponent column alpha_k, input column z_k) per power term:
    Power is one term, Chinchilla two. Z is (n, k), shared by every row of theta, or (S, n, k),
    one set of inputs per row (the compute-optimal search).

    This is the hot loop of the 4,500-start fit, so the shared-Z case is written for NumPy's
    speed: every term's exponent comes out of one matrix product with a fixed (2K, K·n) matrix M
    (and the gradient goes back through M.T), which replaces four broadcast passes per term, and
    the rest works in place, in memory from `alloc`. No max-shift is needed: the bounds keep
    every exponent within +-700 and E > 0 keeps the sum positive.
    """
    K, S, n = len(terms), theta.shape[0], Z.shape[-2]
    cols = [c for a, alpha, _ in terms for c in (a, alpha)]
    t = alloc("terms", (S, K * n))
    t3 = t.reshape(S, K, n)
    if Z.ndim == 2:
        M = np.zeros((2 * K, K * n))
        for k, (_, _, z) in enumerate(terms):
            M[2 * k, k * n : (k + 1) * n] = 1.0
            M[2 * k + 1, k * n : (k + 1) * n] = -Z[:, z]
        np.matmul(theta[:, cols], M, out=t)
    else:
        for k, (a, alpha, z) in enumerate(terms):
            t3[:, k] = theta[:, a, None] - theta[:, alpha, None] * Z[..., z]
    np.exp(t, out=t)
    big_e = np.exp(theta[:, 0])
    total = np.add(t3[:, 0], big_e[:, None], out=alloc("total", (S, n)))
    for k in range(1, K):
        total += t3[:, k]
    lp = np.log(total, out=alloc("log_l", (S, n)))

    def vjp(v: np.ndarray) -> np.ndarray:  # consumes its workspaces: call once
        vi = np.divide(v, total, out=total)
        g = np.empty_like(theta)
        g[:, 0] = big_e * vi.sum(1)
        np.multiply(t3, vi[:, None, :], out=t3)
        if Z.ndim == 2:
            g[:, cols] = t @ M.T
        else:
            for k, (a, alpha, z) in enumerate(terms):
                g[:, a], g[:, alpha] = t3[:, k].sum(1), -(t3[:, k] * Z[..., z]).sum(1)
        return g

    return lp, vjp


class Form:
    """A law family. Subclasses define names, `log_predict`, `bounds` and `grid`."""

    name: str = ""
    formula: str = ""
    param_names: tuple[str, ...] = ()
    log_scale: tuple[bool, ...] = ()  # natural = exp(theta) where True
    roles: tuple[str, ...] = ("x",)  # what each input column means (N, D, or any x)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def n_inputs(self) -> int:
        return len(self.roles)

    def log_predict(self, theta: np.ndarray, Z: np.ndarray,
                    alloc: Alloc = fresh) -> tuple[np.ndarray, Vjp]:
        """log L (S, n) for theta (S, P) and log inputs Z (n, k), and v -> v @ dlogL/dtheta.

        Large temporaries may come from `alloc`; the result is valid until its next use.
        """
        raise NotImplementedError

    def bounds(self, Z: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Box on theta: keeps exponents finite and E in [min loss / 1000 (~0), min loss]."""
        raise NotImplementedError

    def grid(self, Z: np.ndarray, ly: np.ndarray) -> np.ndarray:
        """Default grid of starting points (S, P) in theta space."""
        raise NotImplementedError

    def to_params(self, theta: np.ndarray) -> np.ndarray:
        """Natural parameters from theta, row by row (works on (P,) and (S, P))."""
        theta = np.asarray(theta, dtype=float)
        return np.where(np.array(self.log_scale), np.exp(theta), theta)

    def from_params(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        mask = np.array(self.log_scale)
        with np.errstate(divide="ignore"):
            return np.where(mask, np.log(np.where(mask, params, 1.0)), params)

    def predict(self, theta: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """L itself (not log L) for a batch of theta."""
        lp, _ = self.log_predict(np.atleast_2d(theta), Z)
        return np.exp(lp)


def _e_bounds(ly: np.ndarray) -> tuple[float, float]:
    """log E between min(loss)/1000 and min(loss).

    E cannot exceed the smallest loss seen. Its lower end stands for E = 0: below 0.1% of the
    smallest loss E is indistinguishable from 0 (and in log space its gradient vanishes, so an
    optimizer would stall short of any lower bound); a fit that ends there lists E in on_bound.
    """
    top = float(ly.min())
    return top - np.log(1000.0), top


def _product_grid(*axes: np.ndarray | list[float]) -> np.ndarray:
    mesh = np.meshgrid(*[np.asarray(a, dtype=float) for a in axes], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


class Power(Form):
    """L(x) = E + A·x^-alpha, one input (N, D or C)."""

    name = "power"
    formula = "L(x) = E + A·x^-alpha"
    param_names = ("E", "A", "alpha")
    log_scale = (True, True, False)
    roles = ("x",)

    def log_predict(self, theta, Z, alloc=fresh):
        return _e_plus_powers(theta, Z, [(1, 2, 0)], alloc)

    def bounds(self, Z, ly):
        e_lo, e_hi = _e_bounds(ly)
        a_hi = 5.0 * max(float(np.abs(Z[..., 0]).max()), 1.0) + float(ly.max()) + 30.0
        return np.array([e_lo, -30.0, 0.0]), np.array([e_hi, a_hi, 5.0])

    def grid(self, Z, ly):
        lx_mid, y_mean = float(Z[..., 0].mean()), float(np.exp(ly).mean())
        alphas = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0])
        e = float(ly.min()) + np.log([0.01, 0.2, 0.5, 0.8, 0.95])
        scale = np.log(y_mean * np.array([0.03, 0.1, 0.3, 1.0, 3.0]))
        g = _product_grid(e, scale, alphas)
        g[:, 1] += g[:, 2] * lx_mid  # a such that A·x_mid^-alpha spans the loss scale
        return g


class Chinchilla(Form):
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)."""

    name = "chinchilla"
    formula = "L(N, D) = E + A/N^alpha + B/D^beta"
    param_names = ("E", "A", "B", "alpha", "beta")
    log_scale = (True, True, True, False, False)
    roles = ("N", "D")

    def log_predict(self, theta, Z, alloc=fresh):
        return _e_plus_powers(theta, Z, [(1, 3, 0), (2, 4, 1)], alloc)

    def bounds(self, Z, ly):
        e_lo, e_hi = _e_bounds(ly)
        return (np.array([e_lo, -20.0, -20.0, 0.0, 0.0]),
                np.array([e_hi, 100.0, 100.0, 5.0, 5.0]))

    def grid(self, Z, ly):
        """The grid of the Epoch replication (README of the reference data): 4,500 starts."""
        alpha = beta = np.arange(0.0, 2.01, 0.5)
        e = np.arange(-1.0, 1.01, 0.5)
        a = b = np.arange(0.0, 25.1, 5.0)
        return _product_grid(e, a, b, alpha, beta)


class ChinchillaShared(Form):
    """L(N, D) = E + A/N^eta + B/D^eta: one exponent shared by N and D (Gadre et al. 2024).

    Four parameters instead of five. With one exponent the compute-optimal tokens per
    parameter is a constant, (B/A)^(1/eta), and an exponent cannot be spent on fitting the
    curvature of a small ladder that a larger one does not share: on over-trained ladders it
    extrapolates from far less compute (their paper; benchmarks/real_ladders.py measures it).
    """

    name = "chinchilla_shared"
    formula = "L(N, D) = E + A/N^eta + B/D^eta"
    param_names = ("E", "A", "B", "eta")
    log_scale = (True, True, True, False)
    roles = ("N", "D")

    def log_predict(self, theta, Z, alloc=fresh):
        # The chinchilla computation on (e, a, b, eta, eta); the two exponent gradients add up.
        lp, vjp5 = _e_plus_powers(np.column_stack([theta, theta[:, 3]]), Z,
                                  [(1, 3, 0), (2, 4, 1)], alloc)

        def vjp(v: np.ndarray) -> np.ndarray:
            g = vjp5(v)
            return np.column_stack([g[:, :3], g[:, 3] + g[:, 4]])

        return lp, vjp

    def bounds(self, Z, ly):
        e_lo, e_hi = _e_bounds(ly)
        return np.array([e_lo, -20.0, -20.0, 0.0]), np.array([e_hi, 100.0, 100.0, 5.0])

    def grid(self, Z, ly):
        """Starts scaled to the data, like the power form's: E a share of the smallest loss,
        each term A·N^-eta, B·D^-eta a share of the mean loss at the middle of the inputs, for
        exponents 0.05 to 1 (where they are found): 4 x 4 x 4 x 7 = 448 starts."""
        y_mean = float(np.exp(ly).mean())
        e = float(ly.min()) + np.log([0.1, 0.4, 0.7, 0.9])
        scale = np.log(y_mean * np.array([0.03, 0.1, 0.3, 1.0]))
        eta = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0])
        g = _product_grid(e, scale, scale, eta)
        g[:, 1] += g[:, 3] * float(Z[..., 0].mean())
        g[:, 2] += g[:, 3] * float(Z[..., 1].mean())
        return g


class Kaplan(Form):
    """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020)."""

    name = "kaplan"
    formula = "L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D"
    param_names = ("N_c", "D_c", "alpha_N", "alpha_D")
    log_scale = (True, True, False, False)
    roles = ("N", "D")

    def log_predict(self, theta, Z, alloc=fresh):
        nc, dc, an, ad = (theta[:, i : i + 1] for i in range(4))
        ln, ld = Z[..., 0], Z[..., 1]
        ratio = an / ad
        dn = nc - ln
        u1 = ratio * dn
        u2 = dc - ld
        s, (w1, w2) = _lse(u1, u2)
        lp = ad * s

        def vjp(v: np.ndarray) -> np.ndarray:
            vw1 = v * w1
            return np.stack(
                [an[:, 0] * vw1.sum(1), ad[:, 0] * (v * w2).sum(1), (vw1 * dn).sum(1),
                 (v * (s - w1 * u1)).sum(1)], axis=1
            )

        return lp, vjp

    def bounds(self, Z, ly):
        lo_n, hi_n = float(Z[..., 0].min()), float(Z[..., 0].max())
        lo_d, hi_d = float(Z[..., 1].min()), float(Z[..., 1].max())
        return (np.array([lo_n - 20.0, lo_d - 20.0, 1e-4, 1e-3]),
                np.array([hi_n + 60.0, hi_d + 60.0, 3.0, 3.0]))

    def grid(self, Z, ly):
        offsets = np.array([0.0, 3.0, 6.0, 10.0, 15.0])
        alphas = np.array([0.03, 0.07, 0.15, 0.3, 0.6])
        return _product_grid(Z[..., 0].max() + offsets, Z[..., 1].max() + offsets, alphas, alphas)


class BrokenPower(Form):
    """Smoothly broken power law (Caballero et al. 2022), one break:

    L(x) = E + A·x^-alpha·(1 + (x/x_b)^(1/f))^(-dalpha·f)

    The slope is alpha well below the break x_b and alpha + dalpha well above it; f sets how
    sharp the bend is. A plain power law cannot bend like this.
    """

    name = "bnsl"
    formula = "L(x) = E + A·x^-alpha·(1 + (x/x_b)^(1/f))^(-dalpha·f)"
    param_names = ("E", "A", "alpha", "dalpha", "x_b", "f")
    log_scale = (True, True, False, False, True, False)
    roles = ("x",)

    def log_predict(self, theta, Z, alloc=fresh):
        e, a, alpha, dalpha, xb, f = (theta[:, i : i + 1] for i in range(6))
        lx = Z[..., 0]
        z = (lx - xb) / f
        sp = np.logaddexp(0.0, z)  # softplus
        sig = np.exp(z - sp)  # sigmoid
        u1 = a - alpha * lx - dalpha * f * sp
        lp, (w0, w1) = _lse(np.broadcast_to(e, u1.shape), u1)

        def vjp(v: np.ndarray) -> np.ndarray:
            p1 = v * w1
            return np.stack(
                [(v * w0).sum(1), p1.sum(1), -(p1 @ lx), -(p1 * f * sp).sum(1),
                 dalpha[:, 0] * (p1 * sig).sum(1), -dalpha[:, 0] * (p1 * (sp - sig * z)).sum(1)],
                axis=1,
            )

        return lp, vjp

    def bounds(self, Z, ly):
        e_lo, e_hi = _e_bounds(ly)
        lx = Z[..., 0]
        a_hi = 5.0 * max(float(np.abs(lx).max()), 1.0) + float(ly.max()) + 30.0
        return (np.array([e_lo, -30.0, 0.0, -5.0, float(lx.min()) - 2.0, 0.05]),
                np.array([e_hi, a_hi, 5.0, 5.0, float(lx.max()) + 2.0, 5.0]))

    def grid(self, Z, ly):
        lx = Z[..., 0]
        y_mean = float(np.exp(ly).mean())
        e = float(ly.min()) + np.log([0.3, 0.8])
        scale = np.log(y_mean * np.array([0.1, 1.0]))
        alphas = np.array([0.05, 0.2, 0.5])
        dalphas = np.array([-0.3, 0.2, 0.6])
        breaks = np.quantile(lx, [0.25, 0.5, 0.75])
        g = _product_grid(e, scale, alphas, dalphas, breaks, [0.1, 0.5, 1.5])
        g[:, 1] += g[:, 2] * float(lx.mean())
        return g


FORMS: dict[str, Form] = {f.name: f for f in (Power(), Chinchilla(), ChinchillaShared(), Kaplan(),
                                              BrokenPower())}


def get_form(name: str) -> Form:
    """The form registered under `name`; a UserError names the known ones otherwise."""
    from scalelab.errors import UserError

    try:
        return FORMS[name]
    except KeyError:
        raise UserError(f"unknown law {name!r}; known laws: {', '.join(FORMS)}") from None
