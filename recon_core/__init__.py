"""The PoGMDM reconstruction in pure PyTorch (no Gadgetron import), grouped by role.

* :mod:`recon_core.physics`: k-space containers, the centred FFT, operators, data term, noise;
* :mod:`recon_core.prior`: the PoGMDM image prior, its complex wrapper, the coil prior;
* :mod:`recon_core.recon`: ``ReconConfig`` and ``reconstruct`` with its MAP and sampling solvers;
* :mod:`recon_core.sim`: phantoms, undersampling masks, learned sampling patterns;
* :mod:`recon_core.training`: training the prior (``pogmdm-train``).

The method, with the formulas the code implements: docs/ALGORITHM.md.
"""

import os

# torch's CPU thread pool is libgomp's. After every parallel region its idle threads spin (by
# default 300,000 rounds) before they sleep: fast on a dedicated machine, ruinous on a shared one,
# where the spinning threads take the cores from the working ones. A short spin keeps most of the
# speed and little of the harm. `fast` on the Berkeley slice, 2 threads (2026-12-03, the first
# slice of a process; 1 thread about 8 s): idle 2-core machine, OMP_WAIT_POLICY=PASSIVE 8.44 s,
# GOMP_SPINCOUNT=2000 5.62 s, 10000 5.21 s, 50000 4.97 s, libgomp's default 5.67 s; with two CPU
# hogs on the 2 cores: 12.2, 15.0, 15.4, 35.9 and 46.0 s. It must be in place before torch is
# first imported; a spin count or a wait policy the user set wins.
SPIN_COUNT = "10000"
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
