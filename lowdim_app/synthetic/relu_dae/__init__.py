"""Two-layer ReLU denoising autoencoders that memorize or generalize.

Zhang et al. 2025 (arXiv:2512.20963), §2.2, §3, App. A and B.1, split by responsibility:

* :mod:`.model` -- the DAE ``f(x) = W2 [W1^T x]_+`` (eq. 5), its loss (eq. 6), representations and
  one-step denoising (App. A.2);
* :mod:`.train` -- Adam on eq. 6 with hand-written gradients;
* :mod:`.data` -- the two-mode MoG and the centred digits, memorize / generalize / hybrid sets;
* :mod:`.analysis` -- the closed forms (eq. 8, eq. 9, Cor. 3.4) checked against trained weights, and
  the lab-specific representation statistics;
* :mod:`.sampling` -- DAEs on a noise grid and the DDIM sampler of eq. 1 (App. B.1);
* :mod:`.lab` -- the numbers the lab reports for one regime, the hybrid regime and the samples.
"""
