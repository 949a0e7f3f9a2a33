"""Gadgetron adapters: raw or buffered data in, recon_core call, ISMRMRD images out."""
