"""Training kernels, one module per backend with the same function names.

Every backend module (``reference``, ``cpu``, ``cuda``) exposes

* ``init_state(V, X, Y, eta)``: take ownership of the normalized weights
  V_1..V_L (list of C-contiguous arrays, one dtype), the data and the per-layer
  rates eta_i = lr / d_i; return a backend state holding loss(0) as
  ``state.loss0``.
* ``run_steps(state, loss_out, loss_stop)``: run up to ``len(loss_out)`` GD
  steps, writing loss(t) of each into ``loss_out`` (float64); stop after a
  non-finite loss (DIVERGED) or a loss <= ``loss_stop`` (CONVERGED). Returns
  ``(steps_done, status)``.
* ``weights(state)``: the current V_1..V_L, as new arrays.
* ``chains(state)``: the prefix chains A_1..A_{L+1} (A_1 = X, A_{L+1} = f),
  suffix chains B_0..B_L (B_L = I) and the residual E = f - Y at the current
  step.
"""

COMPLETED, CONVERGED, DIVERGED = 0, 1, 2
STATUS_NAMES = {COMPLETED: "completed", CONVERGED: "converged", DIVERGED: "diverged"}
