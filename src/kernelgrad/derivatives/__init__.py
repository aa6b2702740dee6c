"""How a kernel's derivatives are written: one vocabulary of terms (:mod:`.terms`), the
first-order ops built from them (:mod:`.rules`), the second-order ones (:mod:`.hessian`),
and automatic differentiation for kernels without rules (:mod:`.autodiff`)."""
