"""Synthetic ISMRMRD raw files with the traits of real scanner data, and the shipped demo.

:func:`write_synthetic_raw` simulates a multi-coil Cartesian scan of the modified Shepp-Logan
phantom (``recon_core.sim.phantom``) through the acquisition model ``A = M F S``
(``recon_core.physics.operators``) and writes it the way a scanner converter does: a noise readout
first (correlated coil noise), 2x readout oversampling, ky undersampling with a fully sampled
calibration block (ACQ_IS_PARALLEL_CALIBRATION / ..._AND_IMAGING flags), optional partial
Fourier (encoding limits off the matrix centre), several slices and repetitions with
FIRST/LAST_IN_SLICE and LAST_IN_MEASUREMENT flags, real slice geometry and a header of a chosen
``<version>`` (or none). With ``partitions > 1`` it writes a 3D Cartesian slab instead: a
different 2D pattern in every partition (:func:`partition_object`), ``kspace_encode_step_2``
on every readout and an encoded / recon matrix z of ``partitions``.

The demo raw file shipped in ``gadgets/demo/`` was made with ``python -m gadgets.demo.synthetic``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import ismrmrd
import numpy as np
import torch

from gadgets.readout import crop_or_pad
from recon_core.physics.fourier import centred_fft
from recon_core.physics.operators import FFT2Operator
from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan

DEMO_FILE = "pogmdm_demo.h5"


@dataclass(frozen=True)
class SyntheticScan:
    """What to simulate.

    Attributes:
        matrix: recon matrix (square, pixels); the readout is sampled ``oversampling`` x longer.
        coils, acceleration, calibration_lines: coil count, outer ky undersampling factor and the
            width of the fully sampled centre block.
        oversampling: readout oversampling factor (1 = none).
        partial_fourier_lines: ky lines left out at the top of k-space (limits centre moves off
            the matrix centre by this many lines relative to the maximum).
        slices, repetitions: how many of each (one reconstruction per slice and repetition).
        noise_std: complex noise std per sample relative to the k-space signal scale.
        fov_mm, slice_thickness_mm, slice_gap_mm: geometry.
        header_version: ``<version>`` of the XML header, ``None`` to leave it out.
        seed: random seed of the noise.
        partitions: 1 for 2D slices; more for a 3D slab of that many partitions, each
            ``slice_thickness_mm`` thick (every ky line acquired at every kz).
    """

    matrix: int = 96
    coils: int = 8
    acceleration: int = 3
    calibration_lines: int = 24
    oversampling: int = 2
    partial_fourier_lines: int = 0
    slices: int = 1
    repetitions: int = 1
    noise_std: float = 0.005
    fov_mm: float = 240.0
    slice_thickness_mm: float = 5.0
    slice_gap_mm: float = 1.0
    header_version: int | None = 2
    seed: int = 0
    partitions: int = 1


def sampled_lines(scan: SyntheticScan) -> list[tuple[int, int]]:
    """``(ky, flag)`` in acquisition order; flag is 0, ``ACQ_IS_PARALLEL_CALIBRATION`` or
    ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING``."""
    rows = scan.matrix
    centre = rows // 2
    calibration = set(range(centre - scan.calibration_lines // 2, centre + (scan.calibration_lines + 1) // 2))
    last = rows - 1 - scan.partial_fourier_lines
    lines = []
    for ky in range(last + 1):
        imaging = ky % scan.acceleration == 0
        if ky in calibration:
            flag = (
                ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
                if imaging
                else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
            )
            lines.append((ky, flag))
        elif imaging:
            lines.append((ky, 0))
    return lines


def header_xml(scan: SyntheticScan) -> str:
    """The ISMRMRD XML header of the simulated scan."""
    matrix, readout = scan.matrix, scan.matrix * scan.oversampling
    version = "" if scan.header_version is None else f"<version>{scan.header_version}</version>"
    maximum = matrix - 1 - scan.partial_fourier_lines
    depth, fov_z = scan.partitions, scan.slice_thickness_mm * scan.partitions
    kz_limits = (
        f"<kspace_encoding_step_2><minimum>0</minimum><maximum>{depth - 1}</maximum>"
        f"<center>{depth // 2}</center></kspace_encoding_step_2>"
        if depth > 1
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  {version}
  <measurementInformation>
    <patientPosition>HFS</patientPosition>
    <protocolName>pogmdm_synthetic</protocolName>
  </measurementInformation>
  <acquisitionSystemInformation>
    <systemVendor>synthetic</systemVendor>
    <receiverChannels>{scan.coils}</receiverChannels>
  </acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{readout}</x><y>{matrix}</y><z>{depth}</z></matrixSize>
      <fieldOfView_mm><x>{scan.fov_mm * scan.oversampling}</x><y>{scan.fov_mm}</y><z>{fov_z}</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{matrix}</x><y>{matrix}</y><z>{depth}</z></matrixSize>
      <fieldOfView_mm><x>{scan.fov_mm}</x><y>{scan.fov_mm}</y><z>{fov_z}</z></fieldOfView_mm>
    </reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{maximum}</maximum><center>{matrix // 2}</center></kspace_encoding_step_1>{kz_limits}
      <slice><minimum>0</minimum><maximum>{scan.slices - 1}</maximum><center>0</center></slice>
      <repetition><minimum>0</minimum><maximum>{scan.repetitions - 1}</maximum><center>0</center></repetition>
    </encodingLimits>
    <trajectory>cartesian</trajectory>
    <parallelImaging>
      <accelerationFactor><kspace_encoding_step_1>{scan.acceleration}</kspace_encoding_step_1><kspace_encoding_step_2>1</kspace_encoding_step_2></accelerationFactor>
      <calibrationMode>embedded</calibrationMode>
    </parallelImaging>
  </encoding>
</ismrmrdHeader>
"""  # noqa: E501


def partition_object(matrix: int, partition: int) -> torch.Tensor:
    """``(matrix, matrix)`` object of a 3D slab's partition: the phantom turned by
    ``partition`` quarter turns (and mirrored from the fifth partition on), so that every one
    of up to 8 partitions differs."""
    image = torch.rot90(shepp_logan(matrix), k=partition % 4, dims=(0, 1))
    return image.flip(-1) if (partition // 4) % 2 else image


def simulate_kspace(scan: SyntheticScan) -> torch.Tensor:
    """Noiseless k-space of the phantom (peak image ~1), complex64.

    ``(C, ky, kx_oversampled)`` for a 2D scan; ``(C, kz, ky, kx_oversampled)`` for a 3D slab
    (``partitions > 1``: partition ``p`` holds :func:`partition_object` and lies at
    ``(p - partitions // 2)`` partition thicknesses along the slice direction; centred
    orthonormal FFT along kz as in-plane).
    """
    matrix, readout = scan.matrix, scan.matrix * scan.oversampling
    coil_maps = birdcage_coil_maps(scan.coils, matrix, readout)
    if scan.partitions == 1:
        image = crop_or_pad(shepp_logan(matrix).to(torch.complex64), readout, dim=-1)
        return FFT2Operator()(coil_maps * image)
    volume = torch.stack([partition_object(matrix, p) for p in range(scan.partitions)])
    volume = crop_or_pad(volume.to(torch.complex64), readout, dim=-1)
    kspace = FFT2Operator()(coil_maps[:, None] * volume[None])  # (C, kz=z, ky, kx)
    return centred_fft(kspace, 1)


def ground_truth(scan: SyntheticScan = SyntheticScan()) -> torch.Tensor:
    """``(matrix, matrix)`` magnitude a 2D scan's reconstruction should give: the phantom times
    the RSS of the simulated coils over the recon field of view (readout oversampling removed)."""
    matrix = scan.matrix
    coils = crop_or_pad(birdcage_coil_maps(scan.coils, matrix, matrix * scan.oversampling), matrix, dim=-1)
    return coils.abs().pow(2).sum(0).sqrt() * shepp_logan(matrix)


def write_synthetic_raw(path: Path | str, scan: SyntheticScan = SyntheticScan()) -> Path:
    """Write the simulated scan to ``path`` (``/dataset``); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    generator = torch.Generator().manual_seed(scan.seed)
    kspace = simulate_kspace(scan)
    mixing = torch.eye(scan.coils, dtype=torch.complex64) + 0.2 * _complex_noise(
        (scan.coils, scan.coils), generator
    )
    mixing = torch.tril(mixing) * scan.noise_std
    readout = kspace.shape[-1]
    lines = sampled_lines(scan)
    stamp = 1000
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(header_xml(scan).encode("utf-8"))
        noise = mixing @ _complex_noise((scan.coils, 2 * readout), generator)
        dataset.append_acquisition(
            _acquisition(noise, None, ismrmrd.ACQ_IS_NOISE_MEASUREMENT, scan, 0, stamp)
        )
        planes = kspace.unbind(1) if scan.partitions > 1 else (kspace,)
        for repetition in range(scan.repetitions):
            for slice_number in range(scan.slices):
                for kz, plane in enumerate(planes):
                    for number, (ky, flag) in enumerate(lines):
                        samples = plane[:, ky] + mixing @ _complex_noise((scan.coils, readout), generator)
                        flags = [flag] if flag else []
                        if number == 0 and kz == 0:
                            flags.append(ismrmrd.ACQ_FIRST_IN_SLICE)
                        if number == len(lines) - 1 and kz == scan.partitions - 1:
                            flags.append(ismrmrd.ACQ_LAST_IN_SLICE)
                            if repetition == scan.repetitions - 1 and slice_number == scan.slices - 1:
                                flags.append(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
                        stamp += 2
                        counters = (ky, slice_number, repetition, kz)
                        dataset.append_acquisition(
                            _acquisition(samples, counters, flags, scan, slice_number, stamp)
                        )
    return path


def slice_position(scan: SyntheticScan, slice_number: int) -> tuple[float, float, float]:
    """Centre of slice (or slab) ``slice_number`` in mm (stacked along z around the isocentre)."""
    spacing = scan.slice_thickness_mm * scan.partitions + scan.slice_gap_mm
    return 0.0, 0.0, (slice_number - (scan.slices - 1) / 2.0) * spacing


def demo_raw_file() -> Path:
    """Path of the demo raw file shipped with the package."""
    return Path(str(resources.files("gadgets.demo") / DEMO_FILE))


def _complex_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    real = torch.randn(shape, generator=generator)
    imag = torch.randn(shape, generator=generator)
    return torch.complex(real, imag) / 2**0.5


def _acquisition(
    samples: torch.Tensor,
    counters: tuple[int, int, int, int] | None,
    flags: int | list[int],
    scan: SyntheticScan,
    slice_number: int,
    stamp: int,
) -> ismrmrd.Acquisition:
    data = np.ascontiguousarray(samples.numpy(), dtype=np.complex64)
    acquisition = ismrmrd.Acquisition.from_array(data)
    acquisition.version = 1
    acquisition.measurement_uid = 4242
    acquisition.scan_counter = stamp // 2
    acquisition.acquisition_time_stamp = stamp
    acquisition.sample_time_us = 5.0
    acquisition.center_sample = 0 if counters is None else data.shape[1] // 2
    acquisition.available_channels = scan.coils
    acquisition.read_dir[:] = (1.0, 0.0, 0.0)
    acquisition.phase_dir[:] = (0.0, 1.0, 0.0)
    acquisition.slice_dir[:] = (0.0, 0.0, 1.0)
    acquisition.position[:] = slice_position(scan, slice_number)
    acquisition.patient_table_position[:] = (0.0, 0.0, -1250.0)
    for flag in [flags] if isinstance(flags, int) else flags:
        acquisition.set_flag(flag)
    if counters is not None:
        ky, slice_index, repetition, kz = counters
        acquisition.idx.kspace_encode_step_1 = ky
        acquisition.idx.kspace_encode_step_2 = kz
        acquisition.idx.slice = slice_index
        acquisition.idx.repetition = repetition
    return acquisition


def main(argv: list[str] | None = None) -> None:
    """``python -m gadgets.demo.synthetic OUT.h5``: (re)write the demo raw file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="raw file to write")
    args = parser.parse_args(argv)
    written = write_synthetic_raw(args.output)
    print(f"wrote {written} ({written.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
