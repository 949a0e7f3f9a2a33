"""Simulation and sampling-pattern design: phantoms, undersampling masks, learned masks.

* :mod:`~recon_core.sim.phantom`: Shepp-Logan and birdcage coil maps;
* :mod:`~recon_core.sim.masks`: Cartesian undersampling masks;
* :mod:`~recon_core.sim.mask_design` (with ``mask_estimates``, ``mask_design_data`` and the
  ``pogmdm-design-mask`` command in ``mask_design_cli``): learned sampling patterns
  (docs/sampling.md).
"""
