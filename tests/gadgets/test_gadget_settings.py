"""Gadget properties -> typed settings, and the shipped chain XMLs."""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from gadgets.replay.chains import available_chains, chain_text, load_chain, override_properties
from gadgets.settings import properties_from_xml, settings_from_properties, settings_from_xml
from recon_core.recon.config import load_preset


def _configuration(text: str) -> ElementTree.Element:
    return ElementTree.fromstring(text)


def test_both_property_forms_are_read() -> None:
    element = _configuration(
        """<configuration>
             <property name="preset" value="fast"/>
             <property><name>seed</name><value> 7 </value></property>
           </configuration>"""
    )
    assert properties_from_xml(element) == {"preset": "fast", "seed": "7"}
    assert properties_from_xml(None) == {}


def test_preset_then_overrides_and_aliases() -> None:
    settings = settings_from_properties({"preset": "balanced", "chains": "2", "steps": "3", "seed": "5"})
    base = load_preset("balanced")
    assert settings.preset == "balanced"
    assert settings.recon.num_chains == 2
    assert settings.recon.steps_per_level == 3
    assert settings.recon.seed == 5
    assert settings.recon.num_noise_levels == base.num_noise_levels
    fast = settings_from_properties({"iterations": "7", "device": "cpu", "method": "map"})
    assert fast.preset == "fast"
    assert fast.recon.map_iterations == 7
    assert fast.recon.device == "cpu"
    assert fast.output_variance is False
    assert (fast.image_series, fast.std_series) == (1, 2)


def test_gadget_only_properties() -> None:
    settings = settings_from_properties(
        {"preset": "balanced", "output_variance": "TRUE", "image_series": "11", "std_series": "12"}
    )
    assert settings.output_variance is True
    assert (settings.image_series, settings.std_series) == (11, 12)
    assert settings_from_properties({"prior": "/x/y.safetensors"}).prior == "/x/y.safetensors"
    assert settings_from_properties({"batch_slices": "4", "parallel_slices": "1"}).batch_slices == 4
    assert settings_from_properties({}).batch_slices == 0  # auto


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"num_chain": "4"}, r"unknown property 'num_chain'; accepted: .*num_chains"),
        ({"seed": "abc"}, r"bad value 'abc' for 'seed'"),
        ({"output_variance": "maybe"}, r"bad value 'maybe' for property 'output_variance'"),
        ({"preset": "nonexistent"}, r"unknown preset 'nonexistent'"),
        ({"output_variance": "true"}, r"output_variance=true needs method 'posterior'"),
        ({"chains": "2", "num_chains": "3"}, r"property 'num_chains' repeats 'num_chains'"),
        ({"image_series": "70000"}, r"image_series must fit an unsigned 16-bit"),
        ({"preset": "balanced", "output_variance": "1", "std_series": "1"}, r"must differ"),
        ({"iterations": "0"}, r"map_iterations must be >= 1"),
        ({"batch_slices": "-1"}, r"batch_slices must be >= 0"),
        ({"batch_slices": "4", "parallel_slices": "2"}, r"batch_slices=4 and parallel_slices=2: choose one"),
    ],
)
def test_bad_properties_are_clear_errors(properties: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_properties(properties)


def test_duplicate_and_nameless_properties_are_rejected() -> None:
    twice = (
        '<configuration><property name="seed" value="1"/><property name="seed" value="2"/></configuration>'
    )
    with pytest.raises(ValueError, match="given twice"):
        properties_from_xml(_configuration(twice))
    with pytest.raises(ValueError, match="without a name"):
        properties_from_xml(_configuration('<configuration><property value="2"/></configuration>'))


def test_shipped_chains_are_valid_version_2_chains() -> None:
    assert {"pogmdm", "pogmdm_buffered", "pogmdm_variance"} <= set(available_chains())
    for name in available_chains():
        chain = load_chain(name)
        text_root = ElementTree.fromstring(chain_text(name)[0])
        assert text_root.tag == "configuration"
        assert text_root.findtext("version") == "2"
        readers = [node.findtext("classname") for node in text_root.iterfind("readers/reader")]
        writers = [node.findtext("classname") for node in text_root.iterfind("writers/writer")]
        assert "AcquisitionReader" in readers and "ImageWriter" in writers
        execute = text_root.find("stream/external/execute")
        assert execute is not None and execute.get("type") == "python"
        target = getattr(importlib.import_module(chain.module), chain.target)
        assert callable(target)
        settings = settings_from_xml(ElementTree.fromstring(chain.configuration_xml))
        assert settings.recon.method in ("map", "posterior")
    assert load_chain("pogmdm").target == "reconstruct_acquisitions"
    buffered = load_chain("pogmdm_buffered")
    assert buffered.sends_buffers and buffered.target == "reconstruct_buffers"
    assert [g.classname for g in buffered.upstream] == [
        "NoiseAdjustGadget",
        "RemoveROOversamplingGadget",
        "AcquisitionAccumulateTriggerGadget",
        "BucketToBufferGadget",
    ]
    variance = settings_from_xml(ElementTree.fromstring(load_chain("pogmdm_variance").configuration_xml))
    assert variance.output_variance and variance.recon.method == "posterior"


def test_override_properties_replaces_and_appends() -> None:
    base = (
        '<configuration><property name="preset" value="fast"/>'
        "<property><name>seed</name><value>1</value></property></configuration>"
    )
    text = override_properties(base, {"preset": "balanced", "seed": "3", "device": "cpu"})
    assert properties_from_xml(ElementTree.fromstring(text)) == {
        "preset": "balanced",
        "seed": "3",
        "device": "cpu",
    }


def test_chain_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown chain 'nope'"):
        load_chain("nope")
    chain = tmp_path / "other.xml"
    chain.write_text(
        "<configuration><version>2</version><stream>"
        "<gadget><name>G</name><dll>x</dll><classname>GenericReconCartesianGrappaGadget</classname></gadget>"
        '<external><execute name="m" target="t" type="python"/><configuration/></external>'
        "</stream></configuration>"
    )
    with pytest.raises(ValueError, match="cannot perform GenericReconCartesianGrappaGadget"):
        load_chain(str(chain))
    chain.write_text("<configuration><version>1</version><stream/></configuration>")
    with pytest.raises(ValueError, match="not a Gadgetron version-2"):
        load_chain(str(chain))


def test_prior_property_names_a_shipped_prior_or_a_file(tmp_path: Path) -> None:
    from gadgets.pogmdm_gadget import load_image_prior

    cpu = {"device": "cpu"}
    default = load_image_prior(settings_from_properties(cpu))
    assert default.model.config.bank == "shearlet"
    conv = load_image_prior(settings_from_properties({**cpu, "prior": "conv"}))
    assert conv.model.config.bank == "conv" and conv.model.config.conv_gain == "patch"
    with pytest.raises(FileNotFoundError, match="no PoGMDM weights file"):
        load_image_prior(settings_from_properties({**cpu, "prior": str(tmp_path / "missing.safetensors")}))
