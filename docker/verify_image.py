"""Check an installed Gadgetron environment the way Gadgetron will use it; exit 1 on any problem.

Run by the Dockerfile right after installing (so a broken image fails to build, not at the
scanner) and imported by the tests in ``tests/docker/`` for the same checks in CI:

1. pinned packages: each ``name==version`` line of the constraints file is what is installed
   (the official Gadgetron environment pins gadgetron, ismrmrd and numpy; pip must not move them);
2. torch: importable, and a CUDA build exactly when ``--torch-variant`` says ``cu*``;
3. chains: every chain XML shipped in the ``pogmdm_config`` package is installed, byte for byte,
   in Gadgetron's chain folder (``--chains-dir``), and the Python module and target named by each
   ``<external><execute type="python" .../>`` node import and exist the way
   ``python -m gadgetron PORT MODULE TARGET`` loads them: a class is instantiated without
   arguments and its ``handle(connection)`` called; any other callable is called directly.

    python verify_image.py --constraints constraints.txt --chains-dir DIR [--torch-variant cu126|cpu]

Standard library only at module level (the pinned-package and import checks import the
environment's own packages), Python >= 3.10.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib
import importlib.metadata
import importlib.resources
import inspect
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

CHAIN_PACKAGE = "pogmdm_config"


@dataclass(frozen=True)
class PythonNode:
    """One ``<external><execute type="python"/>`` node of a chain: what Gadgetron will start."""

    module: str
    target: str | None


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def python_nodes(chain_xml: Path) -> list[PythonNode]:
    """The Python nodes of a Gadgetron chain XML, in document order (any nesting depth)."""
    root = ET.parse(chain_xml).getroot()
    nodes = []
    for element in root.iter():
        if _local_name(element.tag) != "external":
            continue
        for child in element:
            if _local_name(child.tag) == "execute" and child.get("type", "python").lower() == "python":
                nodes.append(PythonNode(module=child.get("name", ""), target=child.get("target")))
    return nodes


def check_target(node: PythonNode) -> str | None:
    """Why Gadgetron could not start ``node``, or None when it could."""
    label = f"{node.module}:{node.target}"
    if not node.module:
        return "execute node without a module name"
    if not node.target:
        return f"{node.module}: execute node without a target (python -m gadgetron needs one)"
    try:
        module = importlib.import_module(node.module)
    except Exception as error:  # any import-time failure is what Gadgetron would hit
        return f"{label}: module does not import: {type(error).__name__}: {error}"
    target = getattr(module, node.target, None)
    if target is None:
        return f"{label}: module has no attribute {node.target!r}"
    if inspect.isclass(target):
        if not callable(getattr(target, "handle", None)):
            return f"{label}: class target has no handle(connection) method"
        required = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        if required:
            return f"{label}: class target must be constructible without arguments, needs {required}"
        return None
    if not callable(target):
        return f"{label}: target is neither a class nor callable"
    return None


def check_chain(chain_xml: Path) -> list[str]:
    """Problems with one chain file: unparsable XML, or Python nodes Gadgetron could not start."""
    try:
        nodes = python_nodes(chain_xml)
    except ET.ParseError as error:
        return [f"{chain_xml.name}: not well-formed XML: {error}"]
    return [f"{chain_xml.name}: {problem}" for node in nodes if (problem := check_target(node))]


def read_pins(constraints: Path) -> dict[str, str]:
    """``name==version`` lines of a pip constraints file (comments and other specifiers skipped)."""
    pins = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        spec = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)", spec)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def check_pins(pins: dict[str, str]) -> list[str]:
    """Pinned packages that are missing or at another version in this environment."""
    problems = []
    for name, wanted in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}: pinned to {wanted} but not installed")
            continue
        # PEP 440 "==": a pin without a local label (+cu126) matches any local label.
        if installed != wanted and ("+" in wanted or installed.split("+", 1)[0] != wanted):
            problems.append(f"{name}: pinned to {wanted} but {installed} is installed")
    return problems


def check_torch(variant: str | None) -> list[str]:
    """torch imports; with ``variant`` 'cpu' it is a CPU build, with 'cuNNN' a CUDA build."""
    try:
        import torch
    except Exception as error:
        return [f"torch does not import: {type(error).__name__}: {error}"]
    cuda = torch.version.cuda
    visible = torch.cuda.is_available()
    print(f"torch {torch.__version__} (CUDA build: {cuda or 'none'}; GPU visible now: {visible})")
    if variant == "cpu" and cuda:
        return [f"torch variant 'cpu' requested but torch is a CUDA {cuda} build"]
    if variant and variant.startswith("cu"):
        wanted = f"{variant[2:-1]}.{variant[-1]}"
        if cuda != wanted:
            return [f"torch variant {variant!r} requested but torch.version.cuda is {cuda!r}"]
    return []


def packaged_chains() -> list[Path]:
    """The chain XMLs shipped as package data of ``pogmdm_config`` (the repo's config/*.xml)."""
    root = importlib.resources.files(CHAIN_PACKAGE)
    return sorted(Path(str(entry)) for entry in root.iterdir() if entry.name.endswith(".xml"))


def check_installed_chains(chains: list[Path], chains_dir: Path) -> list[str]:
    """Each chain is in Gadgetron's chain folder with identical content."""
    problems = []
    for chain in chains:
        installed = chains_dir / chain.name
        if not installed.is_file():
            problems.append(f"{chain.name}: not installed in {chains_dir}")
        elif not filecmp.cmp(chain, installed, shallow=False):
            problems.append(f"{chain.name}: {installed} differs from the packaged chain")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constraints", type=Path, required=True, help="pip constraints file with the pins")
    parser.add_argument("--chains-dir", type=Path, required=True, help="Gadgetron's share/gadgetron/config")
    parser.add_argument("--torch-variant", default=None, help="cpu or cuNNN (the wheel index used)")
    args = parser.parse_args(argv)

    print(f"Python {sys.version.split()[0]} at {sys.executable}")
    problems = check_pins(read_pins(args.constraints))
    problems += check_torch(args.torch_variant)
    chains = packaged_chains()
    if not chains:
        problems.append(f"package {CHAIN_PACKAGE} ships no chain XML")
    problems += check_installed_chains(chains, args.chains_dir)
    for chain in chains:
        chain_problems = check_chain(chain)
        if not chain_problems:
            nodes = ", ".join(f"{n.module}:{n.target}" for n in python_nodes(chain))
            print(f"chain {chain.name}: {nodes or 'no Python node'}")
        problems += chain_problems

    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("image verified: pins held, torch imports, every chain installed and every Python target loads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
