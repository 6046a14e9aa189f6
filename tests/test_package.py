"""The package's public names: torch-only ones load on first use (PEP 562), everything else is a plain import."""
from __future__ import annotations

import pytest

import synseg_core


def test_torch_only_names_resolve_to_the_model_module():
    from synseg_core.model.synseg import SynSeg, create_model

    assert synseg_core.create_model is create_model and synseg_core.SynSeg is SynSeg


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        synseg_core.nope  # noqa: B018


def test_dir_lists_the_lazy_names():
    assert {"SynSeg", "create_model", "Segmenter", "load_model"} <= set(dir(synseg_core))

