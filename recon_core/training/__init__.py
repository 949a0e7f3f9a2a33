"""Training of the PoGMDM prior by denoising score matching."""
