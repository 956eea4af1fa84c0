"""The project's packaging: environment.yml agrees with pyproject.toml, and the version is reported."""
import pathlib
import tomllib

import yaml

import seqlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pyproject_requirements():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return reqs


def _environment_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    return [r for r in pip if not r.startswith("-e")], conda


def _name(req):
    return req.split("==")[0].split(">")[0].split("<")[0].strip().lower()


def test_environment_matches_pyproject():
    py = _pyproject_requirements()
    env, _ = _environment_requirements()
    assert sorted(py) == sorted(env), (
        "environment.yml and pyproject.toml disagree:\n"
        f"  only in pyproject.toml: {sorted(set(py) - set(env))}\n"
        f"  only in environment.yml: {sorted(set(env) - set(py))}")


def test_every_requirement_is_pinned_or_bounded():
    for req in _pyproject_requirements():
        assert "==" in req or ("<" in req and ">" in req), f"{req!r} is neither pinned nor bounded"
    assert "torch==2.13.0" in _pyproject_requirements()


def test_python_version_agrees():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    _, conda = _environment_requirements()
    assert "python=3.11" in conda and ">=3.11,<3.12" == meta["requires-python"]


def test_installed_versions_match_pins():
    from importlib.metadata import version
    for req in _pyproject_requirements():
        name, pinned = req.split("==")
        installed = version(name)
        assert installed.split("+")[0] == pinned, f"{name}: pinned {pinned}, installed {installed}"


def test_version_is_reported():
    tomlver = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert seqlib.__version__ == tomlver
