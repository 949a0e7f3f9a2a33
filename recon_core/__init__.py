"""The PoGMDM reconstruction in pure PyTorch (no Gadgetron import), grouped by role.

* :mod:`recon_core.physics`: k-space containers, the centred FFT, operators, data term, noise;
* :mod:`recon_core.prior`: the PoGMDM image prior, its complex wrapper, the coil prior;
* :mod:`recon_core.recon`: ``ReconConfig`` and ``reconstruct`` with its MAP and sampling solvers;
* :mod:`recon_core.sim`: phantoms, undersampling masks, learned sampling patterns;
* :mod:`recon_core.training`: training the prior (``pogmdm-train``).

The method, with the formulas the code implements: docs/ALGORITHM.md.
"""

import os

# torch's CPU thread pool is libgomp's, whose idle threads spin for a while after every parallel
# region. On a machine shared with other jobs (more runnable threads than cores) the spinning
# threads take the cores from the working ones: one prior score of a 230 x 180 slice took 1.8-2.3 s
# on 2 threads against 0.08-0.13 s with OMP_WAIT_POLICY=PASSIVE (and 0.12-0.29 s on 1 thread).
# PASSIVE lets idle threads sleep. It must be set before torch is first imported; a value the
# user set wins. The price on an idle, dedicated machine (2026-12-03, `fast` on the Berkeley
# slice, 2 threads): PASSIVE 19.2 s, ACTIVE 10.5 s, ACTIVE with GOMP_SPINCOUNT=20000 12.0 s; with
# two CPU hogs on the 2 cores: PASSIVE 27.0 s, GOMP_SPINCOUNT=20000 65.4 s. A dedicated
# reconstruction server can set OMP_WAIT_POLICY=ACTIVE.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
