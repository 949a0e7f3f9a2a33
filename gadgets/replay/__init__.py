"""Offline replay: this package plays the Gadgetron server; none of it runs inside Gadgetron.

``pogmdm-recon`` (``python -m gadgets.replay``) reads an ISMRMRD raw file and reconstructs it
through the chain's Python gadget over the real ``gadgetron.external`` wire protocol:

* :mod:`gadgets.replay.cli`: the command line, its checks and its report;
* :mod:`gadgets.replay.chains`: the shipped chain XMLs and their ``<property>`` overrides;
* :mod:`gadgets.replay.emulation`: what the C++ gadgets before the Python one would send;
* :mod:`gadgets.replay.session`, :mod:`gadgets.replay.peers`: the server's side of the protocol
  and the gadget process or thread it talks to;
* :mod:`gadgets.replay.output`: images in ``gadgetron_ismrmrd_client``'s layout and PNG previews;
* :mod:`gadgets.replay.undersample`: retrospective undersampling of a fully sampled raw file.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """``pogmdm-recon``: see :mod:`gadgets.replay.cli` (imported here on first use)."""
    from gadgets.replay.cli import main as run

    return run(argv)
