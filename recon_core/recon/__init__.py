"""The reconstruction: configuration, the ``reconstruct`` pipeline and its solvers.

* :mod:`~recon_core.recon.config`: ``ReconConfig`` and the YAML presets;
* :mod:`~recon_core.recon.reconstruction`: ``reconstruct`` (prepare -> solve -> summarise);
* :mod:`~recon_core.recon.map_solver`: the joint MAP estimate;
* :mod:`~recon_core.recon.sampler`, :mod:`~recon_core.recon.pc_sampler`: annealed Langevin and
  predictor-corrector posterior sampling;
* :mod:`~recon_core.recon.joint_steps`: the shared backtracking image and coil steps;
* :mod:`~recon_core.recon.jackknife`: the jackknife error map (``method="jackknife"``);
* :mod:`~recon_core.recon.data_consistency`: the damped data refinement;
* :mod:`~recon_core.recon.map_sets`: a second ESPIRiT map set (soft SENSE);
* :mod:`~recon_core.recon.device`: ``device: auto`` resolution.

See docs/ALGORITHM.md, section 4.
"""
