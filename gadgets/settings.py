"""The external node's ``<configuration>`` properties, parsed into typed settings.

Gadgetron sends the ``<configuration>`` element of the chain's ``<external>`` node to the Python
process as the CONFIG message. Its ``<property>`` children (either ``<property name="k"
value="v"/>`` or ``<property><name>k</name><value>v</value></property>``) are read here:

* ``preset`` picks a shipped preset (``config/presets/NAME.yaml``) as the base;
* every :class:`recon_core.recon.config.ReconConfig` field (``method``, ``device``, ``num_chains``,
  ``seed``, ...) and the short aliases in :data:`ALIASES` override it;
* the gadget-only properties in :data:`GADGET_PROPERTIES` control the output.

An unknown property, a duplicate or a bad value raises :class:`ValueError` naming it.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from recon_core.recon.config import ReconConfig, config_from_mapping, load_preset, parse_bool

T = TypeVar("T")

DEFAULT_PRESET = "fast"

#: Short property names accepted beside the ``ReconConfig`` field names.
ALIASES: dict[str, str] = {
    "chains": "num_chains",
    "steps": "steps_per_level",
    "levels": "num_noise_levels",
    "iterations": "map_iterations",
}

#: Properties read by the gadget itself (not reconstruction settings), with their meaning.
GADGET_PROPERTIES: dict[str, str] = {
    "preset": f"base preset name (default {DEFAULT_PRESET!r})",
    "output_variance": "also send the posterior std map as its own series "
    "(needs method posterior, posterior_pc or jackknife)",
    "image_series": "image_series_index of the reconstructed images (default 1)",
    "parallel_slices": "slices reconstructed at the same time, each on its share of the CPU threads "
    "(0, the default: 1 on a GPU, on a CPU the torch threads up to 4); images still leave in order",
    "batch_slices": "the most slices solved as one batch when they are waiting together (0, the default: "
    "8 on a GPU, 1 on a CPU); method map only, other methods solve each slice alone; images still "
    "leave in order",
    "std_series": "image_series_index of the std maps (default 2)",
    "prior": "image prior: a shipped prior's name (conv, shearlet), a PoGMDM weights file (.safetensors; "
    "pickles are refused) or MODULE:NAME of a prior class or factory (it must give a prior, never None); "
    "default: the shipped shearlet prior",
}


@dataclass(frozen=True)
class GadgetSettings:
    """Everything the gadget needs from its ``<configuration>``.

    Attributes:
        recon: the reconstruction settings handed to ``recon_core``.
        preset: the preset they started from.
        output_variance: send the posterior std map as a second series.
        image_series: ``image_series_index`` of the images.
        std_series: ``image_series_index`` of the std maps.
        prior: the image prior: a weights file, ``MODULE:NAME`` of a prior class / factory (called
            without arguments), or ``""`` for the shipped default.
        properties: the raw properties as received (for the image comments).
        parallel_slices: slices reconstructed at once (0: auto, see
            :func:`gadgets.pipeline.auto_workers`).
        batch_slices: the most slices in one batch (0: auto, see
            :func:`gadgets.pipeline.auto_batch`); more than 1 excludes ``parallel_slices`` above 1.
    """

    recon: ReconConfig
    preset: str = DEFAULT_PRESET
    output_variance: bool = False
    image_series: int = 1
    std_series: int = 2
    prior: str = ""
    properties: tuple[tuple[str, str], ...] = ()
    parallel_slices: int = 0
    batch_slices: int = 0

    def __post_init__(self) -> None:
        if self.output_variance and self.recon.method not in ("posterior", "posterior_pc", "jackknife"):
            raise ValueError(
                "output_variance=true needs method 'posterior', 'posterior_pc' or 'jackknife' "
                "(the MAP mode has no std map); "
                f"preset {self.preset!r} gives method {self.recon.method!r}"
            )
        for name in ("image_series", "std_series"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(
                    f"{name} must fit an unsigned 16-bit series index, got {getattr(self, name)}"
                )
        if self.parallel_slices < 0:
            raise ValueError(f"parallel_slices must be >= 0 (0: auto), got {self.parallel_slices}")
        if self.batch_slices < 0:
            raise ValueError(f"batch_slices must be >= 0 (0: auto), got {self.batch_slices}")
        if self.batch_slices > 1 and self.parallel_slices > 1:
            raise ValueError(
                f"batch_slices={self.batch_slices} and parallel_slices={self.parallel_slices}: choose one "
                "(a batch runs on one worker; set the other to 0 or 1)"
            )
        if self.output_variance and self.image_series == self.std_series:
            raise ValueError(f"image_series and std_series must differ, both are {self.image_series}")


def property_entry(node: ElementTree.Element) -> tuple[str, str] | None:
    """``(name, value)`` of a ``<property>`` element, or ``None`` for any other element.

    The one reader of Gadgetron's two property forms (the gadget's ``<configuration>`` and the
    chains' gadgets alike): ``<property name="N" value="V"/>`` and
    ``<property><name>N</name><value>V</value></property>`` (children win over attributes;
    namespaces are ignored). The value is stripped; a missing name or value is ``""``.
    """
    if _local_name(node.tag) != "property":
        return None
    name = node.get("name")
    value = node.get("value")
    for child in node:
        if _local_name(child.tag) == "name":
            name = (child.text or "").strip()
        elif _local_name(child.tag) == "value":
            value = child.text or ""
    return name or "", (value or "").strip()


def properties_from_xml(configuration: ElementTree.Element | None) -> dict[str, str]:
    """``{name: value}`` of the ``<property>`` children of a ``<configuration>`` element.

    Only direct children count (a full chain document is not mistaken for a configuration).

    Raises:
        ValueError: for a property without a name or a name given twice.
    """
    if configuration is None:
        return {}
    properties: dict[str, str] = {}
    for node in configuration:
        entry = property_entry(node)
        if entry is None:
            continue
        name, value = entry
        if not name:
            raise ValueError(
                f"a <property> without a name in the configuration: {ElementTree.tostring(node)!r}"
            )
        if name in properties:
            raise ValueError(f"property {name!r} is given twice in the configuration")
        properties[name] = value
    return properties


def settings_from_properties(properties: Mapping[str, str]) -> GadgetSettings:
    """Turn ``<configuration>`` properties into :class:`GadgetSettings`.

    Raises:
        ValueError: naming an unknown property or a bad value.
    """
    values = dict(properties)
    preset = values.pop("preset", DEFAULT_PRESET) or DEFAULT_PRESET
    output_variance = _gadget_value(values, "output_variance", parse_bool, False)
    image_series = _gadget_value(values, "image_series", int, 1)
    std_series = _gadget_value(values, "std_series", int, 2)
    prior = values.pop("prior", "")
    parallel_slices = _gadget_value(values, "parallel_slices", int, 0)
    batch_slices = _gadget_value(values, "batch_slices", int, 0)
    overrides: dict[str, str] = {}
    known = {field.name for field in dataclasses.fields(ReconConfig)}
    for name, value in values.items():
        key = ALIASES.get(name, name)
        if key not in known:
            accepted = sorted(known | set(ALIASES) | set(GADGET_PROPERTIES))
            raise ValueError(f"unknown property {name!r}; accepted: {', '.join(accepted)}")
        if key in overrides:
            raise ValueError(f"property {name!r} repeats {key!r}")
        overrides[key] = value
    recon = config_from_mapping(overrides, base=load_preset(preset))
    return GadgetSettings(
        recon=recon,
        preset=preset,
        output_variance=output_variance,
        image_series=image_series,
        std_series=std_series,
        prior=prior,
        properties=tuple(sorted(properties.items())),
        parallel_slices=parallel_slices,
        batch_slices=batch_slices,
    )


def settings_from_xml(configuration: ElementTree.Element | None) -> GadgetSettings:
    """:func:`settings_from_properties` of :func:`properties_from_xml`."""
    return settings_from_properties(properties_from_xml(configuration))


def _gadget_value(values: dict[str, str], name: str, convert: Callable[[str], T], default: T) -> T:
    if name not in values:
        return default
    raw = values.pop(name)
    try:
        return convert(raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"bad value {raw!r} for property {name!r}: {error}") from None


def _local_name(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]
