"""Chain XMLs (Gadgetron version-2 stream configurations) as the replay reads them.

A chain is looked up by name among the shipped ones (``config/NAME.xml``, installed as the
``pogmdm_config`` package data) or given as a path. The replay needs from it: the external
node's module / target (``<execute name= target= type="python"/>``) or its ``<connect port=>``,
the external node's ``<configuration>`` element (sent verbatim as the CONFIG message, as
Gadgetron does) and the C++ gadgets before it, which the replay then performs itself.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gadgets.settings import property_entry

DEFAULT_CHAIN = "pogmdm"

#: The C++ gadgets whose work ``pogmdm-recon`` can do itself before the Python gadget.
EMULATED_GADGETS = (
    "NoiseAdjustGadget",
    "RemoveROOversamplingGadget",
    "AcquisitionAccumulateTriggerGadget",
    "BucketToBufferGadget",
)


@dataclass(frozen=True)
class UpstreamGadget:
    """A C++ gadget in the stream before the external node."""

    name: str
    classname: str
    properties: tuple[tuple[str, str], ...] = ()

    def property(self, key: str, default: str = "") -> str:
        return dict(self.properties).get(key, default)


@dataclass(frozen=True)
class ChainSpec:
    """What the replay needs from a chain XML.

    Attributes:
        name: chain name (file stem).
        path: where it was read from.
        module, target: the Python gadget (``python -m gadgetron PORT MODULE TARGET``);
            empty for a ``<connect>`` node.
        connect_port: the port of a ``<connect port=>`` node, else ``None``.
        configuration_xml: the external node's ``<configuration>`` element as text.
        upstream: the gadgets before the external node, in stream order.
    """

    name: str
    path: str
    module: str
    target: str
    connect_port: int | None
    configuration_xml: str
    upstream: tuple[UpstreamGadget, ...] = ()

    @property
    def sends_buffers(self) -> bool:
        """The Python gadget receives ReconData (a BucketToBufferGadget precedes it)."""
        return any(gadget.classname == "BucketToBufferGadget" for gadget in self.upstream)


def available_chains() -> list[str]:
    """Names of the shipped chains (``config/*.xml``)."""
    folder = resources.files("pogmdm_config")
    return sorted(p.name[: -len(".xml")] for p in folder.iterdir() if p.name.endswith(".xml"))


def chain_text(name_or_path: str) -> tuple[str, str]:
    """``(text, where)`` of a shipped chain name or a chain file path.

    Raises:
        ValueError: for an unknown name or a missing file.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".xml" or candidate.exists():
        if not candidate.is_file():
            raise ValueError(f"chain file {name_or_path!r} not found")
        try:
            return candidate.read_text(encoding="utf-8"), str(candidate)
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read chain file {candidate}: {error}") from None
    names = available_chains()
    if name_or_path not in names:
        raise ValueError(f"unknown chain {name_or_path!r}; shipped chains: {', '.join(names)}")
    resource = resources.files("pogmdm_config") / f"{name_or_path}.xml"
    return resource.read_text(encoding="utf-8"), f"pogmdm_config/{name_or_path}.xml"


def load_chain(name_or_path: str = DEFAULT_CHAIN) -> ChainSpec:
    """Parse a chain and check that the replay can run it.

    Raises:
        ValueError: naming the chain file: unreadable, malformed XML, not exactly one Python
            external node, or C++ gadgets the replay cannot perform (before the node) or does not
            run (after it).
    """
    text, where = chain_text(name_or_path)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ValueError(f"chain {where} is not valid XML: {error}") from None
    if root.tag != "configuration" or (root.findtext("version") or "").strip() != "2":
        raise ValueError(f"chain {where} is not a Gadgetron version-2 <configuration>")
    stream = root.find("stream")
    if stream is None:
        raise ValueError(f"chain {where} has no <stream>")
    nodes = list(stream)
    externals = [i for i, node in enumerate(nodes) if node.tag == "external"]
    if len(externals) != 1:
        raise ValueError(f"chain {where} must hold exactly one <external> node, found {len(externals)}")
    position = externals[0]
    external = nodes[position]
    upstream = tuple(_gadget(node, where) for node in nodes[:position])
    for gadget in upstream:
        if gadget.classname not in EMULATED_GADGETS:
            raise ValueError(
                f"chain {where}: pogmdm-recon cannot perform {gadget.classname} "
                f"(it can: {', '.join(EMULATED_GADGETS)})"
            )
    downstream = nodes[position + 1 :]
    if downstream:
        names = [node.findtext("classname") or node.tag for node in downstream]
        raise ValueError(f"chain {where}: nodes after the Python gadget are not replayed: {names}")
    module, target, port = _external_target(external, where)
    configuration = external.find("configuration")
    configuration_xml = (
        ElementTree.tostring(configuration, encoding="unicode")
        if configuration is not None
        else "<configuration/>"
    )
    return ChainSpec(
        name=Path(where).stem,
        path=where,
        module=module,
        target=target,
        connect_port=port,
        configuration_xml=configuration_xml,
        upstream=upstream,
    )


def override_properties(configuration_xml: str, overrides: dict[str, str]) -> str:
    """The ``<configuration>`` text with properties set (replaced or appended) from ``overrides``."""
    root = ElementTree.fromstring(configuration_xml)
    for key, value in overrides.items():
        for node in list(root):
            entry = property_entry(node)
            if entry is not None and entry[0] == key:
                root.remove(node)
        ElementTree.SubElement(root, "property", {"name": key, "value": value})
    return ElementTree.tostring(root, encoding="unicode")


def _gadget(node: ElementTree.Element, where: str) -> UpstreamGadget:
    if node.tag != "gadget":
        raise ValueError(f"chain {where}: pogmdm-recon cannot replay a <{node.tag}> node")
    properties = [entry for entry in map(property_entry, node) if entry is not None]
    classname = (node.findtext("classname") or "").strip()
    return UpstreamGadget(
        name=(node.findtext("name") or classname).strip(), classname=classname, properties=tuple(properties)
    )


def _external_target(external: ElementTree.Element, where: str) -> tuple[str, str, int | None]:
    execute = external.find("execute")
    connect = external.find("connect")
    if execute is not None:
        if execute.get("type", "python") != "python":
            raise ValueError(f"chain {where}: the external node is not a Python one ({execute.get('type')})")
        module, target = execute.get("name", ""), execute.get("target", "")
        if not module or not target:
            raise ValueError(f"chain {where}: <execute> needs both name= and target=")
        return module, target, None
    if connect is not None:
        try:
            return "", "", int(connect.get("port", "0"))
        except ValueError:
            raise ValueError(f"chain {where}: <connect port={connect.get('port')!r}> is not a port") from None
    raise ValueError(f"chain {where}: the external node has neither <execute> nor <connect>")
