"""pyproject.toml's dependency bounds are true (issue #23): the environment the tests run in satisfies them,
.ci/lower-bounds tests exactly the lower bounds pyproject states, and no upper bound shuts out patch releases.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: huggingface_hub requires tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "lower-bounds"


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _requirements() -> list[tuple[str, Requirement]]:
    """(group, requirement) for [project].dependencies ('core') and every optional group."""
    project = _project()
    out = [("core", Requirement(d)) for d in project["dependencies"]]
    for group, deps in project.get("optional-dependencies", {}).items():
        out += [(group, Requirement(d)) for d in deps]
    return out


def _lower_bound(name: str) -> str:
    (req,) = [r for g, r in _requirements() if g == "core" and r.name == name]
    (low,) = [s.version for s in req.specifier if s.operator == ">="]
    return low


def test_installed_environment_satisfies_pyproject():
    """Every core dependency is installed at a version its specifier admits; an optional one, where installed."""
    bad = []
    for group, req in _requirements():
        if req.marker and not req.marker.evaluate({"extra": group}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            if group == "core":
                bad.append(f"{req} (core): not installed")
            continue
        if not req.specifier.contains(have, prereleases=True):
            bad.append(f"{req} ({group}): installed {have}")
    assert not bad, "pyproject.toml's bounds do not hold here:\n" + "\n".join(bad)


def test_lower_bounds_script_tests_pyproject_lower_bounds():
    """.ci/lower-bounds installs transformers / diffusers at exactly the `>=` pyproject states for them."""
    env = {**os.environ, "LOWER_BOUNDS_VENV": sys.prefix}  # parse with this interpreter's packaging
    out = subprocess.run(
        [str(SCRIPT), "--print"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    pins = dict(line.split("==") for line in out.stdout.split())
    assert pins["transformers"] == _lower_bound("transformers")
    assert pins["diffusers"] == _lower_bound("diffusers")
    # the companions it pins must satisfy pyproject too (the overlay runs this file as well)
    core = {r.name.lower().replace("-", "_"): r for g, r in _requirements() if g == "core"}
    for name, version in pins.items():
        req = core.get(name.lower().replace("-", "_"))
        if req is not None:
            assert req.specifier.contains(version, prereleases=True), (name, version, str(req))


def test_lower_bounds_are_not_below_the_tested_minimum():
    """The minimums found by experiment: transformers 5.5.4's CLIPTextModel has no ``embeddings`` (the
    UNet3D text_token_std init); diffusers 0.37.0 loads a custom pipeline folder without trust_remote_code
    and 0.36.0 fails the exported pipeline's call (KeyError 'guidance_scale'). pyproject must not claim less."""
    assert Version(_lower_bound("transformers")) >= Version("5.6.0")
    assert Version(_lower_bound("diffusers")) >= Version("0.38.0")


@pytest.mark.parametrize("name", ["torch"])
def test_upper_bound_admits_patch_releases(name):
    """`<=2.13.0` shuts out 2.13.1; the bound must admit every patch release of the installed minor."""
    (req,) = [r for g, r in _requirements() if g == "core" and r.name == name]
    release = Version(md.version(name)).release
    for patch in (release[2] if len(release) > 2 else 0, 1, 9, 99):
        v = f"{release[0]}.{release[1]}.{patch}"
        assert req.specifier.contains(v), f"{req} refuses {v}"


def test_no_inclusive_upper_bound_in_core():
    """An inclusive `<=X.Y.Z` upper bound refuses X.Y.Z's patch releases; core dependencies use `<X.Y+1`."""
    bad = [str(r) for g, r in _requirements() if g == "core" for s in r.specifier if s.operator == "<="]
    assert not bad, bad
