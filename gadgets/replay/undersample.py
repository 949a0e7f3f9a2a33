"""Retrospective undersampling of an ISMRMRD raw file by a ky line list.

    python -m gadgets.replay.undersample FULL.h5 MASK.npy -o SUB.h5     # MASK.npy or MASK.txt
    pogmdm-recon SUB.h5 -o out.h5 --png previews/

Keeps the imaging readouts whose ``kspace_encode_step_1`` is in the pattern (a ``(NY,)`` bool
``.npy`` from ``pogmdm-design-mask``, or its ``.txt`` line list), plus every noise readout, so
that a site can try a pattern on its own fully sampled scan before it becomes a protocol. The
slice flags move with the data: FIRST_IN_SLICE goes to the first kept readout of each slice,
LAST_IN_SLICE (and LAST_IN_MEASUREMENT) to the last one. The header is copied unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ismrmrd
import numpy as np

SLICE_FLAGS = (ismrmrd.ACQ_FIRST_IN_SLICE, ismrmrd.ACQ_LAST_IN_SLICE, ismrmrd.ACQ_LAST_IN_MEASUREMENT)


def read_lines(path: Path) -> np.ndarray:
    """Acquired line indices from a ``(NY,)`` bool ``.npy`` mask or a ``.txt`` line list."""
    path = Path(path)
    if path.suffix == ".npy":
        mask = np.load(path, allow_pickle=False)
        if mask.ndim != 1 or mask.dtype != bool:
            raise ValueError(f"{path}: expected a (NY,) bool mask, got {mask.dtype} {mask.shape}")
        return np.flatnonzero(mask)
    rows = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and line[0] != "#"]
    return np.array([int(row) for row in rows], dtype=int)


def _slice_key(acquisition: ismrmrd.Acquisition) -> tuple[int, ...]:
    idx = acquisition.idx
    return (
        idx.slice,
        idx.contrast,
        idx.phase,
        idx.repetition,
        idx.set,
        idx.average,
        idx.kspace_encode_step_2,
    )


def undersample_raw(source: Path, lines: np.ndarray, target: Path, dataset: str = "dataset") -> int:
    """Write ``target`` with the readouts of ``source`` on ``lines`` only; returns how many
    imaging readouts were kept.

    Raises:
        ValueError: where no imaging readout is on the listed lines.
    """
    wanted = {int(line) for line in lines}
    reader = ismrmrd.Dataset(str(source), dataset, False)
    try:
        header = reader.read_xml_header()
        kept = []
        for number in range(reader.number_of_acquisitions()):
            acquisition = reader.read_acquisition(number)
            noise = acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            if noise or acquisition.idx.kspace_encode_step_1 in wanted:
                kept.append((noise, acquisition))
    finally:
        reader.close()
    imaging = [acquisition for noise, acquisition in kept if not noise]
    if not imaging:
        raise ValueError(f"{source}: no imaging readout on the {len(wanted)} listed lines")
    measurement_end = imaging[-1]
    first: dict[tuple[int, ...], ismrmrd.Acquisition] = {}
    last: dict[tuple[int, ...], ismrmrd.Acquisition] = {}
    for acquisition in imaging:
        first.setdefault(_slice_key(acquisition), acquisition)
        last[_slice_key(acquisition)] = acquisition
    for acquisition in imaging:
        for flag in SLICE_FLAGS:
            acquisition.clear_flag(flag)
    for acquisition in first.values():
        acquisition.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
    for acquisition in last.values():
        acquisition.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    measurement_end.set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    writer = ismrmrd.Dataset(str(target), dataset, True)
    try:
        writer.write_xml_header(header)
        for _noise, acquisition in kept:
            writer.append_acquisition(acquisition)
    finally:
        writer.close()
    return len(imaging)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("raw", type=Path, help="fully sampled ISMRMRD raw file")
    parser.add_argument("pattern", type=Path, help="MASK.npy or MASK.txt from pogmdm-design-mask")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--dataset", default="dataset")
    args = parser.parse_args(argv)
    kept = undersample_raw(args.raw, read_lines(args.pattern), args.output, args.dataset)
    print(f"wrote {args.output}: {kept} imaging readouts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
