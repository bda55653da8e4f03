"""The version floor is one set of numbers, written twice: as the lower bounds in
pyproject.toml (what pip lets users install) and as the pins in constraints/floor.txt
(what `make test-floor` installs and CI tests). These tests keep the two equal, and keep
constraints/newest.txt (what `make test` installs) inside the ranges pyproject allows.
No sockets, no installs: they read the files.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FLOOR = ROOT / "constraints" / "floor.txt"
NEWEST = ROOT / "constraints" / "newest.txt"


def declared() -> list[Requirement]:
    """The runtime dependencies and the test extra, as pyproject.toml writes them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(line) for line in lines]


def pins(path: Path) -> dict[str, Version]:
    """``name==version`` lines of a constraints file, by canonical name; anything else fails."""
    found: dict[str, Version] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line)
        assert match, f"{path.name}:{number}: {raw!r} is not an exact name==version pin"
        name = canonicalize_name(match[1])
        assert name not in found, f"{path.name}:{number}: {match[1]} is pinned twice"
        found[name] = Version(match[2])
    return found


def floor_of(requirement: Requirement) -> Version:
    """The one lower bound of ``requirement``: ``>=X`` and nothing else (open-ended above)."""
    specs = list(requirement.specifier)
    assert len(specs) == 1 and specs[0].operator == ">=", (
        f"pyproject.toml: {requirement} must be exactly one '>=' lower bound, open above, "
        "so the floor is one number that constraints/floor.txt can pin")
    return Version(specs[0].version)


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_floor_txt_pins_the_lower_bound_pyproject_declares(requirement):
    floor = pins(FLOOR)
    name = canonicalize_name(requirement.name)
    assert name in floor, f"constraints/floor.txt does not pin {requirement.name} (pyproject: {requirement})"
    assert floor[name] == floor_of(requirement), (
        f"{requirement.name}: pyproject.toml says {requirement}, constraints/floor.txt pins "
        f"=={floor[name]}; change both together (docs/operations.md, 'Supported versions')")


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_newest_txt_is_allowed_by_pyproject_and_not_below_the_floor(requirement):
    newest = pins(NEWEST)
    name = canonicalize_name(requirement.name)
    assert name in newest, f"constraints/newest.txt does not pin {requirement.name}"
    assert requirement.specifier.contains(newest[name], prereleases=True), (
        f"constraints/newest.txt pins {requirement.name}=={newest[name]}, outside {requirement}")


def test_both_files_pin_the_same_packages():
    """Each is a whole install: what the floor venv has, the newest venv has too."""
    floor, newest = set(pins(FLOOR)), set(pins(NEWEST))
    # Old releases pull in a few packages later ones dropped (pytest 7: py, tomli;
    # service-identity 21: six, pyasn1), and the reverse; both files must still hold
    # every package the project names and the http2 extra brings.
    named = {canonicalize_name(r.name) for r in declared()} | {"h2", "priority"}
    assert named <= floor and named <= newest, (
        f"missing from floor.txt: {sorted(named - floor)}, from newest.txt: {sorted(named - newest)}")


def test_newest_is_not_older_than_the_floor():
    floor, newest = pins(FLOOR), pins(NEWEST)
    older = {name: (str(floor[name]), str(newest[name]))
             for name in floor.keys() & newest.keys() if newest[name] < floor[name]}
    assert not older, f"newest.txt pins below floor.txt (floor, newest): {older}"


def test_the_installs_and_ci_use_the_constraints():
    """`make test` installs from newest.txt, `make test-floor` from floor.txt, CI runs both."""
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c constraints/newest.txt" in makefile
    assert "-c constraints/floor.txt" in makefile
    assert re.search(r"^\s*make test\b(?!-)", ci, re.M) and re.search(r"^.*make test-floor\b", ci, re.M)
