"""Physics, prior, sampler and training for the PoGMDM reconstruction (pure PyTorch)."""
