"""What the gadget needs from the ISMRMRD XML header, read once per connection.

Headers come from converters of many ages: version 8 (Debian's ismrmrd-tools 1.8), version 2
(the schema version of current ISMRMRD) or no ``<version>`` at all; the ``ismrmrd.xsd`` parser
reads them all, and nothing here depends on the version number. Missing optional parts get the
defaults a scanner would imply (encoding limits centred on the matrix, relative receiver noise
bandwidth 1, recon space = encoded space).

3D Cartesian encodings (encoded matrix z > 1) are read too: the partitions are placed by the
``kspace_encoding_step_2`` limits' centre and the output partitions follow the recon space's
matrix z and field of view z (:meth:`EncodingInfo.partition_grid`). The header's
``encodingLimits`` become per-readout checks (:meth:`EncodingInfo.counter_violation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ismrmrd.xsd

Triple = tuple[float, float, float]

#: Acquisition counters (``idx`` field) checked against the header limit of the same meaning.
COUNTER_LIMITS: tuple[tuple[str, str], ...] = (
    ("kspace_encode_step_1", "kspace_encoding_step_1"),
    ("kspace_encode_step_2", "kspace_encoding_step_2"),
    ("average", "average"),
    ("slice", "slice"),
    ("contrast", "contrast"),
    ("phase", "phase"),
    ("repetition", "repetition"),
    ("set", "set"),
)


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
        kz_centre: ``kspace_encoding_step_2`` limits' centre (3D); lands on partition grid index
            ``encoded_matrix[2] // 2``.
        counter_limits: ``(counter, minimum, maximum)`` for every acquisition counter whose
            limits the header defines (``kspace_encode_step_2`` only for 3D encodings: in a 2D
            encoding several kz values make the whole slice inconsistent instead).
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
    kz_centre: int = 0
    counter_limits: tuple[tuple[str, int, int], ...] = ()

    @property
    def is_3d(self) -> bool:
        """A 3D Cartesian encoding: several partitions (encoded matrix z > 1)."""
        return self.encoded_matrix[2] > 1

    @property
    def kz_offset(self) -> int:
        """Add to ``kspace_encode_step_2`` to get the kz grid index (centre -> ``nz // 2``)."""
        return self.encoded_matrix[2] // 2 - self.kz_centre

    def partition_grid(self) -> tuple[int, int, float]:
        """``(grid, count, spacing_mm)`` of a 3D encoding's output partitions.

        The kz axis (``encoded_matrix[2]`` planes) is zero-padded or cropped to ``grid`` planes
        so that the inverse FFT along kz gives partitions ``spacing_mm`` apart (recon field of
        view z / recon matrix z); the central ``count`` of them (recon matrix z) cover the
        recon field of view (slab oversampling is cut off). Where the recon space gives no
        usable z (matrix z 1 or no field of view), every encoded partition is output at the
        encoded spacing (0 when the header has no field of view z).
        """
        encoded_z, encoded_fov = self.encoded_matrix[2], self.encoded_fov_mm[2]
        recon_z, recon_fov = self.recon_matrix[2], self.recon_fov_mm[2]
        if recon_z > 1 and recon_fov > 0.0 and encoded_fov > 0.0:
            spacing = recon_fov / recon_z
            grid = max(1, round(encoded_fov / spacing))
            return grid, min(recon_z, grid), spacing
        return encoded_z, encoded_z, encoded_fov / encoded_z if encoded_fov > 0.0 else 0.0

    def counter_violation(self, idx: Any) -> str | None:
        """Which counter of ``idx`` (an acquisition's ``idx``) lies outside the header's limits.

        Returns:
            ``"slice 5 is outside the header's encoding limits 0..3"`` for the first such
            counter, or ``None`` when all are inside (or the header defines no limits).
        """
        for counter, minimum, maximum in self.counter_limits:
            value = int(getattr(idx, counter))
            if not minimum <= value <= maximum:
                return f"{counter} {value} is outside the header's encoding limits {minimum}..{maximum}"
        return None

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
        ValueError: for a header without an encoding or a non-Cartesian trajectory.
    """
    if not header.encoding:
        raise ValueError("the ISMRMRD header has no <encoding>")
    encoding = header.encoding[0]
    trajectory = str(getattr(encoding.trajectory, "value", encoding.trajectory) or "cartesian")
    if trajectory.lower() != "cartesian":
        raise ValueError(f"only Cartesian data can be reconstructed, the header says {trajectory!r}")
    encoded = _matrix(encoding.encodedSpace.matrixSize)
    recon = _matrix(encoding.reconSpace.matrixSize) if encoding.reconSpace is not None else encoded
    encoded_fov = _fov(encoding.encodedSpace.fieldOfView_mm)
    recon_fov = _fov(encoding.reconSpace.fieldOfView_mm) if encoding.reconSpace is not None else encoded_fov
    limits = _limits(encoding.encodingLimits)
    ky_limit = limits.get("kspace_encoding_step_1")
    if ky_limit is not None:
        ky_minimum, ky_maximum, ky_centre = ky_limit
    else:
        ky_minimum, ky_maximum, ky_centre = 0, encoded[1] - 1, encoded[1] // 2
    kz_limit = limits.get("kspace_encoding_step_2")
    kz_centre = kz_limit[2] if kz_limit is not None and encoded[2] > 1 else encoded[2] // 2
    counter_limits = tuple(
        (counter, limits[name][0], limits[name][1])
        for counter, name in COUNTER_LIMITS
        if name in limits and (counter != "kspace_encode_step_2" or encoded[2] > 1)
    )
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
        kz_centre=kz_centre,
        counter_limits=counter_limits,
    )


def _limits(encoding_limits: Any) -> dict[str, tuple[int, int, int]]:
    """``{limit name: (minimum, maximum, centre)}`` of the limits the header defines."""
    found: dict[str, tuple[int, int, int]] = {}
    if encoding_limits is None:
        return found
    for _, name in COUNTER_LIMITS:
        limit = getattr(encoding_limits, name, None)
        if limit is not None and limit.maximum is not None:
            found[name] = (int(limit.minimum or 0), int(limit.maximum), int(limit.center or 0))
    return found


def _matrix(size: Any) -> tuple[int, int, int]:
    return int(size.x), int(size.y), max(1, int(size.z or 1))


def _fov(fov: Any) -> Triple:
    return float(fov.x), float(fov.y), float(fov.z)
