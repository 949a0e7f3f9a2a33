"""3D Cartesian slabs: hybrid-space reconstruction, one image per partition, partition headers.

The synthetic slab has 4 partitions, each a different 2D pattern (the phantom turned by a
quarter turn per partition), ky undersampled by 2 with 8 calibration lines. The gadget used to
average every partition's lines into one 2D image (relative error 0.72 against the partitions);
now every partition must match its own ground truth (relative error below 0.12; measured
0.052-0.066) and differ from every other partition's (above 0.5; measured 0.54-0.94), which no
single averaged image can do. 3D readouts under a 2D header are refused before any compute.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from gadget_helpers import read_raw, replay_acquisitions
from test_gadget_wire import CHILD_ENV, ITERATIONS, PRIOR, listen_leaks_its_socket, normalised_error, pixels

from gadgets.assembly import SliceAssembler, assemble, check_sampling
from gadgets.demo.synthetic import SyntheticScan, header_xml, partition_object, write_synthetic_raw
from gadgets.encoding import EncodingInfo, encoding_from_header, parse_header
from gadgets.pogmdm_gadget import run_gadget
from gadgets.readout import crop_or_pad
from gadgets.slices import SliceData
from recon_core.sim.phantom import birdcage_coil_maps

SLAB = SyntheticScan(matrix=32, coils=4, acceleration=2, calibration_lines=8, partitions=4)
PROPERTIES: dict[str, str | None] = {"iterations": str(ITERATIONS), "device": "cpu", "prior": PRIOR}


@pytest.fixture(scope="module")
def slab(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[ismrmrd.Acquisition]]:
    return read_raw(write_synthetic_raw(tmp_path_factory.mktemp("slab") / "slab.h5", SLAB))


def truth(scan: SyntheticScan, partition: int) -> np.ndarray:
    """What a magnitude reconstruction of partition ``partition`` should show: the object
    weighted by the root sum of squares of the coil maps, on the recon grid."""
    maps = birdcage_coil_maps(scan.coils, scan.matrix, scan.matrix * scan.oversampling)
    rss = crop_or_pad(maps.abs().pow(2).sum(dim=0).sqrt(), scan.matrix, dim=-1)
    return (partition_object(scan.matrix, partition) * rss).numpy().astype(np.float64)


def _slice_data(encoding: EncodingInfo, acquisitions: list[ismrmrd.Acquisition]) -> SliceData:
    assembler = SliceAssembler(encoding)
    finished = [data for data in map(assembler.add, acquisitions) if data is not None]
    (data,) = finished + assembler.flush()
    return data


@listen_leaks_its_socket
def test_each_partition_is_reconstructed_as_its_own_image(
    slab: tuple[bytes, list[ismrmrd.Acquisition]],
) -> None:
    header, acquisitions = slab
    outcome = replay_acquisitions(header, acquisitions, mode="connect", properties=PROPERTIES, env=CHILD_ENV)
    assert outcome.ok, outcome.errors
    indices = [(i.image_series_index, i.image_index, i.slice) for i in outcome.images]
    assert indices == [(1, 1, 0), (1, 2, 1), (1, 3, 2), (1, 4, 3)]
    truths = [truth(SLAB, partition) for partition in range(SLAB.partitions)]
    for partition, image in enumerate(outcome.images):
        assert tuple(image.matrix_size) == (32, 32, 1)
        # One partition thick, centred (partition - 4 // 2) thicknesses along the slice direction.
        assert tuple(image.field_of_view) == pytest.approx((240.0, 240.0, 5.0))
        assert tuple(image.slice_dir) == pytest.approx((0.0, 0.0, 1.0))
        assert tuple(image.position) == pytest.approx((0.0, 0.0, 5.0 * (partition - 2)))
        meta = ismrmrd.Meta.deserialize(image.attribute_string)
        assert (int(meta["PogmdmSlab"]), int(meta["PogmdmPartition"])) == (0, partition)
        errors = [normalised_error(pixels(image), reference) for reference in truths]
        assert errors[partition] < 0.12, errors
        assert min(error for other, error in enumerate(errors) if other != partition) > 0.5, errors


def flaky_partition_target(connection: object) -> None:
    """The real reconstruction, except that the partition at the slab centre fails."""
    from recon_core.recon.reconstruction import reconstruct

    def flaky(kspace: object, config: object, **options: object) -> object:
        if kspace.geometry.position[2] == 0.0:  # type: ignore[attr-defined]
            raise RuntimeError("simulated solver failure")
        return reconstruct(kspace, config, **options)  # type: ignore[arg-type]

    run_gadget(connection, "acquisitions", reconstruct=flaky)


@listen_leaks_its_socket
def test_a_failing_partition_is_named_and_the_others_come_back(
    slab: tuple[bytes, list[ismrmrd.Acquisition]],
) -> None:
    header, acquisitions = slab
    outcome = replay_acquisitions(
        header,
        acquisitions,
        mode="connect",
        properties=PROPERTIES,
        module=__name__,
        target="flaky_partition_target",
    )
    assert not outcome.ok and outcome.exit_code == 1
    assert [(i.image_index, i.slice) for i in outcome.images] == [(1, 0), (2, 1), (3, 3)]
    assert outcome.errors[0] == (
        "pogmdm: slice 0 contrast 0 phase 0 repetition 0 set 0 partition 2 failed: "
        "RuntimeError: simulated solver failure"
    )


@listen_leaks_its_socket
def test_3d_readouts_under_a_2d_header_are_refused_and_named(tmp_path: Path) -> None:
    """Slice 0 carries 4 kz values under a header with matrix z 1: refused. Slice 1 holds one
    kz plane only, a consistent 2D slice: reconstructed."""
    scan = dataclasses.replace(SLAB, matrix=16, coils=2, calibration_lines=4, slices=2)
    _, acquisitions = read_raw(write_synthetic_raw(tmp_path / "slabs.h5", scan))
    two_d_header = header_xml(dataclasses.replace(scan, partitions=1)).encode()
    stream = []
    for acquisition in acquisitions:
        if acquisition.idx.slice == 1 and not acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            if acquisition.idx.kspace_encode_step_2 != 2:
                continue
            acquisition.idx.kspace_encode_step_2 = 0
        stream.append(acquisition)
    stream[-1].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    outcome = replay_acquisitions(two_d_header, stream, mode="connect", properties=PROPERTIES)
    assert not outcome.ok and outcome.exit_code == 1
    assert [(i.slice, i.image_index) for i in outcome.images] == [(1, 1)]
    assert outcome.errors[0] == (
        "pogmdm: slice 0 contrast 0 phase 0 repetition 0 set 0: its readouts carry 4 partition "
        "encodings (kspace_encode_step_2 0, 1, 2, 3) but the header's encoded matrix z is 1: "
        "inconsistent 3D data, not reconstructed"
    )


def test_partitions_follow_the_recon_space_z(slab: tuple[bytes, list[ismrmrd.Acquisition]]) -> None:
    """Slab oversampling is cut to the recon field of view z; a finer recon z interpolates."""
    header, acquisitions = slab
    encoding = encoding_from_header(parse_header(header))
    assert encoding.is_3d and encoding.kz_centre == 2 and encoding.partition_grid() == (4, 4, 5.0)
    data = _slice_data(encoding, acquisitions)
    check_sampling(data, encoding)
    full = assemble(data, encoding)
    assert [(a.partition.index, a.partition.offset_mm) for a in full if a.partition] == [
        (0, -10.0),
        (1, -5.0),
        (2, 0.0),
        (3, 5.0),
    ]
    # Recon FOV z covers the central 2 of the 4 encoded partitions.
    central = dataclasses.replace(encoding, recon_matrix=(32, 32, 2), recon_fov_mm=(240.0, 240.0, 10.0))
    assert central.partition_grid() == (4, 2, 5.0)
    for assembled, reference in zip(assemble(data, central), full[1:3], strict=True):
        assert assembled.partition is not None and reference.partition is not None
        assert assembled.partition.offset_mm == reference.partition.offset_mm
        assert assembled.kspace.geometry.position == reference.kspace.geometry.position
        assert torch.allclose(assembled.kspace.kspace, reference.kspace.kspace)
    # Half the partition thickness: kz zero-padded to 8 planes; every other partition is an
    # encoded one, with the same noise level per sample (whitened data stay whitened).
    fine = dataclasses.replace(encoding, recon_matrix=(32, 32, 8))
    assert fine.partition_grid() == (8, 8, 2.5)
    interpolated = assemble(data, fine)
    for index, reference in enumerate(full):
        assert interpolated[2 * index].kspace.geometry.position == reference.kspace.geometry.position
        assert torch.allclose(interpolated[2 * index].kspace.kspace, reference.kspace.kspace, atol=1e-5)


def test_3d_sampling_with_kz_gaps_or_one_plane_is_refused(
    slab: tuple[bytes, list[ismrmrd.Acquisition]],
) -> None:
    header, acquisitions = slab
    encoding = encoding_from_header(parse_header(header))
    imaging = [a for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    gaps = [a for a in imaging if a.idx.kspace_encode_step_2 != 1]
    with pytest.raises(ValueError, match=r"set 0: line ky 0 is acquired at kz 0, 2, 3, with gaps"):
        check_sampling(_slice_data(encoding, gaps), encoding)
    one_plane = [a for a in imaging if a.idx.kspace_encode_step_2 == 2]
    with pytest.raises(
        ValueError, match=r"only 1 distinct partition encoding\(s\) \(kz 2\) of a 4-partition"
    ):
        check_sampling(_slice_data(encoding, one_plane), encoding)
