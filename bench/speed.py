"""Speed benchmark: seconds per slice and peak memory of PoGMDM against BART on the same k-space.

Not a test (nothing here runs under pytest). Run from the repository root::

    python bench/speed.py                                   # every row (many minutes on CPU)
    python bench/speed.py --presets fast --threads 1 --slices berkeley
    python bench/speed.py --presets fast,balanced --threads 2 --peers pics
    python bench/speed.py --presets fast --virtual-coils 0,8 --slices synthetic   # coil compression
    python bench/speed.py --presets fast --peers pics --batch 1,8         # slices solved as one batch

Slices: ``berkeley``, the fully sampled Berkeley 8-coil brain (230 x 180, from
``../shared/data/berkeley_brain8ch``) undersampled with ``bench/quality.py``'s mask (``--mask``,
default (a): 1D random R=4, 8 % centre); ``synthetic``, a 256 x 256 Shepp-Logan phantom seen
by 32 birdcage coils with complex noise, equispaced R=4 + 24 calibration lines.

Rows: PoGMDM presets (``fast``, ``balanced``, ``quality`` by default; ``posterior_pc`` and
``jackknife`` on request) and the peers BART ``ecalib`` +
``pics -l1`` (``pics``, ESPIRiT included in its time) and BART ``nlinv`` (``nlinv``), each on
1 and 2 CPU threads (``--threads``) and on CUDA when present (``--devices``). Every row runs in
its own child process, so its thread count (``OMP_NUM_THREADS`` and ``torch.set_num_threads``)
and its peak memory are its own; every row (BART's OpenMP too) gets the plugin's libgomp
setting, ``GOMP_SPINCOUNT=10000`` (``recon_core.SPIN_COUNT``; see ``recon_core/__init__.py``),
unless ``--wait-policy`` sets ``OMP_WAIT_POLICY`` instead (``PASSIVE``: idle threads sleep at
once; ``ACTIVE``: they spin).
PoGMDM's time is one ``reconstruct`` call with the prior already loaded (the gadget loads it
once per connection); the first slice of a process, so
the prior's per-level tables are built inside it, as they are for every slice of a scan whose
noise level differs between slices.

``--batch N`` rows reconstruct ``N`` slices in one ``recon_core.recon.batch.reconstruct_batch``
call (what the gadget does on a GPU with the slices waiting together) and report the time per
slice (the call's time / ``N``). The slices are the chosen slice with independent complex noise
added to all but the first (std ``0.25 b`` times the slice's own noise estimate for slice ``b``),
so each has its own noise level and schedule, as the slices of a scan do.

Memory: the peak resident set size of the child process (``ru_maxrss``: Python, torch and the
data included); for BART the largest peak of its calls (``ecalib``, ``pics``), each measured by
``/usr/bin/time``; on CUDA also ``torch.cuda.max_memory_allocated``. A CUDA row first runs one
untimed reconstruction (CUDA's start-up: context, cuFFT plans, kernels; a series pays it once)
and prints its time apart. The machine may be shared: the 1-minute load average is recorded
before and after every row (a load above the number of cores means the row competed
for them), and the CPU seconds of every row are printed beside its wall time: on a busy machine
the CPU time of a 1-thread row is close to its wall time on an idle core. Prints a Markdown
table with the ratio of every row's times to ``pics`` on the same slice and threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from recon_core import SPIN_COUNT  # noqa: E402  (no torch: the package's top only sets the environment)

PRESETS = ("fast", "balanced", "quality", "posterior_pc", "jackknife")
DEFAULT_PRESETS = ("fast", "balanced", "quality")
PEERS = ("pics", "nlinv")
SLICES = ("berkeley", "synthetic")
PICS_REGULARISATION = 1e-3  # the middle of bench/quality.py's grid
ESPIRIT_CROP = 0.5
NLINV_ITERATIONS = 10  # bench/quality.py's quick grid
SYNTHETIC_SIZE = 256
SYNTHETIC_COILS = 32
SYNTHETIC_NOISE = 2e-3  # complex noise std per k-space sample, relative to the image maximum


# ----------------------------------------------------------------------------- data
def berkeley_slice(mask_key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(kspace (C, ky, kx) complex64 zero where not sampled, mask (ky, kx) bool)``."""
    from quality import DATA, MASKS, load_kspace

    kspace = load_kspace(DATA)
    mask = MASKS[mask_key][1]((kspace.shape[1], kspace.shape[2])).numpy()
    return (kspace * mask).astype(np.complex64), mask


def synthetic_slice() -> tuple[np.ndarray, np.ndarray]:
    """A ``256 x 256`` 32-coil phantom slice (smooth object phase, seeded noise), R=4 + 24 ACS."""
    import torch

    from recon_core.physics.operators import FFT2Operator
    from recon_core.sim.masks import equispaced_lines_mask
    from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan

    size = SYNTHETIC_SIZE
    image = shepp_logan(size).to(torch.complex64)
    y = torch.linspace(-1.0, 1.0, size)[:, None]
    x = torch.linspace(-1.0, 1.0, size)[None, :]
    image = image * torch.polar(torch.ones(size, size), 0.8 * x + 0.5 * y**2)
    coils = birdcage_coil_maps(SYNTHETIC_COILS, size, size)
    kspace = FFT2Operator().forward(coils * image)
    generator = torch.Generator().manual_seed(0)
    noise = torch.complex(
        torch.randn(kspace.shape, generator=generator), torch.randn(kspace.shape, generator=generator)
    )
    kspace = kspace + SYNTHETIC_NOISE * float(image.abs().max()) / 2**0.5 * noise
    mask = equispaced_lines_mask((size, size), 4, 24)
    return (kspace * mask).numpy().astype(np.complex64), mask.numpy()


def load_slice(name: str, mask_key: str) -> tuple[np.ndarray, np.ndarray]:
    return berkeley_slice(mask_key) if name == "berkeley" else synthetic_slice()


# ----------------------------------------------------------------------------- one row (child)
def _cpu_seconds(who: int) -> float:
    """User + system CPU seconds of this process or of its waited-for children (``who``)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: kilobytes


def series_copies(kspace: np.ndarray, mask: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` slices: ``kspace`` and copies with seeded complex noise of std ``0.25 b`` times
    its noise estimate added where sampled (slice ``b``); see the module docstring."""
    import torch

    from recon_core.physics.noise_estimation import estimate_noise_std

    sigma = estimate_noise_std(torch.from_numpy(kspace), torch.from_numpy(mask))
    generator = np.random.default_rng(0)
    copies = [kspace]
    for index in range(1, count):
        noise = generator.standard_normal(kspace.shape) + 1j * generator.standard_normal(kspace.shape)
        copies.append((kspace + 0.25 * index * sigma * noise * mask).astype(np.complex64))
    return copies


def run_pogmdm(
    preset: str,
    device_name: str,
    kspace: np.ndarray,
    mask: np.ndarray,
    overrides: dict[str, str],
    batch: int = 1,
) -> dict[str, object]:
    import dataclasses

    import torch

    from recon_core.physics.kspace import KSpaceSlice
    from recon_core.prior import load_inference_prior
    from recon_core.recon.batch import reconstruct_batch
    from recon_core.recon.config import config_from_mapping, load_preset
    from recon_core.recon.device import resolve_device
    from recon_core.recon.reconstruction import reconstruct

    device = resolve_device(device_name)
    config = dataclasses.replace(config_from_mapping(overrides, load_preset(preset)), device=str(device))
    prior = load_inference_prior("", device)
    series = [
        KSpaceSlice(kspace=torch.from_numpy(copy), mask=torch.from_numpy(mask))
        for copy in series_copies(kspace, mask, batch)
    ]
    warmup = 0.0
    if device.type == "cuda":
        # A scanner's series pays CUDA's start (context, cuFFT plans, kernels) once, on its first
        # slice: one untimed reconstruction first, its time reported apart.
        warmup_start = time.perf_counter()
        reconstruct(series[0], config, prior)
        torch.cuda.synchronize(device)
        warmup = time.perf_counter() - warmup_start
        torch.cuda.reset_peak_memory_stats(device)
    start, cpu_start = time.perf_counter(), _cpu_seconds(resource.RUSAGE_SELF)
    if batch == 1:
        images = [reconstruct(series[0], config, prior).image.cpu()]
    else:
        results = reconstruct_batch(series, config, prior)
        failed = [result for result in results if isinstance(result, Exception)]
        if failed:
            raise failed[0]
        images = [result.image.cpu() for result in results]  # type: ignore[union-attr]
    seconds = time.perf_counter() - start
    row: dict[str, object] = {
        "seconds": seconds / batch,
        "cpu_seconds": (_cpu_seconds(resource.RUSAGE_SELF) - cpu_start) / batch,
        "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF),
    }
    image = torch.stack(images)
    if device.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["warmup_seconds"] = warmup
    row["finite"] = bool(torch.isfinite(image).all())
    return row


def _measured_bart(folder: Path) -> Path:
    """Put a ``bart`` first on the ``PATH`` that runs the real one under ``/usr/bin/time``.

    ``ru_maxrss`` of this process's children would count this Python process's own memory
    (Linux keeps the pre-``exec`` peak of a forked child), so each BART call's peak RSS is
    appended by ``time`` (KB) to the returned file instead.
    """
    real = shutil.which("bart")
    if real is None:
        raise RuntimeError("bart is not on the PATH (Debian package 'bart')")
    log = folder / "bart_peak_kb.txt"
    shim = folder / "bart"
    shim.write_text(f'#!/bin/sh\nexec /usr/bin/time -a -o "{log}" -f %M "{real}" "$@"\n')
    shim.chmod(0o755)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"
    return log


def run_peer(peer: str, kspace: np.ndarray) -> dict[str, object]:
    from peers import bart_nlinv, bart_pics_l1, espirit_maps

    folder = Path(tempfile.mkdtemp(prefix="speed_bart_"))
    log = _measured_bart(folder)
    start, cpu_start = time.perf_counter(), _cpu_seconds(resource.RUSAGE_CHILDREN)
    if peer == "pics":
        maps = espirit_maps(kspace, crop=ESPIRIT_CROP)
        image = bart_pics_l1(kspace, maps, PICS_REGULARISATION)
    else:
        image = bart_nlinv(kspace, NLINV_ITERATIONS)
    seconds = time.perf_counter() - start
    peak_kb = max(int(line) for line in log.read_text().split() if line.isdigit())
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_start,
        "peak_rss_mb": peak_kb / 1024.0,
        "finite": bool(np.isfinite(image).all()),
    }


def child_main(spec: dict[str, object]) -> None:
    """Run one row (``spec``: method, slice, mask, threads, device) and print its JSON."""
    threads = int(spec["threads"])  # type: ignore[arg-type]
    import torch

    torch.set_num_threads(threads)
    kspace, mask = load_slice(str(spec["slice"]), str(spec["mask"]))
    method = str(spec["method"])
    if method in PEERS:
        row = run_peer(method, kspace)
    else:
        overrides = spec["overrides"]
        batch = int(spec.get("batch", 1))  # type: ignore[call-overload]
        row = run_pogmdm(method, str(spec["device"]), kspace, mask, overrides, batch)  # type: ignore[arg-type]
    print("ROW " + json.dumps(row), flush=True)


# ----------------------------------------------------------------------------- driver
def run_row(spec: dict[str, object], timeout: float) -> dict[str, object]:
    threads = str(spec["threads"])
    environment = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environment[name] = threads
    environment.pop("OMP_WAIT_POLICY", None)
    environment.pop("GOMP_SPINCOUNT", None)
    if spec["wait_policy"]:
        environment["OMP_WAIT_POLICY"] = str(spec["wait_policy"])
    else:  # what the plugin sets; the child imports torch before recon_core could set it
        environment["GOMP_SPINCOUNT"] = SPIN_COUNT
    paths = [str(REPO), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    load_before = os.getloadavg()[0]
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        completed = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        load = (load_before, os.getloadavg()[0])
        return {**spec, "error": f"timed out after {timeout:.0f} s", "load": load}
    rows = [line[4:] for line in completed.stdout.splitlines() if line.startswith("ROW ")]
    if completed.returncode != 0 or not rows:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {**spec, "error": tail[0][:200], "load": (load_before, os.getloadavg()[0])}
    return {**spec, **json.loads(rows[-1]), "load": (load_before, os.getloadavg()[0])}


def markdown_table(rows: list[dict[str, object]]) -> str:
    def key(row: dict[str, object]) -> tuple[object, ...]:
        return (row["slice"], row["threads"])

    # The peers run on the CPU only: a CUDA row is compared with pics on as many CPU threads.
    pics = {key(row): row for row in rows if row["method"] == "pics" and "seconds" in row}
    lines = [
        "| slice | device | threads | method | s / slice | x pics | CPU s | x pics (CPU) | peak RSS (MB) "
        "| CUDA peak (MB) | load 1 min |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        load = "{:.1f} -> {:.1f}".format(*row["load"])  # type: ignore[str-format]
        label = {"pics": "BART ecalib + pics-l1", "nlinv": "BART nlinv"}.get(str(row["method"]))
        label = label or f"PoGMDM {row['method']}"
        if int(row.get("virtual_coils", 0)):  # type: ignore[arg-type]
            label += f", {row['virtual_coils']} virtual coils"
        if int(row.get("batch", 1)) > 1:  # type: ignore[arg-type]
            label += f", batch of {row['batch']} (time per slice)"
        prefix = f"| {row['slice']} | {row['device']} | {row['threads']} | {label} |"
        if "error" in row:
            lines.append(f"{prefix} failed: {row['error']} | | | | | | {load} |")
            continue
        seconds, cpu = float(row["seconds"]), float(row["cpu_seconds"])  # type: ignore[arg-type]
        reference = pics.get(key(row))
        ratio = f"{seconds / float(reference['seconds']):.1f}" if reference else "-"  # type: ignore[arg-type]
        cpu_ratio = f"{cpu / float(reference['cpu_seconds']):.1f}" if reference else "-"  # type: ignore[arg-type]
        cuda = f"{row['cuda_peak_mb']:.0f}" if "cuda_peak_mb" in row else "-"
        lines.append(
            f"{prefix} {seconds:.2f} | {ratio} | {cpu:.2f} | {cpu_ratio} | {row['peak_rss_mb']:.0f} | {cuda} "
            f"| {load} |"
        )
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", default=",".join(DEFAULT_PRESETS), help=f"PoGMDM presets out of {PRESETS} ('' for none)"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="subset of pics,nlinv ('' for none)")
    parser.add_argument("--slices", default=",".join(SLICES), help="subset of berkeley,synthetic")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts")
    parser.add_argument("--devices", default="auto", help="'auto' (cpu, and cuda when present), or cpu,cuda")
    parser.add_argument("--mask", default="a", help="bench/quality.py mask of the Berkeley slice")
    parser.add_argument(
        "--wait-policy",
        default="",
        help="OMP_WAIT_POLICY of every row, BART's included ('': the plugin's GOMP_SPINCOUNT instead)",
    )
    parser.add_argument(
        "--virtual-coils",
        default="",
        help="comma-separated virtual coil counts, one PoGMDM row each (0: every coil; see ReconConfig)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every PoGMDM row",
    )
    parser.add_argument(
        "--batch",
        default="1",
        help="comma-separated slices per reconstruct_batch call, one PoGMDM row each (1: reconstruct)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per row")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def listed(text: str, allowed: tuple[str, ...]) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        for item in items:
            if item not in allowed:
                parser.error(f"unknown value {item!r}: choose from {','.join(allowed)}")
        return items

    args.presets = listed(args.presets, PRESETS)
    args.peers = listed(args.peers, PEERS)
    args.slices = listed(args.slices, SLICES)
    args.threads = [int(item) for item in args.threads.split(",") if item.strip()]
    args.batch = [int(item) for item in args.batch.split(",") if item.strip()] or [1]
    overrides = dict(item.split("=", 1) for item in args.set)
    counts = [item.strip() for item in args.virtual_coils.split(",") if item.strip()]
    # One settings mapping per PoGMDM row variant: the --set values, each virtual coil count on top.
    args.variants = [{**overrides, "virtual_coils": count} for count in counts] or [overrides]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.child is not None:
        child_main(json.loads(args.child))
        return
    import torch

    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [item.strip() for item in args.devices.split(",") if item.strip()]
    specs: list[dict[str, object]] = []
    for slice_name in args.slices:
        for device in devices:
            # One CPU thread count for CUDA rows (the host only feeds the GPU); peers are CPU only.
            thread_counts = args.threads if device == "cpu" else args.threads[:1]
            for threads in thread_counts:
                methods = ([*args.peers] if device == "cpu" else []) + args.presets
                for method in methods:
                    spec = {"method": method, "slice": slice_name, "mask": args.mask}
                    spec.update(threads=threads, device=device, wait_policy=args.wait_policy)
                    variants = args.variants if method in PRESETS else [{}]
                    batches = args.batch if method in PRESETS else [1]
                    for variant in variants:
                        coils = int(variant.get("virtual_coils", 0))
                        for batch in batches:
                            specs.append(
                                {**spec, "overrides": variant, "virtual_coils": coils, "batch": batch}
                            )
    print(
        f"{len(specs)} rows on {os.cpu_count()} cores; load average {os.getloadavg()}; "
        + (f"OMP_WAIT_POLICY={args.wait_policy}" if args.wait_policy else f"GOMP_SPINCOUNT={SPIN_COUNT}"),
        flush=True,
    )
    rows = []
    for spec in specs:
        row = run_row(spec, args.timeout)
        rows.append(row)
        shown = f"{row['seconds']:.2f} s, {row['peak_rss_mb']:.0f} MB" if "seconds" in row else row["error"]
        if "warmup_seconds" in row:
            shown += f" (after a {row['warmup_seconds']:.1f} s warm-up)"
        coils = f" ({spec['virtual_coils']} virtual coils)" if spec["virtual_coils"] else ""
        coils += f" (batch of {spec['batch']}, per slice)" if int(spec["batch"]) > 1 else ""  # type: ignore[call-overload]
        where = f"{spec['slice']} {spec['device']} x{spec['threads']}"
        print(f"  {where} {spec['method']}{coils}: {shown}", flush=True)
    print()
    print(markdown_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
