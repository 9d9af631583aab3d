"""Which library versions to reproduce on: chosen from a `Report`, checked, and turned into an install plan.

Versions in a paste are untrusted input that decides what gets installed. Only the training stack
(`STACK`) is kept, every version must parse as PEP 440 (local labels such as ``+cu124`` are
dropped), and the result is a set of exact pins. Unsloth is never installed: its setups run on
the transformers / trl versions it reported. torch is always the local CPU build
(`LOCAL_TORCH`); the user's torch is recorded, not matched.

>>> plan = install_plan({"trl": "0.19.1", "torch": "2.5.1+cu124"})
>>> plan.requirements()[:3]
['torch==2.13.0', 'trl==0.19.1', 'accelerate']
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from bot.errors import BotError
from bot.models import Report

STACK = (
    "accelerate",
    "datasets",
    "huggingface-hub",
    "peft",
    "safetensors",
    "tokenizers",
    "torch",
    "transformers",
    "trl",
)
"""The only packages whose versions a report may choose."""

CORE = ("accelerate", "datasets", "peft", "transformers", "trl")
"""Installed in every environment (unpinned when the report does not say): the child imports them."""

NOT_INSTALLED = ("unsloth", "unsloth-zoo")
"""Reported, never installed: the setup runs on the transformers / trl versions they came with."""

LOCAL_TORCH = "2.13.0"
"""The torch every environment gets: the CPU wheel on this machine's disk (an unpinned torch would
download a multi-GB CUDA build)."""

COMPANION_CAPS = (
    # (stated package, its version range, requirement added for an unstated companion)
    ("trl", "<0.20", "transformers<4.56"),
    ("trl", ">=0.20,<0.27", "transformers<5"),
)
"""Caps for companions the report does not state, where the stated release's own metadata has no
upper bound but newer companions no longer import with it (trl 0.19 with transformers 5.x)."""

_MAX_VERSION_LEN = 64


class VersionRefused(BotError):
    """A package name or version from a report (or a caller) that will not be installed."""


def normalize_name(name: str) -> str:
    """PEP 503 name: ``Huggingface_Hub`` -> ``huggingface-hub``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def clean_version(name: str, value: str) -> str:
    """A PEP 440 public version (``'2.5.1+cu124'`` -> ``'2.5.1'``), or `VersionRefused` saying why."""
    text = str(value).strip()
    if not text or len(text) > _MAX_VERSION_LEN:
        raise VersionRefused(f"{name}: version {text[:_MAX_VERSION_LEN]!r} is empty or too long")
    try:
        version = Version(text)
    except InvalidVersion:
        raise VersionRefused(f"{name}: {text!r} is not a PEP 440 version") from None
    return version.public


def check_pins(versions: dict[str, str]) -> dict[str, str]:
    """Normalised ``{name: version}`` for a caller's pins; `VersionRefused` on any name outside
    `STACK` or any version that is not PEP 440."""
    pins: dict[str, str] = {}
    for raw_name, raw_version in versions.items():
        name = normalize_name(str(raw_name))
        if name not in STACK:
            raise VersionRefused(f"{str(raw_name)[:60]!r} is not a training-stack package lossdoctor installs "
                                 f"(allowed: {', '.join(STACK)})")
        pins[name] = clean_version(name, raw_version)
    return pins


@dataclass(frozen=True)
class VersionSelection:
    """The versions a report asks for, and what was left out and why."""

    requested: dict[str, str]
    """Training-stack package -> clean version, as the user has them (torch included, as recorded)."""
    refused: dict[str, str] = field(default_factory=dict)
    """Package -> why its stated version was not used."""
    ignored: list[str] = field(default_factory=list)
    """Packages named in the report that are not part of the training stack."""
    evidence: list[str] = field(default_factory=list)
    """Sentences for the reply (Unsloth mapping, torch not matched...)."""


def select_versions(report: Report) -> VersionSelection:
    """Pick the training-stack versions from ``report.versions``."""
    requested: dict[str, str] = {}
    refused: dict[str, str] = {}
    ignored: list[str] = []
    evidence: list[str] = []
    unsloth: dict[str, str] = {}
    for raw_name, raw_version in report.versions.items():
        name = normalize_name(str(raw_name))
        if name in NOT_INSTALLED:
            unsloth[name] = str(raw_version)[:_MAX_VERSION_LEN]
        elif name not in STACK:
            ignored.append(name[:60])
        else:
            try:
                requested[name] = clean_version(name, raw_version)
            except VersionRefused as exc:
                refused[name] = str(exc)
    if unsloth:
        said = ", ".join(f"{n} {v}" for n, v in sorted(unsloth.items()))
        stack = ", ".join(f"{n} {requested[n]}" for n in ("transformers", "trl", "torch") if n in requested)
        evidence.append(
            f"{said} is not installed: the setup runs on the plain transformers/TRL path"
            + (f" with the versions it reported ({stack})." if stack else ".")
        )
    if "torch" in requested and requested["torch"] != LOCAL_TORCH:
        evidence.append(f"torch {requested['torch']}: recorded, not matched (runs on the local torch {LOCAL_TORCH} CPU build).")
    for name, reason in sorted(refused.items()):
        evidence.append(f"{name}: version refused ({reason}).")
    return VersionSelection(requested=requested, refused=refused, ignored=sorted(ignored), evidence=evidence)


def requested_versions(report: Report) -> dict[str, str]:
    """Training-stack package -> clean PEP 440 version, from ``report.versions``."""
    return select_versions(report).requested


def installed_versions() -> dict[str, str]:
    """The training stack of the interpreter lossdoctor runs in."""
    found = {}
    for name in STACK:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def differs_from_installed(versions: dict[str, str]) -> bool:
    """True when a stated version (torch aside: it is never matched) differs from the installed one."""
    here = installed_versions()
    for name, version in check_pins(versions).items():
        if name != "torch" and (name not in here or Version(here[name]).public != version):
            return True
    return False


@dataclass(frozen=True)
class InstallPlan:
    """What pip installs for a version set: exact pins, unpinned core packages, companion caps."""

    pins: dict[str, str]
    """Exact versions (torch is always `LOCAL_TORCH`)."""
    unpinned: tuple[str, ...]
    """Core packages the set does not state: pip chooses them."""
    caps: tuple[str, ...]
    """Companion requirements such as ``transformers<4.56``."""
    notes: tuple[str, ...] = ()

    def requirements(self) -> list[str]:
        """pip requirement strings, torch first."""
        pinned = [f"torch=={self.pins['torch']}"] + [f"{n}=={v}" for n, v in sorted(self.pins.items()) if n != "torch"]
        return pinned + list(self.unpinned) + list(self.caps)

    def key(self, python_version: str) -> str:
        """Cache key: a readable prefix plus a hash of the requirements and the Python version."""
        blob = json.dumps({"python": python_version, "requirements": self.requirements()}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        stated = "_".join(f"{n}-{v}" for n, v in sorted(self.pins.items()) if n != "torch") or "latest"
        return f"{re.sub(r'[^a-z0-9._-]', '_', stated[:80])}-{digest}"


def install_plan(versions: dict[str, str]) -> InstallPlan:
    """The install plan for a version set (checked with `check_pins`)."""
    pins = check_pins(versions)
    notes = []
    user_torch = pins.pop("torch", None)
    if user_torch and user_torch != LOCAL_TORCH:
        notes.append(f"torch {user_torch}: recorded, not matched (torch {LOCAL_TORCH} CPU build).")
    pins["torch"] = LOCAL_TORCH
    caps = []
    for stated, spec, requirement in COMPANION_CAPS:
        companion = re.match(r"[a-z0-9-]+", requirement).group(0)
        if stated in pins and companion not in pins and Version(pins[stated]) in SpecifierSet(spec):
            caps.append(requirement)
    unpinned = tuple(n for n in CORE if n not in pins)
    return InstallPlan(pins=pins, unpinned=unpinned, caps=tuple(caps), notes=tuple(notes))
