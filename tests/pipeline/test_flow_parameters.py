"""The flows' parameters: importing the flows warns about nothing of ours.

A flow parameter named ``register`` made Prefect's parameter model (a pydantic model whose parent
has a ``register`` attribute) warn that it "shadows an attribute in parent" at every
import of :mod:`pipelines.flows`: in every test run, every deployment run and ``make demo``.
"""

from __future__ import annotations

import importlib.util
import warnings

from tests.common.processes import REPO


def test_importing_the_flows_warns_about_nothing():
    """A second copy of the module, under another name (the session's ``pipelines.flows`` stays as it is)."""
    spec = importlib.util.spec_from_file_location("flows_import_check", REPO / "pipelines" / "flows.py")
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec.loader.exec_module(module)
    assert [str(w.message) for w in caught] == []

