"""Get the peers onto the machine: wrk and nginx from apt, the Python servers in a venv.

The peers live in ``benchmarks/.venv`` so that benchmarking never changes the
project's own environment.  Everything is idempotent: a second run only
checks.  A peer that cannot be installed (uWSGI compiles C) is reported and
its rows are skipped, the rest of the run goes on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
VENV = HERE / ".venv"
PEER_PACKAGES = {"gunicorn": "gunicorn", "waitress": "waitress-serve", "cheroot": "cheroot", "uwsgi": "uwsgi"}
APT_TOOLS = {"wrk": "wrk", "nginx": "nginx"}  # binary -> Debian package


def find_tool(name: str) -> str | None:
    """Binaries from apt land in /usr/sbin too, which is not always on PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def venv_bin(name: str) -> Path:
    return VENV / "bin" / name


def ensure_apt_tools(log) -> dict[str, str]:
    """Install missing apt tools (needs root); returns {tool: why-missing} for failures."""
    missing = [tool for tool in APT_TOOLS if not find_tool(tool)]
    if not missing:
        return {}
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return {tool: "not installed and apt-get is not usable here (run as root)" for tool in missing}
    log(f"installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *(APT_TOOLS[t] for t in missing)],
        env=env, capture_output=True, text=True,
    )
    failed = {tool: "apt-get install failed" for tool in missing if not find_tool(tool)}
    if failed:
        log(result.stdout[-2000:] + result.stderr[-2000:])
    return failed


def ensure_venv(log) -> dict[str, str]:
    """Create the peers' venv and install each package; {package: why-missing} for failures."""
    if not venv_bin("python").exists():
        log(f"creating {VENV}")
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    failed = {}
    for package in PEER_PACKAGES:
        if _installed(package):
            continue
        log(f"pip install {package} into {VENV}")
        result = subprocess.run(
            [str(venv_bin("pip")), "install", "-q", package], capture_output=True, text=True
        )
        if result.returncode != 0 or not _installed(package):
            failed[package] = "pip install failed: " + _last_line(result.stderr or result.stdout)
    return failed


def _installed(package: str) -> bool:
    probe = f"import importlib.metadata as m; m.version({package!r})"
    return subprocess.run([str(venv_bin("python")), "-c", probe], capture_output=True).returncode == 0


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def ensure_all(log) -> dict[str, str]:
    """Install everything the run needs; returns what is still missing and why."""
    failures = {**ensure_apt_tools(log), **ensure_venv(log)}
    return {**missing(), **failures}


def missing() -> dict[str, str]:
    """What is not installed now, without installing anything."""
    found = {tool: "not installed" for tool in APT_TOOLS if not find_tool(tool)}
    for package, binary in PEER_PACKAGES.items():
        if not venv_bin(binary).exists():
            found[package] = f"not installed in {VENV.name} (run without --no-install)"
    return found


def versions() -> dict[str, str]:
    """Versions of every peer and tool, for the report's header."""
    found = {"python": sys.version.split()[0]}
    for package in ("twisted", "twisthost"):
        found[package] = _version_here(package)
    if venv_bin("python").exists():
        script = (
            "import importlib.metadata as m\n"
            f"for p in {tuple(PEER_PACKAGES)!r}:\n"
            "    try: print(p, m.version(p))\n"
            "    except Exception: pass\n"
        )
        out = subprocess.run([str(venv_bin("python")), "-c", script], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            name, _, version = line.partition(" ")
            found[name] = version
    for tool, flag in (("nginx", "-v"), ("wrk", "-v")):
        path = find_tool(tool)
        if path:
            out = subprocess.run([path, flag], capture_output=True, text=True)
            text = (out.stderr + out.stdout).strip().splitlines()
            tokens = [t for t in (text[0].split() if text else ()) if "/" in t]
            found[tool] = tokens[0].split("/")[-1] if tokens else "?"
    return found


def _version_here(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"
