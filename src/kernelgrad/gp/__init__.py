"""What is built on the derivatives: the lazy joint covariance of values and gradients
(:mod:`.gradient_kernel`), Gaussian processes conditioned on both (:mod:`.gradient_gp`), and
hyperparameter gradients (:mod:`.hyper`)."""
