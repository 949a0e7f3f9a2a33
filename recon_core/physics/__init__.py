"""The measurement model: k-space containers, the one centred FFT, the operators, noise.

* :mod:`~recon_core.physics.kspace`: ``KSpaceSlice`` and its geometry, the one axis convention;
* :mod:`~recon_core.physics.fourier`: the centred orthonormal FFT every module uses;
* :mod:`~recon_core.physics.operators`: ``A = Mask @ FFT @ Coils`` with explicit adjoints;
* :mod:`~recon_core.physics.data_term`: the joint image and coil data fit and its gradients;
* :mod:`~recon_core.physics.noise_estimation`, :mod:`~recon_core.physics.prewhitening`: noise level
  and coil decorrelation;
* :mod:`~recon_core.physics.espirit`: calibration region and ESPIRiT coil maps.

See docs/ALGORITHM.md, section 1.
"""
