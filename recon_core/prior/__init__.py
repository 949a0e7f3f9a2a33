"""The Product-of-Gaussian-Mixture Diffusion Model image prior."""
