"""What the gadget needs from the ISMRMRD XML header, read once per connection.

Headers come from converters of many ages: version 8 (Debian's ismrmrd-tools 1.8), version 2
(the schema version of current ISMRMRD) or no ``<version>`` at all; the ``ismrmrd.xsd`` parser
reads them all, and nothing here depends on the version number. Missing optional parts get the
defaults a scanner would imply (encoding limits centred on the matrix, relative receiver noise
bandwidth 1, recon space = encoded space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ismrmrd.xsd

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class EncodingInfo:
    """The first encoding space of the header, as the assembly and the image headers use it.

    Attributes:
        encoded_matrix: ``(x=readout, y=phase, z)`` of the encoded space (readout oversampled).
        recon_matrix: ``(x, y, z)`` of the recon space (the output image).
        encoded_fov_mm, recon_fov_mm: fields of view in mm, ``(x, y, z)``.
        ky_minimum, ky_maximum, ky_centre: ``kspace_encoding_step_1`` limits; the centre line
            lands on grid row ``encoded_matrix[1] // 2``.
        relative_noise_bandwidth: equivalent noise bandwidth of the receiver filter relative to
            the sampling bandwidth (1.0 where the header has none).
        calibration_mode: ``parallelImaging.calibrationMode`` (``"embedded"``, ``"interleaved"``,
            ``"separate"``, ...) or ``""``.
        header_version: the header's ``<version>``, ``None`` when absent.
        protocol_name: ``measurementInformation.protocolName`` or ``""``.
    """

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: Triple
    recon_fov_mm: Triple
    ky_minimum: int
    ky_maximum: int
    ky_centre: int
    relative_noise_bandwidth: float = 1.0
    calibration_mode: str = ""
    header_version: int | None = None
    protocol_name: str = ""

    @property
    def readout_oversampled(self) -> bool:
        """The encoded readout is longer than the recon readout (oversampling to remove)."""
        return self.encoded_matrix[0] > self.recon_matrix[0]

    @property
    def ky_offset(self) -> int:
        """Add to ``kspace_encode_step_1`` to get the grid row (centre line -> row ``ny // 2``)."""
        return self.encoded_matrix[1] // 2 - self.ky_centre

    @property
    def grid_spacing_mm(self) -> tuple[float, float]:
        """``(dy, dx)`` pixel size of the reconstruction grid (the encoded pixel size)."""
        return (
            self.encoded_fov_mm[1] / self.encoded_matrix[1],
            self.encoded_fov_mm[0] / self.encoded_matrix[0],
        )

    @property
    def calibration_is_separate(self) -> bool:
        """Calibration lines come from a separate (possibly differently weighted) scan."""
        return self.calibration_mode in ("separate", "external")


def parse_header(xml: bytes | str) -> Any:
    """The ``ismrmrd.xsd`` header object of an XML header text (any header version)."""
    return ismrmrd.xsd.CreateFromDocument(xml)


def encoding_from_header(header: Any) -> EncodingInfo:
    """Read :class:`EncodingInfo` from a parsed header (``connection.header``).

    Raises:
        ValueError: for a header without an encoding, a non-Cartesian trajectory or a 3D matrix.
    """
    if not header.encoding:
        raise ValueError("the ISMRMRD header has no <encoding>")
    encoding = header.encoding[0]
    trajectory = str(getattr(encoding.trajectory, "value", encoding.trajectory) or "cartesian")
    if trajectory.lower() != "cartesian":
        raise ValueError(f"only Cartesian data can be reconstructed, the header says {trajectory!r}")
    encoded = _matrix(encoding.encodedSpace.matrixSize)
    recon = _matrix(encoding.reconSpace.matrixSize) if encoding.reconSpace is not None else encoded
    if encoded[2] > 1:
        raise ValueError(f"only 2D encodings are supported, encoded matrix z is {encoded[2]}")
    encoded_fov = _fov(encoding.encodedSpace.fieldOfView_mm)
    recon_fov = _fov(encoding.reconSpace.fieldOfView_mm) if encoding.reconSpace is not None else encoded_fov
    limits = encoding.encodingLimits.kspace_encoding_step_1 if encoding.encodingLimits is not None else None
    if limits is not None and limits.maximum is not None:
        ky_minimum, ky_maximum = int(limits.minimum), int(limits.maximum)
        ky_centre = int(limits.center)
    else:
        ky_minimum, ky_maximum, ky_centre = 0, encoded[1] - 1, encoded[1] // 2
    system = header.acquisitionSystemInformation
    bandwidth = getattr(system, "relativeReceiverNoiseBandwidth", None) if system is not None else None
    parallel = encoding.parallelImaging
    mode = getattr(parallel, "calibrationMode", None) if parallel is not None else None
    measurement = header.measurementInformation
    protocol = getattr(measurement, "protocolName", None) if measurement is not None else None
    return EncodingInfo(
        encoded_matrix=encoded,
        recon_matrix=recon,
        encoded_fov_mm=encoded_fov,
        recon_fov_mm=recon_fov,
        ky_minimum=ky_minimum,
        ky_maximum=ky_maximum,
        ky_centre=ky_centre,
        relative_noise_bandwidth=float(bandwidth) if bandwidth else 1.0,
        calibration_mode=str(getattr(mode, "value", mode) or ""),
        header_version=None if header.version is None else int(header.version),
        protocol_name=str(protocol or ""),
    )


def _matrix(size: Any) -> tuple[int, int, int]:
    return int(size.x), int(size.y), max(1, int(size.z or 1))


def _fov(fov: Any) -> Triple:
    return float(fov.x), float(fov.y), float(fov.z)
