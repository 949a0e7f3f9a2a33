"""Gadgetron adapters: raw or buffered data in, recon_core call, ISMRMRD images out.

* :mod:`gadgets.pogmdm_gadget`: the gadget targets named by the chains in ``config/``
  (``reconstruct_acquisitions`` for raw readouts, ``reconstruct_buffers`` for ReconData);
* :mod:`gadgets.settings`, :mod:`gadgets.encoding`: ``<configuration>`` properties and the
  ISMRMRD header, read at the edge into typed values;
* :mod:`gadgets.assembly`, :mod:`gadgets.buffers`: readouts -> ``KSpaceSlice``;
* :mod:`gadgets.images`: reconstruction results -> ISMRMRD images with headers and meta;
* :mod:`gadgets.replay` (``pogmdm-recon``), :mod:`gadgets.session`, :mod:`gadgets.chains`,
  :mod:`gadgets.emulation`, :mod:`gadgets.output`: offline replay over the real wire protocol;
* :mod:`gadgets.demo_data`: synthetic raw files and the shipped demo (``gadgets/demo/``).

Every numerical step lives in ``recon_core``; this package only moves data.
"""
