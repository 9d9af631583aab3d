"""Choosing the version set from a report: allowlist, PEP 440 only, Unsloth mapped, torch recorded."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.models import Report
from reproducer.versions import (
    LOCAL_TORCH,
    STACK,
    VersionRefused,
    check_pins,
    clean_version,
    differs_from_installed,
    install_plan,
    installed_versions,
    requested_versions,
    select_versions,
)

MALICIOUS = [
    "4.0; rm -rf /",
    "--index-url http://evil.example/simple",
    "git+https://github.com/huggingface/transformers",
    "4.55.4 --extra-index-url=http://evil.example",
    "https://evil.example/transformers-4.55.4-py3-none-any.whl",
    "../../etc/passwd",
    ">=4.0",
    "4.55.*",
    "",
    "1" * 200,
]


def test_keeps_only_the_training_stack_and_strips_local_labels():
    report = Report(versions={
        "transformers": "4.55.4", "trl": "0.19.1", "torch": "2.5.1+cu124", "huggingface_hub": "0.36.2",
        "numpy": "1.26.4", "bitsandbytes": "0.45.0", "Peft": "0.13.2",
    })
    assert requested_versions(report) == {
        "transformers": "4.55.4", "trl": "0.19.1", "torch": "2.5.1", "huggingface-hub": "0.36.2", "peft": "0.13.2",
    }
    assert select_versions(report).ignored == ["bitsandbytes", "numpy"]


@pytest.mark.parametrize("bad", MALICIOUS)
def test_untrusted_versions_are_refused_with_a_reason(bad):
    selection = select_versions(Report(versions={"transformers": bad, "trl": "0.19.1"}))
    assert selection.requested == {"trl": "0.19.1"}
    assert "transformers" in selection.refused
    assert any("transformers: version refused" in line for line in selection.evidence)
    with pytest.raises(VersionRefused, match="transformers"):
        clean_version("transformers", bad)
    with pytest.raises(VersionRefused):
        install_plan({"transformers": bad})


@pytest.mark.parametrize("name", [
    "transformers==4.0; rm -rf /", "--index-url http://evil", "git+https://github.com/x/y", "evil-package", "unsloth", "pip",
])
def test_names_outside_the_allowlist_are_never_installed(name):
    assert requested_versions(Report(versions={name: "1.0"})) == {}
    with pytest.raises(VersionRefused, match="not a training-stack package"):
        check_pins({name: "1.0"})


def test_unsloth_is_mapped_to_its_transformers_trl_and_torch():
    report = Report(versions={"unsloth": "2025.2.15", "unsloth_zoo": "2025.2.7", "transformers": "4.48.3",
                              "trl": "0.15.2", "torch": "2.5.1"})
    selection = select_versions(report)
    assert selection.requested == {"transformers": "4.48.3", "trl": "0.15.2", "torch": "2.5.1"}
    unsloth_line = selection.evidence[0]
    assert "unsloth 2025.2.15" in unsloth_line and "not installed" in unsloth_line
    assert "transformers 4.48.3, trl 0.15.2, torch 2.5.1" in unsloth_line
    assert any("torch 2.5.1: recorded, not matched" in line for line in selection.evidence)


def test_plan_always_uses_the_local_torch_and_records_the_users():
    plan = install_plan({"transformers": "4.55.4", "trl": "0.19.1", "torch": "2.5.1"})
    assert plan.pins == {"transformers": "4.55.4", "trl": "0.19.1", "torch": LOCAL_TORCH}
    assert plan.requirements()[0] == f"torch=={LOCAL_TORCH}"
    assert plan.notes == (f"torch 2.5.1: recorded, not matched (torch {LOCAL_TORCH} CPU build).",)
    assert plan.unpinned == ("accelerate", "datasets", "peft")


def test_companion_caps_only_for_unstated_companions():
    assert install_plan({"trl": "0.19.1"}).caps == ("transformers<4.56",)
    assert install_plan({"trl": "0.15.2"}).caps == ("transformers<4.56",)
    assert install_plan({"trl": "0.21.0"}).caps == ("transformers<5",)
    assert install_plan({"trl": "0.19.1", "transformers": "4.48.3"}).caps == ()
    assert install_plan({"trl": "1.16.0"}).caps == ()
    assert install_plan({"transformers": "4.55.4"}).caps == ()


def test_cache_key_depends_on_the_set_not_on_order_or_user_torch():
    a = install_plan({"transformers": "4.55.4", "trl": "0.19.1"})
    b = install_plan({"trl": "0.19.1", "torch": "2.5.1", "transformers": "4.55.4"})
    c = install_plan({"transformers": "4.55.3", "trl": "0.19.1"})
    assert a.key("3.11") == b.key("3.11")
    assert a.key("3.11") != c.key("3.11")
    assert a.key("3.11") != a.key("3.12")
    assert a.key("3.11").startswith("transformers-4.55.4_trl-0.19.1-")
    assert re.fullmatch(r"[a-z0-9._-]+", a.key("3.11"))


_REQUIREMENT = re.compile(r"[a-z0-9-]+(==[0-9A-Za-z.!]+|<[0-9.]+)?")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(STACK + ("Transformers", "evil", "trl; x")), st.text(max_size=40), max_size=4))
def test_any_input_gives_plain_requirements_or_a_refusal(versions):
    try:
        plan = install_plan(versions)
    except VersionRefused:
        return
    for requirement in plan.requirements():
        assert _REQUIREMENT.fullmatch(requirement), requirement
    assert re.fullmatch(r"[a-z0-9._-]+", plan.key("3.11"))


def test_differs_from_installed_ignores_torch():
    here = installed_versions()
    assert not differs_from_installed({"trl": here["trl"], "transformers": here["transformers"], "torch": "2.5.1"})
    assert differs_from_installed({"trl": "0.19.1"})
    assert not differs_from_installed({})
