"""kernelgrad.torch: the transforms on torch tensors, with autograd through JAX's VJP.

Gradients are checked with ``torch.autograd.gradcheck`` (finite differences in float64), and
values against kernelgrad's own NumPy results, which the rest of the suite checks against
brute-force references.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kernel_table import BY_ID  # noqa: E402

import kernelgrad as kg  # noqa: E402
import kernelgrad.torch as kgt  # noqa: E402

F64 = torch.float64
TRANSFORMS = ["gram", "jacobian", "grad_sum", "gram_matvec", "cross_hessian", "laplacian_sum"]


def _points(n, d, dtype=F64, grad=True):
    return torch.randn(
        n, d, dtype=dtype, generator=torch.Generator().manual_seed(n * 10 + d)
    ).requires_grad_(grad)


@pytest.mark.parametrize("case", [BY_ID["matern52"], BY_ID["pair_rbf"]], ids=["closed", "ad"])
@pytest.mark.parametrize("name", TRANSFORMS)
def test_values_match_kernelgrad_in_both_dtypes(name, case):
    k = case.kernel
    for dtype in (torch.float32, F64):
        X = _points(7, 3, dtype, grad=False)
        out = getattr(kgt, name)(k, X)
        assert out.dtype == dtype and out.device == X.device
        expected = getattr(kg, name)(k, X.numpy())
        tol = 1e-5 if dtype == torch.float32 else 1e-13
        np.testing.assert_allclose(out.numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_gradients_in_the_points_and_a_trainable_lengthscale_pass_gradcheck(name):
    X = _points(5, 2)
    lengthscale = torch.nn.Parameter(torch.tensor(0.9, dtype=F64))
    call = getattr(kgt, name)
    assert torch.autograd.gradcheck(
        lambda X, l: call(kgt.RationalQuadratic(lengthscale=l, alpha=1.5), X), (X, lengthscale)
    )


def test_gradients_in_y_the_weights_and_a_single_point():
    X, Y, W = _points(4, 2), _points(5, 2), _points(5, 3)
    w = torch.randn(5, dtype=F64, requires_grad=True)
    k = kg.RBF(lengthscale=0.8)
    assert torch.autograd.gradcheck(lambda X, Y, W: kgt.gram_matvec(k, X, Y, W), (X, Y, W))
    assert torch.autograd.gradcheck(lambda X, Y, w: kgt.grad_sum(k, X, Y, w), (X, Y, w))
    x = torch.randn(2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, Y: kgt.grad(k, x, Y), (x, Y))


def test_a_pair_function_and_ard_lengthscales_as_parameters():
    import jax.numpy as jnp

    X = _points(6, 3)
    pair = kg.kernel(lambda x, y: jnp.exp(-jnp.sum((x - y) ** 2)))
    assert torch.autograd.gradcheck(lambda X: kgt.grad_sum(pair, X), (X,))
    ard = torch.nn.Parameter(torch.tensor([0.7, 1.2, 2.0], dtype=F64))
    assert torch.autograd.gradcheck(lambda X, l: kgt.gram(kgt.RBF(lengthscale=l), X), (X, ard))


def test_a_torch_optimiser_trains_the_hyperparameters():
    # Fit a Matern 5/2 lengthscale so that its Gram matrix matches one with lengthscale 1.3.
    X = _points(20, 2, grad=False)
    target = kgt.gram(kg.Matern52(lengthscale=1.3), X)
    k = kgt.Matern52(lengthscale=torch.nn.Parameter(torch.tensor(0.5, dtype=F64)))
    optimiser = torch.optim.Adam(k.parameters(), lr=0.05)
    for _ in range(200):
        optimiser.zero_grad()
        loss = (kgt.gram(k, X) - target).pow(2).sum()
        loss.backward()
        optimiser.step()
    assert abs(k.lengthscale.item() - 1.3) < 1e-2


def test_tensors_cross_to_jax_and_back_without_a_copy():
    X = torch.randn(64, 3, dtype=F64)
    with jax.enable_x64(True):
        A = kgt._to_jax(X)
        assert A.unsafe_buffer_pointer() == X.data_ptr()
        assert kgt._to_torch(A).data_ptr() == X.data_ptr()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: kgt.gram(kg.RBF(), torch.ones(3, 2, dtype=torch.int64)),
            ValueError,
            r"int64; expected float32 or float64",
        ),
        (
            lambda: kgt.gram(kg.RBF(), torch.ones(3, 2), torch.ones(3, 2, dtype=F64)),
            ValueError,
            r"Y has dtype torch.float64 but the points have torch.float32",
        ),
        (lambda: kgt.gram(kg.RBF(), np.ones((3, 2))), TypeError, "X must be a torch tensor"),
        (lambda: kgt.gram(kg.RBF(), torch.ones(3, 2), torch.ones(3, 4)), ValueError, r"d = 4"),
        (lambda: kgt.gram(kg.RBF(), torch.ones(2, 3, 4)), ValueError, r"\(2, 3, 4\)"),
        (lambda: kgt.Kernel(dict), TypeError, "kernel class"),
        (lambda: kgt.RBF(lengthscale=torch.tensor(-1.0)), ValueError, "lengthscale"),
    ],
    ids=["integer", "mixed_dtype", "numpy", "d_mismatch", "rank3", "not_a_family", "negative"],
)
def test_bad_input_gets_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_without_torch_the_import_error_names_the_extra():
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import kernelgrad.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "pip install 'kernelgrad[torch]'" in out.stdout, out.stderr


def test_joint_covariance_maps_over_batch_dimensions_and_names_a_mismatch():
    k = kgt.RBF(lengthscale=torch.tensor(0.8, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 3, 4, 2, dtype=torch.float64, generator=g)
    Y = torch.randn(2, 3, 5, 2, dtype=torch.float64, generator=g)
    dense = kgt.joint_dense(k, X, Y)
    assert dense.shape == (2, 3, 12, 15)
    assert torch.allclose(dense[1, 2], kgt.joint_dense(k, X[1, 2], Y[1, 2]), rtol=1e-12)
    V = torch.randn(2, 3, 15, 2, dtype=torch.float64, generator=g)
    assert torch.allclose(kgt.joint_matvec(k, X, Y, V), dense @ V, rtol=1e-10)
    with pytest.raises(ValueError, match=r"Y must have X's batch shape \(2, 3\)"):
        kgt.joint_dense(k, X, Y[0])
