"""Which preconditioners could make CG fast on the correlated problem of
``benchmarks/conditioning.py``: CG iterations on a dense copy small enough to factorise.

Run: ``python benchmarks/preconditioner_bounds.py [--n 200] [--d 30]`` (two to three minutes).

The covariance of values and gradients of an RBF (lengthscale sqrt(d), noise 1e-3 on both)
at n standard normal points is built densely here in NumPy from its closed form, and CG
(tol 1e-6, a standard normal right-hand side) runs with each preconditioner M, counting
iterations. Time is not the point: several of these M cost far more than a product with
the covariance, and they are here to bound what a cheap M could achieve.

- Jacobi (what ``condition`` uses);
- the exact inverse on the 1 + d directions that are constant over the points (a value
  field, each partial derivative field), the Jacobi-scaled system elsewhere;
- the exact top-k eigenvectors of the Jacobi-scaled system deflated (k = 50 to 400);
- a Kronecker model of the gradient block, (K (x) I) / l^2 + noise, inverted by one
  eigendecomposition of K, Jacobi on the values;
- the exact inverse of the value block, Jacobi on the gradients;
- the exact inverse of the gradient block, Jacobi on the values;
- the exact inverses of both diagonal blocks;
- the symmetric block Gauss-Seidel sweep of ``condition``'s default, M = (D + L) D^-1
  (D + U) with D = blockdiag(value block, diagonal of the gradient block): cheap, its
  cross blocks cost about 2/3 of a product.
"""

from __future__ import annotations

import argparse

import numpy as np


def joint_covariance(X, lengthscale, noise):
    """[f(X), grad f(X)] covariance, block-major (values, then point-major gradients)."""
    n, d = X.shape
    R = X[:, None, :] - X[None, :, :]  # r_ij = x_i - x_j
    K = np.exp(-np.sum(R**2, -1) / (2 * lengthscale**2))
    A = np.empty((n * (d + 1), n * (d + 1)))
    A[:n, :n] = K
    # cov(f_i, d f_j / d x_jb) = k_ij r_ijb / l^2; the gradient block
    # k_ij (delta_ab / l^2 - r_ija r_ijb / l^4).
    A[:n, n:] = (K[:, :, None] * R / lengthscale**2).reshape(n, n * d)
    A[n:, :n] = A[:n, n:].T
    eye = np.eye(d)[None, None] / lengthscale**2
    H = K[:, :, None, None] * (eye - R[:, :, :, None] * R[:, :, None, :] / lengthscale**4)
    A[n:, n:] = H.transpose(0, 2, 1, 3).reshape(n * d, n * d)
    return A + noise * np.eye(len(A)), K


def pcg_iterations(A, b, solve, tol=1e-6, maxiter=5000):
    x, r = np.zeros_like(b), b.copy()
    z = solve(r)
    p, rz, norm_b = z.copy(), r @ z, np.linalg.norm(b)
    for k in range(1, maxiter + 1):
        Ap = A @ p
        step = rz / (p @ Ap)
        x += step * p
        r -= step * Ap
        if np.linalg.norm(r) <= tol * norm_b:
            return k
        z = solve(r)
        rz_next = r @ z
        p, rz = z + rz_next / rz * p, rz_next
    return maxiter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--d", type=int, default=30)
    args = parser.parse_args()
    n, d, noise = args.n, args.d, 1e-3
    lengthscale = np.sqrt(d)
    rng = np.random.default_rng(0)
    A, K = joint_covariance(rng.normal(size=(n, d)), lengthscale, noise)
    N = len(A)
    b = rng.normal(size=N)
    diag = np.diag(A)
    root = np.sqrt(diag)
    scaled = A / np.outer(root, root)

    def jacobi(r):
        return r / diag

    def deflated(Q, inverse_block):
        """M^-1 = D^-1/2 (I - Q Q^T + Q B Q^T) D^-1/2 for orthonormal Q (N, k)."""

        def solve(r):
            s = r / root
            c = Q.T @ s
            return (s - Q @ c + Q @ (inverse_block @ c)) / root

        return solve

    def blocks(value_solve, gradient_solve):
        def solve(r):
            return np.concatenate([value_solve(r[:n]), gradient_solve(r[n:])])

        return solve

    constant = np.zeros((N, d + 1))
    constant[:n, 0] = 1 / np.sqrt(n)
    for a in range(d):
        constant[n + np.arange(n) * d + a, a + 1] = 1 / np.sqrt(n)
    eigenvalues, vectors = np.linalg.eigh(scaled)
    k_values, k_vectors = np.linalg.eigh(K)
    value_inverse = np.linalg.inv(A[:n, :n])
    gradient_inverse = np.linalg.inv(A[n:, n:])

    def kronecker(r):
        R = r.reshape(n, d)
        return (
            k_vectors @ ((k_vectors.T @ R) / (k_values[:, None] / lengthscale**2 + noise))
        ).ravel()

    cases = [("Jacobi", jacobi)]
    inverse_on_constant = np.linalg.inv(constant.T @ scaled @ constant)
    cases.append(("exact on the 1 + d constant fields", deflated(constant, inverse_on_constant)))
    for k in (50, 100, 200, 400):
        top = vectors[:, -k:]
        cases.append(
            (f"top {k} eigenvectors deflated", deflated(top, np.diag(1 / eigenvalues[-k:])))
        )
    cases += [
        ("Kronecker gradient block, Jacobi values", blocks(lambda r: r / diag[:n], kronecker)),
        (
            "exact value block, Jacobi gradients",
            blocks(value_inverse.__matmul__, lambda r: r / diag[n:]),
        ),
        (
            "exact gradient block, Jacobi values",
            blocks(lambda r: r / diag[:n], gradient_inverse.__matmul__),
        ),
        (
            "exact value and gradient blocks",
            blocks(value_inverse.__matmul__, gradient_inverse.__matmul__),
        ),
    ]
    coupling = A[n:, :n]  # C, the gradients' rows against the values

    def gauss_seidel(r):
        """x2 = (r2 - C V^-1 r1) / diag(G), x1 = V^-1 (r1 - C^T x2)."""
        x2 = (r[n:] - coupling @ (value_inverse @ r[:n])) / diag[n:]
        return np.concatenate([value_inverse @ (r[:n] - coupling.T @ x2), x2])

    cases.append(("block Gauss-Seidel (condition's default)", gauss_seidel))
    print(f"n = {n}, d = {d} ({N} observations), lengthscale {lengthscale:.2f}, noise {noise}")
    print(f"condition number after Jacobi scaling: {eigenvalues[-1] / eigenvalues[0]:.3g}")
    for name, solve in cases:
        print(f"{name:42s} {pcg_iterations(A, b, solve):5d} iterations", flush=True)


if __name__ == "__main__":
    main()
