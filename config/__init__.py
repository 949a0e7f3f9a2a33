"""Chain XMLs and reconstruction presets, installed as the ``pogmdm_config`` package data."""
