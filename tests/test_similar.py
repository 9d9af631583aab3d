"""Labelled reports nearest to a report: their classes fill the candidate list, citing their threads."""

from __future__ import annotations

import json
import shutil

import pytest

from bot.core import diagnose
from bot.parse import parse_text
from bot.settings import get_settings
from knowledge.kb import ENTRIES_DIR, default_kb, load_kb_cached
from knowledge.matcher import ALTERNATIVE, similar_reports
from knowledge.similar import REPORT_SETS_DIR, LabelledReport, SimilarReports, read_report_sets, votes

KB = default_kb()
from knowledge.matcher import SIMILAR_REPORTS as SIMILAR  # noqa: E402


def _corpus() -> SimilarReports:
    texts = {
        ("label_out_of_bounds", "https://example.org/1", "a"): "IndexError: Target 7 is out of bounds. num_labels=5 token classification",
        ("label_out_of_bounds", "https://example.org/2", "b"): "CUDA error: device-side assert triggered, Target 12 is out of bounds",
        ("fp16_overflow_nan", "https://example.org/3", "b"): "loss becomes nan after 200 steps with fp16 on a T5 model",
        ("fp16_overflow_nan", "https://example.org/4", "c"): "T5 fp16 training gives nan loss, bf16 works",
    }
    return SimilarReports([(LabelledReport(*key), text) for key, text in texts.items()])


def test_nearest_reports_come_first_and_a_held_out_set_is_never_compared():
    corpus = _corpus()
    nearest = corpus.nearest("my T5 run in fp16 has a nan loss")
    assert {n.report.source for n in nearest[:2]} == {"https://example.org/3", "https://example.org/4"}
    held = corpus.nearest("my T5 run in fp16 has a nan loss", held_out="b")
    assert all(n.report.set_name != "b" for n in held) and held[0].report.source == "https://example.org/4"
    assert corpus.nearest("completely unrelated words zebra") == []


def test_votes_are_shares_of_the_neighbours_scores_best_first():
    ranked = votes(_corpus().nearest("Target 7 is out of bounds with fp16"))
    assert ranked[0][0] == "label_out_of_bounds"
    assert abs(sum(share for _, share, _ in ranked) - 1.0) < 1e-9
    assert all(n.report.failure_class == c for c, _, members in ranked for n in members)


def test_report_sets_skip_lines_that_are_not_labelled_reports(tmp_path):
    (tmp_path / "set-a.jsonl").write_text(
        json.dumps({"user_text": "loss is nan", "failure_class": "fp16_overflow_nan", "source": "https://x/1"}) + "\n"
        "not json\n" + json.dumps({"user_text": 3, "failure_class": "x"}) + "\n" + json.dumps(["a list"]) + "\n",
        encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored")
    rows = read_report_sets(tmp_path)
    assert [(r.failure_class, r.source, r.set_name) for r, _ in rows] == [("fp16_overflow_nan", "https://x/1", "set-a")]
    assert read_report_sets(tmp_path / "missing") == []


def test_the_bundled_corpus_holds_the_examples_and_the_report_sets():
    corpus = similar_reports(KB)
    sets = {r.set_name for r in corpus.reports}
    assert "kb" in sets and "dev" in sets and len(sets) > 100
    assert sum(r.set_name == "kb" for r in corpus.reports) == sum(
        x.expect_match for e in KB.entries for x in KB.examples(e.id))


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (REPORT_SETS_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_similar_reports_fill_the_list_as_weaker_alternatives_and_scoring_holds_out_the_set():
    filled = cited_own = 0
    for row in _rows("dev")[:60]:
        report = parse_text(row["user_text"])
        scored = diagnose(report, KB, held_out="dev")
        for position, c in enumerate(scored.candidates):
            if any(SIMILAR in w for w in c.why):
                filled += 1
                assert position > 0 and c.why[-1] == ALTERNATIVE  # never leads, always a weaker alternative
                assert row["source"] not in " ".join(c.why)  # the set being scored is not compared with itself
        cited_own += similar_reports(KB).nearest(report.text)[0].report.source == row["source"]
        assert all(n.report.set_name != "dev" for n in similar_reports(KB).nearest(report.text, held_out="dev"))
    assert filled > 0
    assert cited_own > 50  # without held_out nearly every line finds itself first: that is what it prevents


def test_the_snapshot_is_rebuilt_when_a_report_set_changes(tmp_path, monkeypatch):
    import knowledge.kb as kb_module
    import knowledge.similar as similar_module

    monkeypatch.setenv("LOSSDOCTOR_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    entries, sets = tmp_path / "entries", tmp_path / "eval"
    shutil.copytree(ENTRIES_DIR, entries)
    sets.mkdir()
    line = {"user_text": "zebra giraffe loss nan", "failure_class": "fp16_overflow_nan", "source": "https://x/zebra"}
    (sets / "mine.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    monkeypatch.setattr(kb_module, "ENTRIES_DIR", entries)
    for module in (kb_module, similar_module):
        monkeypatch.setattr(module, "REPORT_SETS_DIR", sets)
    try:
        first = load_kb_cached(entries)
        assert [r.source for r in similar_reports(first).reports if r.set_name == "mine"] == ["https://x/zebra"]
        (sets / "mine.jsonl").write_text(json.dumps({**line, "source": "https://x/okapi"}) + "\n", encoding="utf-8")
        second = load_kb_cached(entries)
        assert [r.source for r in similar_reports(second).reports if r.set_name == "mine"] == ["https://x/okapi"]
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("text", ["", "hello", "\x00\x01 binary"])
def test_reports_with_nothing_to_compare_get_no_similar_candidates(text):
    d = diagnose(parse_text(text), KB)
    assert not any(SIMILAR in w for c in d.candidates for w in c.why)


def test_the_reply_names_the_threads_that_put_a_candidate_on_the_list():
    shown = 0
    for row in _rows("dev"):
        d = diagnose(parse_text(row["user_text"]), KB, held_out="dev")
        listed = [c for c in d.candidates if c.failure_class != "out_of_scope"]
        listed = listed[:3] if d.verdict == "unknown" else [c for c in d.candidates[1:] if c.failure_class != "out_of_scope"][:2]
        for c in listed:
            urls = [u for w in c.why if SIMILAR in w for u in w.split("(", 1)[-1].rstrip(")").split(", ") if u.startswith("http")]
            if urls:
                shown += 1
                assert "reported threads like yours: " + ", ".join(urls) in d.reply
    assert shown > 0


def test_lossdoctor_eval_holds_out_each_file_it_scores(tmp_path, monkeypatch):
    import bot.core
    from typer.testing import CliRunner

    from bot.lossdoctor_cli import app

    seen = []
    real = bot.core.diagnose
    monkeypatch.setattr(bot.core, "diagnose", lambda report, kb=None, **kw: seen.append(kw.get("held_out")) or real(report, kb, **kw))
    first, second = tmp_path / "set-one.jsonl", tmp_path / "set-two.jsonl"
    row = json.dumps({"user_text": "loss is nan with fp16", "failure_class": "fp16_overflow_nan"})
    first.write_text(row + "\n" + row + "\n", encoding="utf-8")
    second.write_text(row + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(first), str(second), "--json"])
    assert result.exit_code == 0, result.output
    assert seen == ["set-one", "set-one", "set-two"]
