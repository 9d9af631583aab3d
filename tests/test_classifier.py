"""knowledge.classifier (the wording classifier) and how knowledge.matcher.weigh uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

import knowledge.classifier as classifier
from bot.core import diagnose
from bot.parse import parse_text
from knowledge.classifier import (
    FOLDS, KB_SET, MODEL_FILE, ReportClassifier, classifier_for, corpus_fingerprint, fold_of, labelled_reports, terms,
    train,
)
from knowledge.kb import KnowledgeBase, default_kb, load_kb

ROOT = Path(__file__).resolve().parents[1]
KB = default_kb()


def test_the_shipped_model_was_trained_on_exactly_the_labelled_reports_there_are_now():
    """Adding a knowledge-base example or a report set changes what the classifier should know:
    run `lossdoctor kb train` (the shipped file is otherwise retrained at every snapshot build)."""
    shipped = ReportClassifier.read(MODEL_FILE)
    reports = labelled_reports(load_kb())
    assert shipped.trained_on == corpus_fingerprint(reports), "stale knowledge/report_classifier.json.gz: run `lossdoctor kb train`"
    assert shipped.reports == len(reports) > 2000
    assert "out_of_scope" in shipped.classes and len(shipped.classes) >= 25


def test_terms_are_words_numbers_and_cjk_character_pairs():
    assert terms("Loss is NaN at step 10, grad_norm nan") == {"loss": 1, "is": 1, "nan": 2, "at": 1, "step": 1, "10": 1, "grad_norm": 1}
    assert terms("损失为零") == {"损失": 1, "失为": 1, "为零": 1}
    assert terms("x" * 10 + " tail") == {"xxxxxxxxxx": 1, "tail": 1}
    assert terms("a " * 10_000 + "late") == {}  # single letters are not words; the text is read to TEXT_CHARS only


def test_environment_rows_warnings_and_frames_are_not_read():
    """What every kind of report carries alike must not move the classifier: a `transformers env`
    block, package pins, routine warnings and traceback frames leave only the report's own words."""
    report = "ValueError: The model did not return a loss from the inputs\nmy loss is nan with fp16\n"
    noise = (
        "- `transformers` version: 4.46.3\n- Platform: Linux-5.15.0-x86_64-with-glibc2.35\n- Python version: 3.10.14\n"
        "- PyTorch version (GPU?): 2.5.1+cu124 (True)\npeft==0.13.2\ntrl==0.12.1\n"
        "/usr/lib/python3.10/site-packages/transformers/training_args.py:1559: FutureWarning: `evaluation_strategy` is deprecated\n"
        "  warnings.warn(\nwandb: Currently logged in as: someone\n"
        'Traceback (most recent call last):\n  File "/usr/lib/python3.10/site-packages/transformers/trainer.py", line 2123, in train\n'
        "    return inner_training_loop(\n"
    )
    assert terms(noise + report) == terms(report)
    model = classifier_for(KB)
    assert model.probabilities(noise + report) == model.probabilities(report)


def _tiny_corpus():
    """Two classes a few words apart (each term in at least MIN_REPORTS reports)."""
    nan = "fp16 training loss is nan after a few steps on a T4"
    oom = "CUDA out of memory while loading the model on a T4"
    return [(nan, "fp16_overflow_nan", "s1"), (nan + " again", "fp16_overflow_nan", "s2"),
            (oom, "out_of_scope", "s3"), (oom + " again", "out_of_scope", "s4")]


def test_training_learns_the_classes_and_the_saved_model_gives_the_same_answers(tmp_path):
    model = train(_tiny_corpus())
    assert model.classes == ["fp16_overflow_nan", "out_of_scope"] and model.reports == 4
    p = model.probabilities("my loss is nan in fp16")
    assert p["fp16_overflow_nan"] > 0.8 and abs(sum(p.values()) - 1) < 1e-9
    assert model.probabilities("CUDA out of memory")["out_of_scope"] > 0.8
    model.write(tmp_path / "m.json.gz")
    again = ReportClassifier.read(tmp_path / "m.json.gz")  # weights kept to one byte per class column
    q = again.probabilities("my loss is nan in fp16")
    assert max(abs(p[c] - q[c]) for c in p) < 0.01
    assert train(_tiny_corpus()).weights == model.weights  # deterministic


def test_a_fold_is_left_out_of_training():
    corpus = _tiny_corpus() + [("grad norm is nan in fp16", "fp16_overflow_nan", KB_SET)] * 2
    fold = fold_of("s1")
    without = train(corpus, without_fold=fold)
    kept = [r for r in corpus if fold_of(r[2]) != fold]
    assert without.reports == len(kept) < len(corpus)
    assert without.trained_on == corpus_fingerprint(corpus)  # named after what it was cut from
    assert fold_of(KB_SET) is None and {fold_of(f"set-{i}") for i in range(50)} == set(range(FOLDS))


def test_scoring_a_labelled_set_uses_a_model_that_never_saw_its_fold(tmp_path):
    """`lossdoctor eval` holds out the file it scores: the classifier then comes from a model trained
    without that file's fold (trained once, then read back from the storage home's cache)."""
    from bot.storage import cache_dir

    full = classifier_for(KB)
    assert classifier_for(KB, None) is full and classifier_for(KB, "a-set-that-is-not-labelled-here") is full
    held = classifier_for(KB, "dev")
    fold_lines = sum(1 for _, _, s in labelled_reports(KB) if fold_of(s) == fold_of("dev"))
    assert held is not full and held.reports == full.reports - fold_lines
    assert (cache_dir() / f"classifierfold{fold_of('dev')}-{full.trained_on}.pickle").is_file()
    assert classifier_for(KnowledgeBase(entries=KB.entries, directory=tmp_path)) is None  # only the bundled one has labelled reports


def test_a_stale_model_is_retrained_and_without_numpy_the_shipped_one_is_used(monkeypatch):
    """Edited examples make the shipped file stale: the snapshot build retrains it (a few seconds);
    where training cannot run (numpy missing), the shipped model is used as it is, never a crash."""
    reports = labelled_reports(KB)
    edited = reports + [("my fp16 loss is nan", "fp16_overflow_nan", "a-new-set")]
    shipped = ReportClassifier.read(MODEL_FILE)
    monkeypatch.setattr(classifier, "train", lambda r, **kw: ReportClassifier([], {}, None, None, [], corpus_fingerprint(r), len(r)))
    assert classifier.current_model(reports).weights == shipped.weights  # current: read, not retrained
    assert classifier.current_model(edited).reports == len(edited)  # stale: retrained

    def no_numpy(r, **kw):
        raise ImportError("No module named 'numpy'")

    monkeypatch.setattr(classifier, "train", no_numpy)
    assert classifier.current_model(edited).trained_on == shipped.trained_on


def _always(failure_class: str) -> ReportClassifier:
    """A real classifier trained to put nearly all its weight on `failure_class` whatever it reads."""
    words = "training loss model the a is of to and in trainer labels error step"
    other = "fp16_overflow_nan" if failure_class == "out_of_scope" else "out_of_scope"
    return train([(words, failure_class, "s1"), (words, failure_class, "s2"), ("zzz qqq", other, "s3"), ("zzz qqq", other, "s4")])


def test_decisive_evidence_stands_whatever_the_classifier_says(monkeypatch):
    no_labels = ("ValueError: The model did not return a loss from the inputs, only the following keys: logits. "
                 "For reference, the inputs it received are input_ids,attention_mask.\n")
    before = diagnose(parse_text(no_labels), KB)
    assert before.candidates[0].score >= 3.0
    monkeypatch.setattr(classifier, "classifier_for", lambda kb, held_out=None: _always("out_of_scope"))
    after = diagnose(parse_text(no_labels), KB)
    assert after.failure_class == before.failure_class and after.candidates[0].entry == before.candidates[0].entry


def test_weak_evidence_gives_way_when_reports_worded_like_it_were_not_loss_failures(monkeypatch):
    weak = "The grad_norm is nan from the first step when I use flash attention 2 with padding"
    before = diagnose(parse_text(weak), KB)
    assert before.failure_class is not None and before.candidates[0].score < 3.0
    monkeypatch.setattr(classifier, "classifier_for", lambda kb, held_out=None: _always("out_of_scope"))
    after = diagnose(parse_text(weak), KB)
    assert after.verdict == "unknown" and after.failure_class is None
    assert "were not loss-computation failures" in after.abstain_reason
    assert after.candidates[0].entry == before.candidates[0].entry  # still listed, not claimed


def test_the_classifier_fills_the_list_with_its_likely_classes(monkeypatch):
    monkeypatch.setattr(classifier, "classifier_for", lambda kb, held_out=None: _always("label_out_of_bounds"))
    d = diagnose(parse_text("my training loss is nan and the labels look wrong"), KB)
    assert d.failure_class == "label_out_of_bounds"
    assert d.candidates[0].why[0].startswith("a classifier of report wording, trained on 4 labelled reports, gives this cause")


def test_lossdoctor_kb_train_writes_the_model(tmp_path):
    from typer.testing import CliRunner

    from bot.lossdoctor_cli import app

    out = tmp_path / "model.json.gz"
    result = CliRunner().invoke(app, ["kb", "train", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained on " in result.output and "labelled reports" in result.output
    assert out.read_bytes() == MODEL_FILE.read_bytes()  # the same reports give the same file


@pytest.mark.parametrize("text", ["", "\x00\x01", "日本語のテキスト" * 5000])
def test_any_text_gets_probabilities(text):
    p = classifier_for(KB).probabilities(text)
    assert abs(sum(p.values()) - 1) < 1e-6
