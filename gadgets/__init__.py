"""Gadgetron adapters: raw or buffered data in, recon_core call, ISMRMRD images out.

Runs inside Gadgetron (the modules at this package's top):

* :mod:`gadgets.pogmdm_gadget`: the gadget targets named by the chains in ``config/``
  (``reconstruct_acquisitions`` for raw readouts, ``reconstruct_buffers`` for ReconData);
* :mod:`gadgets.settings`, :mod:`gadgets.encoding`: ``<configuration>`` properties and the
  ISMRMRD header, read at the edge into typed values;
* :mod:`gadgets.slices`, :mod:`gadgets.assembly`, :mod:`gadgets.buffers`, :mod:`gadgets.readout`:
  readouts -> ``KSpaceSlice``;
* :mod:`gadgets.images`: reconstruction results -> ISMRMRD images with headers and meta;
* :mod:`gadgets.compat`: the workarounds for gadgetron 1.4.1, in one place.

Runs outside Gadgetron:

* :mod:`gadgets.replay` (``pogmdm-recon``): offline replay that plays the Gadgetron server over
  the real wire protocol;
* :mod:`gadgets.demo`: the shipped demo raw file and synthetic raw files.

Every numerical step lives in ``recon_core``; this package only moves data.
"""

import os

# torch's CPU thread pool is libgomp's, whose idle threads spin for a while after every parallel
# region. On a machine shared with other jobs (more runnable threads than cores) the spinning
# threads take the cores from the working ones: one prior score of a 230 x 180 slice took 1.8-2.3 s
# on 2 threads against 0.08-0.13 s with OMP_WAIT_POLICY=PASSIVE (and 0.12-0.29 s on 1 thread).
# PASSIVE lets idle threads sleep. It must be set before torch is first imported; a value the
# user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
