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

import recon_core  # noqa: F401  (first: sets libgomp's spin count before torch is loaded)
