"""reproducer.checks: judging a baseline against the report, and a fix against the bar."""

from __future__ import annotations

import json
import math

from bot.models import ExceptionInfo, Report, RunRecord
from knowledge.schema import Expect
from reproducer.checks import baseline_reproduces, fix_verified

NO_LOSS = (
    "The model did not return a loss from the inputs, only the following keys: {}. "
    "For reference, the inputs it received are {}."
)


def record(**fields) -> dict:
    """A run record as the child returns it (every RunRecord field present)."""
    return RunRecord.model_validate({"ok": False, **fields}).model_dump()


def failed(type_: str, message: str) -> dict:
    return record(ok=False, exception={"type": type_, "message": message}, supervised_tokens=0)


TRAINED = record(
    ok=True, loss=6.01, losses=[6.26, 6.02, 5.75], supervised_tokens=54, prompt_tokens_supervised=0, params_changed=True
)
SEED_FAILURE = failed("ValueError", NO_LOSS.format("logits", "input_ids,attention_mask,labels"))
NO_LOSS_EXPECT = Expect(exception_type="ValueError", message="did not return a loss")


def test_same_exception_type_and_message_reproduces():
    ok, reason = baseline_reproduces(SEED_FAILURE, NO_LOSS_EXPECT, None)
    assert ok and reason.startswith("ValueError as in the report")


def test_other_type_or_message_does_not_reproduce():
    ok, reason = baseline_reproduces(failed("KeyError", "'text'"), NO_LOSS_EXPECT, None)
    assert not ok and "expected ValueError" in reason and "KeyError: 'text'" in reason
    ok, reason = baseline_reproduces(failed("ValueError", "something else"), NO_LOSS_EXPECT, None)
    assert not ok and "did not return a loss" in reason


def test_a_run_that_trains_does_not_reproduce_an_exception():
    ok, reason = baseline_reproduces(TRAINED, NO_LOSS_EXPECT, None)
    assert not ok and "trained without an exception (loss 6.01, 54 supervised tokens)" in reason


def test_key_sets_must_match_the_report_in_any_order():
    report = Report(returned_keys=["logits"], received_inputs=["labels", "input_ids", "attention_mask"])
    assert baseline_reproduces(SEED_FAILURE, NO_LOSS_EXPECT, report)[0]
    without_labels = Report(returned_keys=["logits"], received_inputs=["input_ids", "attention_mask"])
    ok, reason = baseline_reproduces(SEED_FAILURE, NO_LOSS_EXPECT, without_labels)
    assert not ok and "received input_ids,labels but yours received input_ids" in reason
    other_keys = Report(returned_keys=["last_hidden_state"], received_inputs=None)
    ok, reason = baseline_reproduces(SEED_FAILURE, NO_LOSS_EXPECT, other_keys)
    assert not ok and "returned logits but yours returned last_hidden_state" in reason


def test_cache_keys_differ_between_stacks_and_are_ignored():
    legacy_report = Report(returned_keys=["logits", "past_key_values"], received_inputs=["input_ids", "attention_mask", "labels"])
    assert baseline_reproduces(SEED_FAILURE, NO_LOSS_EXPECT, legacy_report)[0]
    legacy_run = failed("ValueError", NO_LOSS.format("logits,past_key_values", "input_ids,attention_mask,labels"))
    assert baseline_reproduces(legacy_run, NO_LOSS_EXPECT, Report(returned_keys=["logits"]))[0]


def test_a_tokenizer_without_attention_mask_is_incidental_but_other_inputs_are_not():
    """SigLIP's tokenizer returns no attention_mask; the tiny model's always does."""
    run = failed("ValueError", NO_LOSS.format("logits_per_image,logits_per_text", "input_ids,attention_mask,pixel_values"))
    expect = Expect(exception_type="ValueError", message="did not return a loss")
    siglip = Report(returned_keys=["logits_per_image", "logits_per_text"], received_inputs=["input_ids", "pixel_values"])
    assert baseline_reproduces(run, expect, siglip)[0]
    clap = Report(returned_keys=["logits_per_audio", "logits_per_text"], received_inputs=["input_ids", "input_features"])
    ok, reason = baseline_reproduces(run, expect, clap)
    assert not ok and "returned logits_per_image,logits_per_text but yours returned logits_per_audio,logits_per_text" in reason


def test_without_an_expectation_the_reports_last_exception_type_decides():
    report = Report(exceptions=[ExceptionInfo(type="IndexError", message="x"), ExceptionInfo(type="ValueError", message="y")])
    assert baseline_reproduces(SEED_FAILURE, Expect(), report)[0]
    assert not baseline_reproduces(failed("IndexError", "Target 4 is out of bounds."), Expect(), report)[0]
    assert not baseline_reproduces(SEED_FAILURE, Expect(), None)[0]


def test_all_masked_nan_logged_as_zero_is_the_loss_zero_or_nan_symptom():
    logged_zero = record(ok=True, loss=0.0, losses=[math.nan] * 3, supervised_tokens=0, params_changed=False)
    ok, reason = baseline_reproduces(logged_zero, Expect(symptom="loss_zero_or_nan"), None)
    assert ok and "no label was supervised" in reason
    nan_steps = record(ok=True, loss=math.nan, losses=[6.2, math.nan], supervised_tokens=20, params_changed=True)
    assert baseline_reproduces(nan_steps, Expect(symptom="loss_zero_or_nan"), None)[0]
    assert not baseline_reproduces(TRAINED, Expect(symptom="loss_zero_or_nan"), None)[0]
    ok, reason = baseline_reproduces(SEED_FAILURE, Expect(symptom="loss_zero_or_nan"), None)
    assert not ok and "silent symptom" in reason


def test_other_silent_symptoms():
    masked = record(ok=True, loss=0.0, losses=[math.nan], supervised_tokens=0, params_changed=False)
    assert baseline_reproduces(masked, Expect(symptom="no_supervised_tokens"), None)[0]
    assert not baseline_reproduces(TRAINED, Expect(symptom="no_supervised_tokens"), None)[0]
    frozen = record(ok=True, loss=6.2, losses=[6.2, 6.2], supervised_tokens=30, params_changed=False)
    assert baseline_reproduces(frozen, Expect(symptom="params_unchanged"), None)[0]
    assert not baseline_reproduces(TRAINED, Expect(symptom="params_unchanged"), None)[0]
    inflated = record(ok=True, loss=40.0, losses=[48.0, 40.0], supervised_tokens=30, params_changed=True)
    assert baseline_reproduces(inflated, Expect(symptom="loss_high"), None)[0]
    assert not baseline_reproduces(TRAINED, Expect(symptom="loss_high"), None)[0]


def test_a_fix_that_trains_is_verified():
    ok, reason = fix_verified(TRAINED, responses_only=True)
    assert ok and reason == "trains: loss 6.01, 54 supervised tokens, weights changed, prompt tokens masked"


def test_fix_bar_each_condition():
    assert fix_verified(SEED_FAILURE, responses_only=False) == (
        False,
        "still fails: it raised ValueError: " + NO_LOSS.format("logits", "input_ids,attention_mask,labels"),
    )
    cases = {
        "not a finite positive number": {"loss": 0.0},
        "not a finite positive": {"loss": math.nan},
        "a step loss is not finite": {"losses": [6.0, math.inf]},
        "no label token is supervised": {"supervised_tokens": 0},
        "weights did not change": {"params_changed": False},
        "12 prompt tokens are supervised too": {"prompt_tokens_supervised": 12},
        "could not be checked": {"prompt_tokens_supervised": None},
    }
    for expected, change in cases.items():
        ok, reason = fix_verified({**TRAINED, **change}, responses_only=True)
        assert not ok and expected in reason, (change, reason)
    assert fix_verified({**TRAINED, "prompt_tokens_supervised": 12}, responses_only=False)[0]


def test_records_that_went_through_json_are_judged_the_same():
    logged_zero = record(ok=True, loss=0.0, losses=[math.nan] * 3, supervised_tokens=0, params_changed=False)
    again = json.loads(json.dumps(logged_zero))  # the child writes NaN as Python's json does
    assert baseline_reproduces(again, Expect(symptom="loss_zero_or_nan"), None)[0]
    assert not fix_verified(again, responses_only=False)[0]


def test_an_entry_may_expect_one_of_several_exception_types():
    expect = Expect(exception_type="ValueError|KeyError", message="No columns in the dataset match|^'text'$")
    removed_column = {"ok": False, "exception": {"type": "KeyError", "message": "'text'"}}
    no_columns = {"ok": False, "exception": {"type": "ValueError", "message": "No columns in the dataset match the model's forward method signature"}}
    other = {"ok": False, "exception": {"type": "TypeError", "message": "'text'"}}
    assert baseline_reproduces(removed_column, expect, None)[0]
    assert baseline_reproduces(no_columns, expect, None)[0]
    assert not baseline_reproduces(other, expect, None)[0]
    assert not baseline_reproduces({"ok": False, "exception": {"type": "KeyErrorX", "message": "'text'"}}, expect, None)[0]


def test_a_key_error_must_miss_the_same_key_as_the_report():
    expect = Expect(exception_type="ValueError|KeyError", message="No columns in the dataset match|^'?(text|example_id)'?$")
    run = {"ok": False, "exception": {"type": "KeyError", "message": "'text'"}}
    assert baseline_reproduces(run, expect, Report(exceptions=[ExceptionInfo(type="KeyError", message="'text'")]))[0]
    ok, reason = baseline_reproduces(run, expect, Report(exceptions=[ExceptionInfo(type="KeyError", message="'example_id'")]))
    assert not ok and "missed the key 'text' and yours missed 'example_id'" in reason
    assert baseline_reproduces(run, expect, Report())[0]  # a report without a KeyError does not constrain the key
