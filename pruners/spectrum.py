"""The Path Kernel's top eigenvalues, by Lanczos over parameter-Gram products.

Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for Pruning at Initialization*:
the NTK factors as ``Θ = J_v f · Π · J_v fᵀ`` with the Path Kernel ``Π = J Jᵀ``,
``J = ∂v/∂θ`` (paths × parameters). ``Π`` is #paths × #paths and never formed: its nonzero
eigenvalues are those of the parameter Gram matrix ``G = Jᵀ J``.

The identity used (each path runs through every parameter at most once, so
``R(w) = 1ᵀ f_w(1)`` is multilinear in the layers and ``∂²R/∂w_j² = 0``): with ``c_j`` the
path value of parameter ``j`` (θ_j for a Linear/Conv weight, ``γ/sqrt(σ²+ε)`` for a
BatchNorm scale) and ``d_j = ∂c_j/∂θ_j`` (1, or ``1/sqrt(σ²+ε)``),
``J_pj = d_j v_p / c_j``, hence

    G = D · (diag(∇R) + diag(c) · ∇²R · diag(c)) · D,   ∇R, ∇²R at w = c ⊙ c,

since ``Σ_{p∋j} v_p²/c_j² = ∂R/∂w_j`` and ``Σ_{p∋j,k} v_p²/(c_j c_k) = c_j c_k ∂²R/∂w_j∂w_k``.
Its trace is ``Σ_j d_j² ∂R/∂w_j = Tr(Π)`` (:mod:`pruners.stats`). Under a mask ``G`` is
restricted to the kept weights (pruned ones are no parameters of the masked network).

One product ``G·u`` is one Hessian-vector product of ``R`` plus elementwise work. ``∇R`` is
computed once with ``create_graph=True`` and its graph kept, so each product is a single
backward pass through that graph (the Hessian is symmetric: ``uᵀ∇²R = (∇²R u)ᵀ``). The
products run in the rescaled path network of :mod:`pruners.paths`, which returns ``R/C``: the
operator is ``G/C`` and every eigenvalue's log is shifted back by ``log C``, so the results are
finite where the exact values are (VGG-16, ResNet-110) in float32.

Derived: the effective rank ``(Σλ)²/Σλ² = Tr(G)²/‖G‖_F²`` needs ``‖G‖_F²``, estimated by
Hutchinson probes deflated by the top eigenvectors (Hutch++ style, Meyer, Musco, Musco,
Woodruff 2021): with ``V`` the Ritz vectors and ``P = I − VVᵀ``,
``‖G‖_F² = ‖GV‖_F² + ‖GP‖_F²``; ``‖GV‖_F² = Σλ_i² + Σ‖r_i‖²`` is ``Σλ_i²`` up to a relative
``tol²`` (Ritz residuals ``r_i ⊥ v_i``, ``‖r_i‖ ≤ tol·λ_i``), and
``‖GP‖_F² = E‖GPz‖²`` for Rademacher ``z`` is estimated by the probe mean. Its standard error
is taken from the variance bound ``Var(zᵀAz) ≤ 2‖A‖_F²`` (``A = PG²P``; equality for Gaussian
``z``), with ``‖A‖_F² = E‖PGGPz‖²`` estimated on the same probes (one more product each): the
sample variance of a few skewed quadratic forms understates the error (about 90% coverage at
2 SE with 10 probes, against ≥ 99% for the bound on the test models). Each probe costs two
products. Lanczos from one start vector finds one vector per eigenspace, and the Path Kernel
has repeated eigenvalues, so the top k are certified by a second Lanczos run on the operator
with them projected out (see :func:`_spectrum`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn

from pruners.paths import PathNetwork
from pruners.scores import trace_factor


@dataclass(frozen=True)
class SpectrumOptions:
    """What :func:`path_kernel_spectrum` computes (a config; see there for the fields).

    Attributes:
        k: number of top eigenvalues.
        probes: Hutchinson probes for ``‖G‖_F²`` (the effective rank); 0 skips it.
        tol: Lanczos (ARPACK) relative tolerance; None: 1e-10 in float64, 1e-4 in float32.
        maxiter: ARPACK restart iterations at most.
        seed: seed of the Lanczos start vector and the probes.
    """

    k: int = 10
    probes: int = 10
    tol: float | None = None
    maxiter: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"spectrum: k >= 1 must hold, but got k={self.k!r}")
        if not (isinstance(self.probes, int) and (self.probes == 0 or self.probes >= 2)):
            raise ValueError(
                f"spectrum: probes must be 0 (no effective rank) or >= 2 (a standard error "
                f"needs two), but got probes={self.probes!r}"
            )
        if self.tol is not None and not (0 < self.tol < 1):
            raise ValueError(f"spectrum: 0 < tol < 1 must hold, but got tol={self.tol!r}")
        if not (isinstance(self.maxiter, int) and self.maxiter >= 1):
            raise ValueError(f"spectrum: maxiter >= 1 must hold, but got {self.maxiter!r}")


@dataclass(frozen=True)
class PathKernelSpectrum:
    """The top of the Path Kernel's spectrum (natural logs; see :mod:`pruners.spectrum`).

    Attributes:
        log_eigenvalues: ``log λ_1 ≥ … ≥ log λ_k`` of ``Π`` (float64; ``-inf`` for a zero
            eigenvalue, NaN for one that did not converge).
        converged: all k eigenvalues met ``tol``: the solver said so, and the check after it
            (:attr:`residuals`, float64 norms) found ``‖G x − λ x‖ ≤ tol·λ`` for each (or
            within the products' rounding, ``ROUNDING_UNITS·ε·λ_1``).
        tol: the relative tolerance used.
        products: ``G·u`` products used (the certifying run and the one-product check of
            each pair included; the probes' products are not counted here).
        log_trace: ``log Tr(Π)``, exact (from the same gradient).
        dimension: kept path parameters (the order of ``G``).
        log_frobenius_sq: ``log ‖Π‖_F² = log Σλ²`` (Hutchinson, deflated); NaN without probes.
        frobenius_sq_rel_se: standard error of ``‖Π‖_F²`` relative to it, from the variance
            bound (conservative, see the module docstring); NaN without probes.
        probes: Hutchinson probes used (each two ``G·u`` products more).
        residuals: per eigenvalue, ``‖Gx − λx‖ / λ`` of its Ritz vector ``x`` (unit norm),
            computed after the solver with one more product each and float64 norms (so some
            eigenvalue of ``Π`` lies within ``residual·λ`` of ``λ``); NaN where none was found.
    """

    log_eigenvalues: tuple[float, ...]
    converged: bool
    tol: float
    products: int
    log_trace: float
    dimension: int
    log_frobenius_sq: float = math.nan
    frobenius_sq_rel_se: float = math.nan
    probes: int = 0
    residuals: tuple[float, ...] = ()

    @property
    def log_lambda_max(self) -> float:
        """``log λ_max(Π)``."""
        return self.log_eigenvalues[0]

    @property
    def topk_trace_share(self) -> float:
        """``Σ_{i≤k} λ_i / Tr(Π)``; NaN unless converged."""
        if not self.converged or not math.isfinite(self.log_trace):
            return math.nan
        return float(sum(math.exp(e - self.log_trace) for e in self.log_eigenvalues))

    @property
    def effective_rank(self) -> float:
        """``Tr(Π)² / ‖Π‖_F²`` (between 1 and the rank); NaN without probes."""
        if not math.isfinite(self.log_frobenius_sq):
            return math.nan
        return math.exp(2 * self.log_trace - self.log_frobenius_sq)

    @property
    def effective_rank_se(self) -> float:
        """Standard error of :attr:`effective_rank` (delta method: rank × the relative SE)."""
        return self.effective_rank * self.frobenius_sq_rel_se

    def metrics(self) -> dict[str, float | int]:
        """Flat scalar columns (names used by studies and Parquet)."""
        return {
            "log_lambda_max": self.log_lambda_max if self.converged else math.nan,
            "topk_trace_share": self.topk_trace_share,
            "effective_rank": self.effective_rank,
            "effective_rank_se": self.effective_rank_se,
            "spectrum_k": len(self.log_eigenvalues),
            "spectrum_converged": int(self.converged),
            "spectrum_products": self.products,
        }


#: Scalar columns of :meth:`PathKernelSpectrum.metrics`.
SPECTRUM_METRICS: tuple[str, ...] = (
    "log_lambda_max",
    "topk_trace_share",
    "effective_rank",
    "effective_rank_se",
    "spectrum_k",
    "spectrum_converged",
    "spectrum_products",
)


class GramOperator:
    """``u ↦ (G/C) u`` on the kept path parameters, flattened in ``net.weight_names`` order."""

    def __init__(
        self, net: PathNetwork, masks: Mapping[str, torch.Tensor], inputs: torch.Tensor
    ) -> None:
        dtype = inputs.dtype
        self.names = list(net.weight_names)
        self.dtype = dtype
        self.raw: dict[str, torch.Tensor] = {}
        self.d: dict[str, torch.Tensor | None] = {}
        self.kept: dict[str, torch.Tensor | None] = {}
        leaves: dict[str, torch.Tensor] = {}
        for name in self.names:
            raw = net.raw_values_of(name).detach().to(dtype)
            mask = masks.get(name)
            self.raw[name] = raw
            factor = trace_factor(net, name, dtype)  # d² for a BatchNorm scale
            self.d[name] = None if factor is None else factor.sqrt()
            self.kept[name] = None if mask is None else mask.to(torch.bool)
            value = raw.square() if mask is None else raw.square() * mask
            leaves[name] = value.requires_grad_()
        self.sizes = [
            int(m.sum()) if m is not None else self.raw[n].numel()
            for n, m in ((n, self.kept[n]) for n in self.names)
        ]
        self.dimension = sum(self.sizes)
        out = net(leaves, inputs)
        self.log_scale = float(out.log_scale)
        self.log_r = float(out.log_sum().detach())
        order = self.names
        grads = torch.autograd.grad(
            out.output.sum(), [leaves[n] for n in order], create_graph=True, allow_unused=True
        )
        self.leaves = [leaves[n] for n in order]
        self.grads = [
            torch.zeros_like(leaves[n]) if g is None else g
            for n, g in zip(order, grads, strict=True)
        ]
        # ∇R/C restricted to kept weights and scaled by d²: the diagonal of G/C (its trace).
        diag = []
        for name, g in zip(order, self.grads, strict=True):
            gd = g.detach()
            d = self.d[name]
            if d is not None:
                gd = gd * d.square().view((-1,) + (1,) * (gd.dim() - 1))
            diag.append(self._gather(name, gd))
        self.diagonal = torch.cat(diag) if diag else torch.zeros(0, dtype=dtype)
        # Second-order graph: the gradients that depend on w (any that do not have H = 0).
        self._second = [i for i, g in enumerate(self.grads) if g.requires_grad]
        self.products = 0

    # -- flat vector <-> per-parameter tensors ---------------------------------------------
    def _gather(self, name: str, full: torch.Tensor) -> torch.Tensor:
        kept = self.kept[name]
        return full.reshape(-1) if kept is None else full[kept]

    def _scatter(self, name: str, flat: torch.Tensor) -> torch.Tensor:
        kept = self.kept[name]
        raw = self.raw[name]
        if kept is None:
            return flat.view(raw.shape)
        full = torch.zeros_like(raw)
        full[kept] = flat
        return full

    def _split(self, u: torch.Tensor) -> list[torch.Tensor]:
        return [self._scatter(n, s) for n, s in zip(self.names, u.split(self.sizes), strict=True)]

    def _scale(self, name: str, x: torch.Tensor) -> torch.Tensor:
        d = self.d[name]
        return x if d is None else x * d.view((-1,) + (1,) * (x.dim() - 1))

    # -- the product ------------------------------------------------------------------------
    def matvec(self, u: torch.Tensor) -> torch.Tensor:
        """``(G/C) u`` for a flat ``u`` of length :attr:`dimension` (dtype of the network)."""
        self.products += 1
        xs = [self._scale(n, x) for n, x in zip(self.names, self._split(u), strict=True)]
        hx: Sequence[torch.Tensor | None] = [None] * len(self.names)
        if self._second:
            hx = torch.autograd.grad(
                [self.grads[i] for i in self._second],
                self.leaves,
                grad_outputs=[xs[i] * self.raw[self.names[i]] for i in self._second],
                retain_graph=True,
                allow_unused=True,
            )
        out = []
        for name, x, g, h in zip(self.names, xs, self.grads, hx, strict=True):
            y = g.detach() * x
            if h is not None:
                y = y + self.raw[name] * h
            out.append(self._gather(name, self._scale(name, y)))
        return torch.cat(out)


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-4


def gram_operator(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> GramOperator:
    """The operator ``u ↦ (G/C) u`` of the masked network (for tests and benchmarks)."""
    from pruners.stats import _prepare  # stats imports this module lazily: no cycle

    net, device_masks, inputs = _prepare(model, input_shape, masks, dtype)
    return GramOperator(net, device_masks, inputs)


def path_kernel_spectrum(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: Mapping[str, torch.Tensor] | None = None,
    k: int = 10,
    *,
    probes: int = 0,
    tol: float | None = None,
    maxiter: int = 300,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> PathKernelSpectrum:
    """The k largest eigenvalues of the Path Kernel ``Π`` of the masked network (natural logs).

    Gebhart, Saxena, Schrater (2021): ``Π = J Jᵀ`` shares its nonzero eigenvalues with
    ``G = Jᵀ J = D (diag(∇R) + diag(c) ∇²R diag(c)) D`` (see :mod:`pruners.spectrum`), so
    implicitly restarted Lanczos (ARPACK's ``eigsh``, Lehoucq, Sorensen, Yang 1998; for
    ``k = 1`` plain Lanczos in float64, :func:`_top_one`) over ``G·u`` products finds them
    without forming ``Π``; every pair is then checked with one more product (:func:`_verify`,
    the residuals in :attr:`PathKernelSpectrum.residuals`). Paths, BatchNorm and masks are treated
    as in :func:`pruners.path_kernel_stats` (bias-free input→output paths; eval-form BatchNorm
    whose γ is a kernel parameter); models that are not path-decomposable are refused with
    ValueError by the same path network.

    Args:
        model: the network (it is not changed).
        input_shape: shape of one input, without the batch dimension.
        masks: parameter name -> bool mask (True = kept); missing names are dense.
        k: how many eigenvalues; ``1 <= k < `` kept path parameters.
        probes: Hutchinson probes for ``‖Π‖_F²`` and the effective rank (0: none; else >= 2).
        tol: relative tolerance ``‖G x − λ x‖ ≤ tol·λ``, checked per pair; default 1e-10 in float64,
            1e-4 in float32 (the products themselves carry float32 rounding).
        maxiter: restarts at most (ARPACK's, or the λ_max Lanczos'); when they run out
            ``converged`` is False and the eigenvalues that did not converge are NaN.
        seed: seed of the start vector and of the probes (results are reproducible).
        dtype: dtype of the products (default: the model's); ARPACK runs in the same, the
            λ_max Lanczos and the checks accumulate in float64.
    """
    options = SpectrumOptions(k=k, probes=probes, tol=tol, maxiter=maxiter, seed=seed)
    op = gram_operator(model, input_shape, masks, dtype=dtype)
    return _spectrum(op, options)


def _spectrum(op: GramOperator, options: SpectrumOptions) -> PathKernelSpectrum:
    k, n = options.k, op.dimension
    if k >= n:
        raise ValueError(
            f"1 <= k < kept path parameters must hold for Lanczos, but got k={k} with {n} kept"
        )
    tol = options.tol if options.tol is not None else _default_tol(op.dtype)
    np_dtype = np.float64 if op.dtype == torch.float64 else np.float32
    device = op.diagonal.device

    def matvec(u: np.ndarray) -> np.ndarray:
        vec = torch.as_tensor(np.ascontiguousarray(u).reshape(-1), device=device).to(op.dtype)
        return op.matvec(vec).detach().cpu().numpy().astype(np_dtype, copy=False)

    rng = np.random.default_rng(options.seed)
    trace = float(op.diagonal.double().sum())
    log_trace = (math.log(trace) if trace > 0 else -math.inf) + op.log_scale
    if trace <= 0:  # no surviving path: Π = 0
        fro = -math.inf if options.probes else math.nan
        return PathKernelSpectrum(
            (-math.inf,) * k, True, tol, 0, -math.inf, n, fro, math.nan, options.probes
        )
    values = np.zeros(0)
    vectors = np.zeros((n, 0), dtype=np_dtype)
    converged, wanted = True, k
    # Lanczos from one start vector finds one vector per eigenspace: a repeated eigenvalue
    # (the Path Kernel has them, e.g. every classifier column orthogonal to θ is an
    # eigenvector) is found once. So the top-k found are checked: Lanczos again on the
    # operator with them projected out, P G P; whatever it finds above λ_k joins them, until
    # the check finds nothing above λ_k (a certificate, up to tol, that they are the top k).
    while True:
        if k == 1:
            found, basis, ok = _top_one(op, tol, options.maxiter, rng)
        else:
            found, basis, ok = _lanczos(op, matvec, vectors, wanted, tol, options.maxiter, rng)
        converged = converged and ok
        if len(found) == 0:
            break
        new_top = len(values) == 0 or found[0] > values[min(k, len(values)) - 1] * (1 + tol)
        values = np.concatenate([values, found])
        vectors = np.concatenate([vectors, basis], axis=1)
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        if not (ok and new_top) or len(values) + 1 >= n or k == 1:
            break  # λ_max needs no check: a missed copy of it changes no value
        wanted = min(max(2, k // 4), n - len(values) - 1)
    values, vectors = values[:k], vectors[:, :k]
    values, vectors, residuals, verified = _verify(op, vectors, tol)
    converged = converged and verified
    products = op.products
    logs = [
        math.nan if math.isnan(v) else (math.log(v) + op.log_scale) if v > 0 else -math.inf
        for v in values.tolist()
    ]
    logs += [math.nan] * (k - len(values))
    residuals += [math.nan] * (k - len(residuals))
    log_fro, rel_se = math.nan, math.nan
    if options.probes:
        log_fro, rel_se = _frobenius(op, values, vectors, options.probes, rng)
    return PathKernelSpectrum(
        log_eigenvalues=tuple(float(x) for x in logs),
        converged=converged,
        tol=tol,
        products=products,
        log_trace=log_trace,
        dimension=n,
        log_frobenius_sq=log_fro,
        frobenius_sq_rel_se=rel_se,
        probes=options.probes,
        residuals=tuple(residuals),
    )


#: Residuals below this many units of the products' rounding (times λ_1) are accepted even
#: where ``tol·λ`` is smaller: a float32 product of ``G`` carries rounding error of about
#: ``ε‖G‖`` per unit vector, so a small eigenvalue's relative residual cannot fall below it.
ROUNDING_UNITS = 500


def _verify(
    op: GramOperator, vectors: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, list[float], bool]:
    """Each returned pair checked with one more product, its norms in float64.

    ARPACK judges convergence from its own recurrence, in the products' dtype; over 14.7 M
    float32 entries a norm is off by up to ~0.5%, so its word is not taken. For each Ritz vector
    ``x``: ``ρ = xᵀGx / xᵀx`` and ``r = ‖Gx − ρx‖ / ‖x‖`` (Rayleigh quotient and residual, summed
    in float64). ``G`` is symmetric, so some eigenvalue lies within ``r`` of ``ρ``. A pair is
    accepted when ``r ≤ max(tol·ρ, ROUNDING_UNITS·ε·ρ_1)``.

    Returns:
        (ρ descending, NaN where a pair failed; the vectors in the same order; relative
        residuals ``r/ρ`` in the same order; whether every pair passed).
    """
    device = op.diagonal.device
    rhos, res = [], []
    with torch.no_grad():
        for i in range(vectors.shape[1]):
            x = torch.as_tensor(np.ascontiguousarray(vectors[:, i]), device=device).to(op.dtype)
            g = op.matvec(x).double()
            xd = x.double()
            norm_sq = float(xd.square().sum())
            rho = float(xd @ g) / norm_sq
            rhos.append(rho)
            res.append(float((g - rho * xd).square().sum()) ** 0.5 / norm_sq**0.5)
    if not rhos:
        return np.zeros(0), vectors, [], True
    rho_arr, res_arr = np.asarray(rhos), np.asarray(res)
    order = np.argsort(rho_arr)[::-1]
    rho_arr, res_arr = rho_arr[order], res_arr[order]
    floor = ROUNDING_UNITS * float(torch.finfo(op.dtype).eps) * max(float(rho_arr[0]), 0.0)
    ok = res_arr <= np.maximum(tol * rho_arr, floor)
    relative = [float(r / v) if v > 0 else math.inf for r, v in zip(res_arr, rho_arr, strict=True)]
    return np.where(ok, rho_arr, np.nan), vectors[:, order], relative, bool(ok.all())


def _lanczos(
    op: GramOperator,
    matvec: Callable[[np.ndarray], np.ndarray],
    deflate: np.ndarray,
    k: int,
    tol: float,
    maxiter: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Top ``k`` eigenpairs of ``P G P``, ``P`` projecting out the columns of ``deflate``.

    Returns (eigenvalues descending, eigenvectors as columns, whether all converged); when
    ARPACK runs out of restarts, only the converged pairs.
    """
    n = op.dimension
    dtype = deflate.dtype

    def project(u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=dtype).reshape(-1)
        return u - deflate @ (deflate.T @ u) if deflate.shape[1] else u

    def deflated(u: np.ndarray) -> np.ndarray:
        return project(matvec(project(u)))

    linear_op = LinearOperator((n, n), matvec=deflated, dtype=dtype)
    v0 = project(rng.standard_normal(n).astype(dtype))
    with torch.no_grad():
        try:
            values, vectors = eigsh(linear_op, k=k, which="LA", v0=v0, tol=tol, maxiter=maxiter)
            ok = True
        except ArpackNoConvergence as err:
            values, vectors, ok = err.eigenvalues, err.eigenvectors, False
    order = np.argsort(values)[::-1]
    values = np.asarray(values, dtype=np.float64)[order]
    vectors = np.asarray(vectors, dtype=dtype)[:, order]
    if deflate.shape[1]:  # drop Ritz vectors from the projected-out space (eigenvalue 0)
        keep = np.linalg.norm(deflate.T @ vectors, axis=0) < 0.5
        values, vectors = values[keep], vectors[:, keep]
    return values, vectors, ok


#: Lanczos vectors kept by :func:`_top_one` before it restarts from its Ritz vector.
TOP_ONE_BASIS = 16


def _top_one(
    op: GramOperator, tol: float, maxiter: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool]:
    """λ_max alone: Lanczos (three-term recurrence, float64), convergence tested at every step.

    ARPACK tests convergence only when its basis is full (20 vectors: 21 products on VGG-16,
    where λ_max had converged after 9) and reorthogonalizes every new vector against the whole
    basis, which at VGG-16's 14.7 M parameters cost about as much as a product per step
    (0.15 s beside a diagonal operator). λ_max, the extreme eigenvalue, needs neither: plain
    Lanczos converges to it although its vectors lose orthogonality (Paige 1976; what is lost
    shows up as copies of a converged value, not as an error in it), so each step is one
    product and a few vector operations, in float64 (float32 vector arithmetic over 14.7 M
    entries cost 3.6e-4 of relative residual in a measured run). It stops once the Ritz
    residual estimate ``β_j |s_j|`` is below ``tol/10 · θ``, and restarts from the Ritz vector
    after :data:`TOP_ONE_BASIS` steps, ``maxiter`` times at most. The pair is then checked
    with one more product by :func:`_verify`, like every other.

    Returns:
        (``[θ]``, the Ritz vector as one column, True) or, when ``maxiter`` restarts did not
        meet the tolerance, no pair and False (as ARPACK returns only converged pairs).
    """
    n, device, dtype = op.dimension, op.diagonal.device, op.dtype
    cap = TOP_ONE_BASIS
    generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    start = torch.randn(n, generator=generator, device=device, dtype=dtype).double()
    with torch.no_grad():
        for _ in range(maxiter):
            basis = torch.empty((cap, n), dtype=dtype, device=device)  # for the Ritz vector
            q = start / start.norm()
            q_prev = q  # read only from the second step on (β_0 does not exist)
            alphas: list[float] = []
            betas: list[float] = []
            for j in range(cap):
                basis[j] = q
                w = op.matvec(basis[j]).double()
                alpha = float(torch.dot(q, w))
                alphas.append(alpha)
                w.add_(q, alpha=-alpha)  # in place: one pass over 14.7 M entries, not two
                if betas:
                    w.add_(q_prev, alpha=-betas[-1])
                beta = float(torch.linalg.vector_norm(w))
                tri = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
                evals, evecs = np.linalg.eigh(tri)
                theta, s = float(evals[-1]), evecs[:, -1]
                ok = beta * abs(s[-1]) <= tol / 10 * abs(theta) or beta == 0.0
                if ok or j + 1 == cap:
                    coeffs = s.tolist()
                    start = torch.zeros_like(start)  # the Ritz vector
                    for i in range(j + 1):
                        start.add_(basis[i], alpha=coeffs[i])
                    if ok:
                        ritz = (start / start.norm()).to(dtype).cpu().numpy()
                        return np.array([theta]), ritz.reshape(-1, 1), True
                    break
                betas.append(beta)
                q_prev, q = q, w.div_(beta)
    # like ARPACK out of restarts: no converged pair
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    return np.zeros(0), np.zeros((n, 0), dtype=np_dtype), False


def _project(basis: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``P z = z − V Vᵀ z``."""
    return z - basis @ (basis.T @ z) if basis.shape[1] else z


def _frobenius(
    op: GramOperator, values: np.ndarray, vectors: np.ndarray, probes: int,
    rng: np.random.Generator,
) -> tuple[float, float]:  # fmt: skip
    """``(log ‖G‖_F², relative SE)``: ``Σλ_i² + mean ‖G P z‖²`` (see the module docstring)."""
    device = op.diagonal.device
    basis = torch.as_tensor(vectors, device=device).to(op.dtype)
    head = float(np.sum(values**2))
    samples, fourth = [], []
    with torch.no_grad():
        for _ in range(probes):
            signs = rng.integers(0, 2, op.dimension) * 2.0 - 1.0
            z = _project(basis, torch.as_tensor(signs, device=device).to(op.dtype))
            y = op.matvec(z)  # G P z
            samples.append(float(y.double().square().sum()))
            # ‖P G G P z‖²: its mean estimates ‖A‖_F² for A = P G² P, and the variance of one
            # probe zᵀAz is 2‖A‖_F² − 2Σ A_ii² ≤ 2‖A‖_F² (Rademacher; equality for Gaussian z)
            fourth.append(float(_project(basis, op.matvec(y)).double().square().sum()))
    mean = float(np.mean(samples))
    # The standard error from the variance bound: the sample variance of a few skewed
    # quadratic forms underestimates it (about 90% coverage at 2 SE with 10 probes).
    se = math.sqrt(2 * float(np.mean(fourth)) / probes)
    total = head + mean
    if total <= 0:
        return -math.inf, math.nan
    return math.log(total) + 2 * op.log_scale, se / total
