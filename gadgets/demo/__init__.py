"""Demo data: the shipped demo raw file (``pogmdm_demo.h5``) and the synthetic scans of the tests.

:mod:`gadgets.demo.synthetic` writes Shepp-Logan raw files with noise readouts, readout
oversampling, calibration lines and chosen undersampling (``python -m gadgets.demo.synthetic``
rewrites the demo file); ``demo_raw_file()`` is the path of the shipped one. Not used inside
Gadgetron.
"""
