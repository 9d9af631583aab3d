"""bot.core.diagnose: abstention, candidates, questions and how reproduction sets the verdict.

The reproducer is injected at its seam (a callable); the real one is tested through the
sandbox in tests/reproducer/test_engine.py."""

from __future__ import annotations

import pytest

from bot.core import diagnose, in_play_candidates
from bot.models import Candidate, ExceptionInfo, FixOutcome, Report, Reproduction, RunRecord
from bot.parse import parse_text
from knowledge.kb import default_kb
from knowledge.matcher import ALTERNATIVE, is_guess

KB = default_kb()
NO_LOSS_NO_LABELS = (
    "ValueError: The model did not return a loss from the inputs, only the following keys: logits. "
    "For reference, the inputs it received are input_ids,attention_mask.\n"
)


def test_abstains_when_nothing_fits():
    d = diagnose(parse_text("How do I change the learning rate schedule to cosine?"), KB)
    assert d.verdict == "unknown" and d.failure_class is None
    assert d.abstain_reason and "No knowledge entry fits" in d.abstain_reason
    assert d.fixes == [] and d.reproduction is None
    assert "could not match" in d.reply


def test_out_of_scope_is_recognised_and_abstains():
    d = diagnose(parse_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a total capacity of 15.77 GiB\n"), KB)
    assert d.verdict == "unknown" and d.failure_class is None
    assert d.candidates and d.candidates[0].failure_class == "out_of_scope"
    assert "not a loss-computation failure" in d.abstain_reason


def test_matched_lists_candidates_with_why_and_fixes_not_run():
    d = diagnose(parse_text(NO_LOSS_NO_LABELS), KB)
    assert d.verdict == "matched"
    assert d.failure_class == d.candidates[0].failure_class
    assert all(c.why for c in d.candidates)
    assert d.fixes and all(f.status == "not_run" for f in d.fixes)
    assert d.candidates[0].score == max(c.score for c in d.candidates)  # decisive evidence leads


def test_after_the_first_candidate_the_other_causes_follow_the_wording_classifier():
    """The first candidate is the weighed judgement; the first candidate of each other class follows in
    the order of the wording classifier's probabilities (the order that put the most unseen causes in the
    first three), whatever their evidence scores; the rest comes last."""
    from knowledge.classifier import classifier_for

    report = parse_text(NO_LOSS_NO_LABELS)
    d = diagnose(report, KB)
    p = classifier_for(KB).probabilities(report.text)
    seen, firsts = {d.candidates[0].failure_class, "out_of_scope"}, []
    for c in d.candidates[1:]:
        if c.failure_class not in seen:
            seen.add(c.failure_class)
            firsts.append(c.failure_class)
    assert len(firsts) >= 2
    assert [p[c] for c in firsts] == sorted((p[c] for c in firsts), reverse=True)


def test_bare_message_asks_the_question_that_splits_the_causes():
    d = diagnose(parse_text(NO_LOSS_NO_LABELS), KB)
    assert len(in_play_candidates(d.candidates)) >= 2
    assert d.question and "collator" in d.question.lower()
    assert d.question in d.reply


def test_in_play_keeps_close_candidates_only():
    cands = [Candidate(entry=f"e{i}", failure_class=cls, score=s) for i, (cls, s) in
             enumerate([("out_of_scope", 9.0), ("pad_token_missing", 8.0), ("labels_not_padded", 6.5), ("fp16_overflow_nan", 5.0)])]
    assert [c.entry for c in in_play_candidates(cands)] == ["e1", "e2"]


def _reproducer(reproduced: bool, status: str):
    def reproduce(report, candidates, kb):
        entry = kb.get(candidates[-1].entry)  # the run supports the LAST in-play candidate
        fix = entry.fixes[0]
        baseline = RunRecord(ok=False, exception=ExceptionInfo(type="ValueError", message="x"))
        repro = Reproduction(reproduced=reproduced, versions={"transformers": "5.24.0"}, entry=entry.id, baseline=baseline)
        return repro, [FixOutcome(id=fix.id, title=fix.title, entry=entry.id, status=status, evidence={"loss": 6.1})]
    return reproduce


def test_verified_needs_a_reproduced_baseline_and_a_verified_fix():
    report = parse_text(NO_LOSS_NO_LABELS)
    verified = diagnose(report, KB, reproduce=_reproducer(True, "verified"))
    assert verified.verdict == "verified"
    supported = verified.reproduction.entry
    assert verified.candidates[0].entry == supported  # the candidate the run supports goes first
    assert verified.failure_class == KB.get(supported).failure_class
    assert "verified on a tiny reproduction: loss 6.100" in verified.reply

    assert diagnose(report, KB, reproduce=_reproducer(True, "failed")).verdict == "reproduced"
    not_reproduced = diagnose(report, KB, reproduce=_reproducer(False, "verified"))
    assert not_reproduced.verdict == "matched"
    assert "Not reproduced" in not_reproduced.reply


def test_secrets_are_reported_and_never_echoed():
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    d = diagnose(parse_text(NO_LOSS_NO_LABELS + f"\nexport GITHUB_TOKEN={token}\n"), KB)
    assert d.redacted == ["github_token"]
    assert token not in d.model_dump_json()
    assert "rotate" in d.reply


def test_report_notes_reach_the_reply():
    d = diagnose(Report(text="x", notes=["input was truncated to its last 8 MB"]), KB)
    assert "input was truncated" in d.reply


def test_two_causes_get_their_first_fixes_tried_together():
    """When both candidates reproduce and no single fix works, the engine runs their first fixes combined."""
    from reproducer.engine import Outcome, Reproducer, plan_for

    seen = []

    def run_batch(runs, python=None):  # the sandbox seam: records the combined scenario, answers a training run
        seen.extend(runs)
        return {"runs": [{"ok": True, "loss": 5.9, "supervised_tokens": 40, "params_changed": True, "losses": [6.1, 5.9], "prompt_tokens_supervised": 0}]}

    first, second = (KB.get(e) for e in ("seq2seq-collator-creates-no-labels", "padding-collator-creates-no-labels"))
    report = parse_text(NO_LOSS_NO_LABELS)
    outcomes = [Outcome(plan_for(report, e), RunRecord(ok=False), True, "", [], [], {}) for e in (first, second)]
    combined = Reproducer(run_batch=run_batch)._combined_fix(report, outcomes, outcomes[0])
    fix_a, fix_b = outcomes[0].plan.fixes[0][0], outcomes[1].plan.fixes[0][0]
    assert combined.id == f"{fix_a.id}+{fix_b.id}" and combined.status == "verified"
    assert combined.ops == [op.op for op in (*fix_a.ops, *fix_b.ops)]
    assert seen[0]["fix"] == combined.id and outcomes[0].runs[-1].verdict == "verified"


def test_weaker_alternatives_fill_the_list_but_are_never_in_play():
    from bot.core import CLOSE_SCORE
    from knowledge.matcher import ALTERNATIVE_GAP, ALTERNATIVES

    assert ALTERNATIVE_GAP > CLOSE_SCORE
    report = parse_text(open("examples/trainer-seq2seq-collator.txt", encoding="utf-8").read())
    d = diagnose(report, KB)
    classes = list(dict.fromkeys(c.failure_class for c in d.candidates))
    assert classes[0] == "collator_does_not_create_labels"
    assert len(classes) >= ALTERNATIVES  # the evidence alone supports one class; alternatives follow
    alternatives = [c for c in d.candidates if "a weaker alternative" in c.why[-1]]
    assert alternatives and all(c.failure_class != "out_of_scope" for c in alternatives)
    assert all(c.score <= d.candidates[0].score - ALTERNATIVE_GAP for c in alternatives)
    in_play = {c.entry for c in in_play_candidates(d.candidates)}
    assert not in_play & {c.entry for c in alternatives}
    assert {f.entry for f in d.fixes} <= in_play  # no fix is offered on an alternative's account


def test_a_weaker_alternative_is_never_in_play_even_close_to_a_weak_lead():
    """The wording classifier's alternatives score at most its probability, so one can come within
    CLOSE_SCORE of a weak lead; it is still not reproduced or fixed, while a candidate with evidence is."""
    make = lambda entry, score, *why: Candidate(entry=entry, failure_class="fp16_overflow_nan", title="t", score=score, why=list(why))  # noqa: E731
    lead = make("lead", 1.5, "the training loss is nan")
    alternative = make("alt", 1.0, "a classifier of report wording ... gives this cause 40%", ALTERNATIVE)
    evidenced = make("other", 1.0, "grad_norm is nan")
    assert [c.entry for c in in_play_candidates([lead, alternative, evidenced])] == ["lead", "other"]


def test_abstention_is_not_filled_with_alternatives():
    d = diagnose(parse_text("How do I change the learning rate schedule to cosine?"), KB)
    assert d.candidates == []


def test_a_look_alike_that_leads_on_wording_alone_names_the_closest_cause_too():
    """Abstaining on wording alone, the reason hedges and names the in-scope candidate listed after it;
    a look-alike with decisive evidence (a CUDA OOM) is stated plainly."""
    lead = Candidate(entry="tokenizer-or-dataset-loading-error", failure_class="out_of_scope", title="t", score=1.0,
                     why=["no decisive evidence; the wording resembles this entry (lexical 20.0)"])
    guess = Candidate(entry="unused-columns-removed-before-collator", failure_class="remove_unused_columns_drops_columns",
                      title="Trainer removed the columns", score=0.9, why=["w"])
    from bot.core import _closest_cause, _out_of_scope

    assert _closest_cause([lead, guess]) == guess
    reason = _out_of_scope(KB.get(lead.entry), guess)
    assert reason.startswith("Nothing in this report is decisive.")
    assert "Trainer removed the columns (`remove_unused_columns_drops_columns`)" in reason
    decisive = lead.model_copy(update={"why": ["the traceback ends in AutoTokenizer.from_pretrained"]})
    assert _closest_cause([decisive, guess]) is None
    oom = diagnose(parse_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB.\n"), KB)
    assert oom.abstain_reason.startswith("This looks like")


@pytest.fixture(scope="module")
def evidence_only_kb(tmp_path_factory):
    """The bundled entries loaded from a copy: a knowledge base other than the bundled one has no
    wording classifier, so only the evidence and the entries' wording rank."""
    import shutil

    from knowledge.kb import ENTRIES_DIR, load_kb

    copy = tmp_path_factory.mktemp("kb") / "entries"
    shutil.copytree(ENTRIES_DIR, copy)
    return load_kb(copy)


def test_a_guess_on_wording_alone_is_not_a_diagnosis(evidence_only_kb):
    """When nothing the report shows speaks for any cause, the closest wording is offered as a guess:
    the verdict is unknown, no class is claimed, and the guess stays listed with what would decide it."""
    prose = "after training the grad norm looks weird with gradient accumulation"
    d = diagnose(parse_text(prose), evidence_only_kb)
    assert d.candidates and is_guess(d.candidates[0])
    assert d.verdict == "unknown" and d.failure_class is None and d.fixes == []
    assert f"(`{d.candidates[0].failure_class}`), but that is a guess" in d.abstain_reason
    assert "**Closest known causes (guesses, not a diagnosis)**" in d.reply
    assert f"- {d.candidates[0].title} (`{d.candidates[0].failure_class}`)" in d.reply
    evidenced = diagnose(parse_text("RuntimeError: element 0 of tensors does not require grad and does not have a grad_fn"), KB)
    assert not is_guess(evidenced.candidates[0]) and evidenced.failure_class == "no_grad_gradient_checkpointing"


def test_the_wording_classifier_turns_a_guess_it_backs_into_a_diagnosis_and_says_so(evidence_only_kb):
    """With the bundled knowledge base the same prose is also weighed by the classifier trained on the
    labelled reports: it backs the closest wording, so the class is named, with the classifier's share
    as the first reason and the entry's own wording after it."""
    prose = "after training the grad norm looks weird with gradient accumulation"
    d = diagnose(parse_text(prose), KB)
    assert d.verdict == "matched" and d.failure_class == "gradient_accumulation_loss_scaling"
    assert d.candidates[0].why[0].startswith("a classifier of report wording, trained on ")
    assert any(w.startswith("no decisive evidence; the wording resembles") for w in d.candidates[0].why[1:])
    assert not is_guess(d.candidates[0])


def test_set_up_alone_or_evidence_against_does_not_make_a_candidate_more_than_a_guess():
    wording = "no decisive evidence; the wording resembles this entry (lexical 20.0)"
    make = lambda *why: Candidate(entry="e", failure_class="fp16_overflow_nan", title="t", score=1.0, why=[*why, wording])  # noqa: E731
    assert is_guess(make())
    assert is_guess(make("fp16 is on (set-up only: not counted without a sign of the failure)"))
    assert is_guess(make("(against) bf16 is on"))
    assert not is_guess(make("the training loss is nan"))
    assert not is_guess(Candidate(entry="e", failure_class="fp16_overflow_nan", title="t", score=4.0, why=["the training loss is nan"]))


def test_when_nothing_fits_a_visible_failure_still_lists_possible_causes_but_claims_none():
    """A logged loss of 0 with words no entry knows: the entries that share the symptom are listed as
    possibilities (top-3 material for the user), the verdict stays unknown."""
    report = parse_text("训练 loss 从第一步开始就一直是 0，流程是默认那套")
    assert report.losses == [0.0]
    d = diagnose(report, KB)
    assert d.verdict == "unknown" and d.failure_class is None and d.fixes == []
    assert d.candidates and all(c.why[-1] == ALTERNATIVE for c in d.candidates)
    assert all(is_guess(c) for c in d.candidates)
    assert "but that is a guess" in d.abstain_reason
    assert diagnose(parse_text("训练流程是默认那套，怎么改学习率？"), KB).candidates == []  # no failure shown: nothing listed


def test_a_vision_batch_with_labels_and_no_loss_points_at_the_model_not_the_seq2seq_collator():
    # taxonomy.md's model_requires_extra_loss_inputs signature, with no model named
    d = diagnose(parse_text(
        "ValueError: The model did not return a loss from the inputs, only the following keys: logits,"
        "past_key_values,image_hidden_states. For reference, the inputs it received are "
        "input_ids,attention_mask,pixel_values,labels.\n"), KB)
    assert d.failure_class == "model_requires_extra_loss_inputs"
    seq2seq = next(c for c in d.candidates if c.entry == "seq2seq-collator-creates-no-labels")
    assert any(w.startswith("(against) the batch holds pixel_values") for w in seq2seq.why)
    # the same message on a text-only batch keeps the collator cause first
    d = diagnose(parse_text(
        "ValueError: The model did not return a loss from the inputs, only the following keys: logits. "
        "For reference, the inputs it received are input_ids,attention_mask,labels.\n"), KB)
    assert d.failure_class == "collator_does_not_create_labels"


def test_labels_in_another_shape_after_collation_is_the_unpadded_labels_cause():
    d = diagnose(parse_text("My labels tensor shape differs from the input_ids shape after collation, so training fails."), KB)
    assert d.failure_class == "labels_not_padded"


def test_plural_nans_count_as_a_failure_and_as_the_fp16_symptom():
    d = diagnose(parse_text("Our script turns fp16 on by default. I get NaNs when it's turned on; without it training is normal."), KB)
    assert d.failure_class == "fp16_overflow_nan"


def test_integer_multi_hot_targets_of_any_integer_dtype_point_at_the_label_dtype():
    d = diagnose(parse_text(
        "loss = F.cross_entropy(pred, label)\n"
        "RuntimeError: Expected floating point type for target with class probabilities, got Char\n"), KB)
    assert d.failure_class == "classification_label_dtype"


def test_layoutlm_bbox_range_error_is_not_a_label_out_of_range():
    d = diagnose(parse_text(
        "Fine-tuning LayoutLMv2ForTokenClassification, CUDA error: device-side assert triggered. On CPU:\n"
        "IndexError: The `bbox` coordinate values should be within 0-1000 range.\n"), KB)
    assert d.failure_class != "label_out_of_bounds"
    # the bbox message itself counts against the label-out-of-range entry (whether or not its wording lists it)
    from knowledge.matcher import evidence_score

    report = parse_text("CUDA error: device-side assert triggered. On CPU:\n"
                        "IndexError: The `bbox` coordinate values should be within 0-1000 range.\n")
    scored = evidence_score(KB.get("class-label-outside-num-labels"), report)
    assert scored is not None and any(w.startswith("(against)") and "bbox" in w for w in scored[1])


def test_asking_whether_the_checkpoint_warning_is_expected_is_not_the_checkpointing_failure():
    d = diagnose(parse_text(
        "During LoRA training of Qwen2-VL (unfreeze_vision_tower=False) the log is full of:\n"
        "/x/torch/utils/checkpoint.py:87: UserWarning: None of the inputs have requires_grad=True. Gradients will be None\n"
        "  warnings.warn(\n"
        "I want to know if this situation is correct and meets expectations?\n"), KB)
    assert d.failure_class is None


def test_labels_said_to_need_padding_by_hand_with_the_padding_collator_is_the_unpadded_labels_cause():
    d = diagnose(parse_text(
        "My features already hold input_ids, attention_mask and labels of different lengths.\n"
        "collator = DataCollatorWithPadding(tokenizer=tokenizer, return_tensors='pt')\n"
        "input_ids come out padded, but the batch can't be built once the labels are there; "
        "I have to pad the labels myself to make it run.\n"), KB)
    assert d.failure_class == "labels_not_padded"


def test_device_clash_inside_library_loss_code_is_a_library_bug_and_in_model_code_a_split_model():
    clash = "RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:1 and cuda:0!\n"
    library = diagnose(parse_text(
        "model loaded with device_map='auto' on 2 GPUs\n"
        '  File "/venv/lib/python3.11/site-packages/transformers/loss/loss_utils.py", line 28, in fixed_cross_entropy\n'
        "    loss = loss / num_items_in_batch\n" + clash), KB)
    assert library.failure_class == "library_bug_loss_path"
    assert "distributed_setup_issue" in [c.failure_class for c in library.candidates[:3]]
    remote = diagnose(parse_text(
        "model loaded with device_map='auto' on 2 GPUs\n"
        '  File "/root/.cache/huggingface/modules/transformers_modules/chatglm2-6b/modeling_chatglm.py", line 957, in forward\n'
        "    loss = loss_fct(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))\n"
        + clash.replace("!\n", "! (when checking argument for argument target in method wrapper_CUDA_nll_loss_forward)\n")), KB)
    assert remote.failure_class == "distributed_setup_issue"


def test_num_labels_set_to_the_largest_label_with_a_nan_loss_is_a_label_out_of_range():
    d = diagnose(parse_text(
        "TFBertForSequenceClassification, loss becomes nan after a while\n"
        "```python\n"
        "num_labels = max(max(train_label), max(test_label))\n"
        'config = BertConfig.from_pretrained("bert-base-cased", num_labels=num_labels)\n'
        "```\n"
        " 1200/10000 [==>....] - loss: 1.9731 - accuracy: 0.2342\n"
        " 2400/10000 [=====>..] - loss: nan - accuracy: 0.2371\n"), KB)
    assert d.failure_class == "label_out_of_bounds"
    fixed = diagnose(parse_text("num_labels = max(train_label) + 1\n loss: nan\n"), KB)
    assert not any("largest label value" in w for c in fixed.candidates for w in c.why)


def test_old_torch_refusing_long_tensors_in_bce_with_logits_is_the_integer_target_mix_up():
    d = diagnose(parse_text(
        "batch_loss = torch.nn.BCEWithLogitsLoss()(preds, labels)\n"
        '  File "/usr/local/lib/python3.7/site-packages/torch/nn/functional.py", line 2435, in binary_cross_entropy_with_logits\n'
        "    return torch.binary_cross_entropy_with_logits(input, target, weight, pos_weight, reduction_enum)\n"
        "RuntimeError: _th_exp_out not supported on CUDAType for Long\n"), KB)
    assert d.failure_class == "classification_label_dtype"
    assert any("older torch" in w for w in d.candidates[0].why)


def test_a_loss_that_falls_counts_against_the_zero_gradient_fused_loss():
    """'The same curve whatever the learning rate' suggests updates that never reach the weights, unless the
    logged loss itself falls: then they do (a plateau, a tuning question)."""
    from knowledge.matcher import evidence_score

    def score(losses: str) -> tuple[float, list[str]]:
        report = parse_text(f"LoRA r=4, lr 3e-4.\n{losses}\nTried again with lr 2e-5 and the curve is exactly the same.\n")
        return evidence_score(KB.get("unsloth-fused-loss-zero-gradients"), report)

    flat = score("step 50 loss 1.62\nstep 100 loss 1.62\nstep 150 loss 1.61\nstep 200 loss 1.62")
    falling = score("step 50 loss 1.62\nstep 100 loss 1.21\nstep 150 loss 1.17\nstep 200 loss 1.15")
    assert not any(w.startswith("(against)") for w in flat[1])
    assert any(w.startswith("(against)") and "falls" in w for w in falling[1])
    assert falling[0] < flat[0]


def test_a_custom_forward_with_kwargs_that_ignores_num_items_in_batch_is_the_accumulation_scaling():
    """Trainer reads **kwargs in forward as 'this model normalises its own loss' (model_accepts_loss_kwargs)
    and stops dividing by gradient_accumulation_steps."""
    from knowledge.matcher import evidence_score

    text = (
        "With gradient_accumulation_steps=8 my custom model's loss looks 8x too big. Its forward is\n"
        "def forward(self, input_ids, attention_mask=None, labels=None, **kwargs): and it never reads\n"
        "num_items_in_batch, yet Trainer sets model_accepts_loss_kwargs because of the **kwargs.\n"
    )
    d = diagnose(parse_text(text), KB)
    assert d.failure_class == "gradient_accumulation_loss_scaling"
    _, why = evidence_score(KB.get("gradient-accumulation-inflates-logged-loss"), parse_text(text))
    assert any("model_accepts_loss_kwargs" in w for w in why)
    _, without = evidence_score(KB.get("gradient-accumulation-inflates-logged-loss"), parse_text(text.replace("model_accepts_loss_kwargs", "it")))
    assert not any("model_accepts_loss_kwargs" in w for w in without)


def test_mt5_that_only_predicts_extra_id_0_after_training_is_the_fp16_overflow():
    """The collapse mT5 shows after an fp16 run, even when the paste never says fp16 (wrappers turn it on)."""
    text = (
        "Fine-tuned google/mt5-base for one epoch on my summarisation data with simpletransformers.\n"
        "predict() now gives ['<extra_id_0>', '<extra_id_0>', '<extra_id_0>'] for every input; t5-base is fine.\n"
    )
    d = diagnose(parse_text(text), KB)
    assert d.failure_class == "fp16_overflow_nan"
    assert any("<extra_id_0>" in w for w in d.candidates[0].why)
    plain = diagnose(parse_text("Fine-tuned google/mt5-base; predict() gives wrong summaries for every input.\n"), KB)
    assert not any("<extra_id_0>" in w for c in plain.candidates for w in c.why)


def test_a_generate_only_paste_with_an_inference_error_is_not_a_training_failure():
    text = (
        "Qwen2-7B in float16 with attn_implementation='eager' prints !!!!!!!! and inf / nan in the logits:\n"
        "```python\n"
        'model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2-7B-Instruct", torch_dtype=torch.float16, attn_implementation="eager")\n'
        "out = model.generate(**inputs, max_new_tokens=32)\n"
        "```\n"
    )
    d = diagnose(parse_text(text), KB)
    assert d.failure_class is None and d.verdict == "unknown"
    trained = diagnose(parse_text(text + "The same happens during training: {'loss': nan, 'grad_norm': nan}\n"), KB)
    assert trained.failure_class is not None


@pytest.mark.parametrize(
    "text",
    [
        # SetFit's multi-label strategy on one class id per row
        'model = SetFitModel.from_pretrained("BAAI/bge-small-en-v1.5", multi_target_strategy="one-vs-rest")\n'
        "labels are one int per row (0..4)\n"
        '  File "setfit/modeling.py", line 257, in sentence_pairs_generation_multilabel\n'
        "    sample_labels = np.where(labels[first_idx, :] == 1)[0]\n"
        "IndexError: too many indices for array: array is 1-dimensional, but 2 were indexed\n",
        # a multi-label head given lists of class ids; binary cross-entropy takes no class ids to be out of range
        'model = AutoModelForSequenceClassification.from_pretrained("roberta-base", num_labels=8, '
        'problem_type="multi_label_classification")\n'
        "My labels column holds lists of class ids per text, like [1, 5]. Training crashes in the first step inside "
        "binary_cross_entropy_with_logits. What should the labels look like?\n",
    ],
    ids=["setfit-one-class-id-per-row", "lists-of-class-ids"],
)
def test_a_multi_label_mode_given_class_ids_is_the_label_format_entry_not_an_out_of_range_id(text):
    d = diagnose(parse_text(text), KB)
    assert d.failure_class == "classification_label_dtype"
    assert d.candidates[0].entry == "integer-multi-hot-labels-for-multi-label-classification"
    assert all(c.entry != "class-label-outside-num-labels" or c.score < d.candidates[0].score for c in d.candidates)


def test_train_on_responses_only_said_not_to_work_in_prose_is_the_marker_entry():
    text = (
        "Unsloth's train_on_responses_only doesn't work for me with the Alpaca prompt "
        "(### Instruction: / ### Response:). What should instruction_part and response_part be?\n"
    )
    d = diagnose(parse_text(text), KB)
    assert d.candidates and d.candidates[0].entry == "unsloth-responses-only-markers-not-found"
    assert d.failure_class == "response_template_not_found"


def test_untrained_special_tokens_yield_when_training_runs_and_the_loss_goes_down_normally():
    from knowledge.matcher import evidence_score

    entry = KB.get("unsloth-untrained-special-tokens")
    text = ("Unsloth, Qwen3 base, my data uses new special tokens <|GIM_QUERY|> whose embeddings were never trained "
            "(embed_tokens and lm_head frozen). At inference the model drifts after <|im_end|>.\n")
    before, _ = evidence_score(entry, parse_text(text))
    after, why = evidence_score(entry, parse_text(text + "Training itself runs and the loss goes down normally.\n"))
    assert after < before and any(w.startswith("(against)") and "training itself is fine" in w for w in why)


def test_accumulation_settings_compared_only_when_the_paste_has_two_different_values():
    from knowledge.matcher import evidence_score

    def fired(text: str) -> bool:
        _, why = evidence_score(KB.get("gradient-accumulation-inflates-logged-loss"), parse_text(text))
        return any("to two different values" in w for w in why)

    one = "per_device_train_batch_size=1, gradient_accumulation_steps=8\n{'loss': 2.64}\n"
    assert not fired(one)
    assert not fired(one + one)  # the same setting pasted twice is one run
    assert fired("per_device_train_batch_size=8, gradient_accumulation_steps=1\n{'loss': 1.91}\n" + one)
    assert fired("per_device_train_batch_size=2, gradient_accumulation_steps=4\n{'loss': 1.91}\n" + one)


@pytest.mark.parametrize(
    ("text", "fired"),
    [
        ("My MoE model fails in DPOTrainer. Training works when I set output_router_logits=False, "
         "so it seems to come from the trainer's unpacking.\n",
         "switching one option"),
        ("DPO on a Qwen MoE model dies at the first step:\n"
         "    losses = losses + self.aux_loss_coef * model_output['aux_loss']\n"
         "TypeError: unsupported operand type(s) for *: 'float' and 'NoneType'\n",
         "aux (router) loss"),
        ("同一套脚本跑 Qwen2.5 7B、14B 都正常，只有 Qwen2.5 32B 的 grad_norm 一直是 nan，数据和超参都没改。\n",
         "isolates one model or one option"),
    ],
    ids=["works-when-option-set-back", "aux-loss-none-in-trainer-loss", "only-one-model-chinese"],
)
def test_a_contrast_or_a_trainer_side_aux_loss_points_at_the_library_code_path(text, fired):
    from knowledge.matcher import evidence_score

    _, why = evidence_score(KB.get("loss-changed-by-a-library-code-path"), parse_text(text))
    assert any(fired in w for w in why), why


def test_a_loss_that_changes_with_the_number_of_nodes_at_the_same_effective_batch_is_the_token_normalisation():
    text = (
        "Multi-node SFT: I keep the effective batch (world_size * per_device_train_batch_size * "
        "gradient_accumulation_steps) identical, yet the loss curves are not comparable across 1, 2 and 4 nodes.\n"
    )
    d = diagnose(parse_text(text), KB)
    assert d.candidates[0].entry == "gradient-accumulation-inflates-logged-loss"
    assert any("number of GPUs or nodes" in w for w in d.candidates[0].why)
    one_node = diagnose(parse_text("Single GPU SFT, effective batch 64; the loss curve is noisy.\n"), KB)
    assert not any("number of GPUs or nodes" in w for c in one_node.candidates for w in c.why)


def test_a_decoder_without_inputs_in_a_training_step_means_no_labels_but_not_in_prediction():
    from pathlib import Path

    from knowledge.matcher import evidence_score

    text = (Path(__file__).parent / "data" / "t5-no-labels-decoder-error.txt").read_text()
    d = diagnose(parse_text(text), KB)
    assert d.failure_class == "labels_missing_in_dataset"
    assert any("decoder inputs" in w for w in d.candidates[0].why)
    predicting = text.replace("trainer.train()", "trainer.predict(test)").replace("training_step", "prediction_step")
    _, why = evidence_score(KB.get("custom-preprocessing-produces-no-labels"), parse_text(predicting))
    assert not any("decoder inputs" in w for w in why)


def test_fp32_said_fine_in_chinese_and_a_dict_float16_dtype_are_fp16_evidence():
    from knowledge.matcher import evidence_score

    entry = KB.get("fp16-activation-overflow-nan")
    _, why = evidence_score(entry, parse_text(
        "全精度 (fp32) 跑的时候 loss 很正常，改成 fp16 混合精度以后 {'loss': 0.0, 'grad_norm': nan}\n"))
    assert any("without fp16" in w for w in why)
    _, why = evidence_score(entry, parse_text(
        'model = CrossEncoder("all-mpnet-base-v2", num_labels=1, automodel_args={"torch_dtype": torch.float16})\n'
        "model.fit(train_dataloader=loader, epochs=1)\nevery prediction is nan after fit\n"))
    assert any("loaded in float16" in w for w in why)


def test_a_turing_card_is_found_next_to_chinese_text_and_with_a_ti_suffix():
    from knowledge.matcher import evidence_score

    entry = KB.get("fp16-activation-overflow-nan")
    for text in ("显卡是魔改22G的2080ti，开 fp16 训练 loss 一直是 nan\n", "我的卡是v100，fp16 训练 loss 是 nan\n",
                 "fp16 on a 2080 Super, loss is nan\n"):
        _, why = evidence_score(entry, parse_text(text))
        assert any("has no bf16 support" in w for w in why), text
    _, why = evidence_score(entry, parse_text("fp16 on a RTX 12080, loss is nan\n"))
    assert not any("has no bf16 support" in w for w in why)


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        # two runs in one paste, the same effective batch split differently
        ("Same data, same effective batch, only the split differs:\n"
         "run A: per_device_train_batch_size=8, gradient_accumulation_steps=1\n"
         "{'loss': 1.91, 'learning_rate': 2e-05, 'epoch': 0.1}\n"
         "run B: per_device_train_batch_size=1, gradient_accumulation_steps=8\n"
         "{'loss': 2.64, 'learning_rate': 2e-05, 'epoch': 0.1}\n",
         "gradient-accumulation-inflates-logged-loss"),
        # the same question in Korean, GA written lower-case with a particle attached
        ("Trainer로 파인튜닝 중인데 gradient accumulation 값에 따라 loss가 다르게 나옵니다. "
         "ga를 2, 4, 8로 키울수록 loss가 더 높게 찍혀요.\n",
         "gradient-accumulation-inflates-logged-loss"),
        # a CRF layer indexes with the labels: -100 padding tags are out of range
        ("BERT + CRF for NER. labels are padded with -100 like for token classification, then\n"
         "loss = -self.crf(emissions, labels, mask=attention_mask.bool())\n"
         "IndexError: index -100 is out of range\n",
         "class-label-outside-num-labels"),
        # Keras: 5-class targets against the default two-logit head
        ("model = TFBertForSequenceClassification.from_pretrained('bert-base-uncased')\n"
         "model.compile(optimizer='adam', loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))\n"
         "model.fit(train_ds, epochs=2)\n"
         "ValueError: Shapes (None, 5) and (None, 2) are incompatible\n",
         "class-label-outside-num-labels"),
        # token_type_ids among label-less inputs: an encoder classifier whose dataset has no labels
        ("ValueError: The model did not return a loss from the inputs, only the following keys: logits. "
         "For reference, the inputs it received are input_ids,token_type_ids,attention_mask.\n",
         "custom-preprocessing-produces-no-labels"),

        # transformers' notice about an unrecognised loss_type is informational
        ("Training InternVL3 with LLaMA-Factory, the log keeps printing:\n"
         "`loss_type=None` was set in the config but it is unrecognised.Using the default loss: `ForCausalLMLoss`.\n"
         "Does that mean its own loss is not supported?\n",
         "benign-training-warning"),
        # a chunked loss path reaching for lm_head on an architecture that names its head otherwise
        ("trainer = SFTTrainer(model='EleutherAI/pythia-160m', args=SFTConfig(loss_type='chunked_nll'), train_dataset=ds)\n"
         "trainer.train()\n"
         "AttributeError: 'GPTNeoXForCausalLM' object has no attribute 'lm_head'\n",
         "loss-changed-by-a-library-code-path"),
        # SFTTrainer labels every token; a sequence classifier wants one label per example
        ("model = AutoModelForSequenceClassification.from_pretrained('mistralai/Mistral-7B-v0.1', num_labels=4)\n"
         "trainer = SFTTrainer(model=model, train_dataset=ds, dataset_text_field='text', peft_config=lora)\n"
         "trainer.train()\n"
         "RuntimeError: 0D or 1D target tensor expected, multi-target not supported\n",
         "classification-head-with-token-level-labels"),
        # hand-built causal-LM targets one token shorter than input_ids trip the preprocessing's own check
        ("Traceback (most recent call last):\n"
         '  File "sft.py", line 88, in preprocess\n'
         "    assert len(input_ids) == len(targets)\n"
         "AssertionError\n"
         "It only happens on the assistant turns; tokenizer('\\n').input_ids gives two ids there.\n",
         "causal-lm-labels-tokenized-separately"),
        # a never-trained placeholder used as the pad token: NaN only once batches are padded
        ("LoRA grads are NaN as soon as I train with batch size > 1; with one example per batch they are finite.\n"
         ">>> tokenizer.pad_token\n'<|image_pad|>'\n",
         "unsloth-untrained-special-tokens"),
        # TRL's SFT preparation with Liger dropped the completion mask
        ("args = SFTConfig(output_dir='out', completion_only_loss=True, use_liger_kernel=True)\n"
         "trainer = SFTTrainer(model=model, args=args, train_dataset=ds)\n"
         "With `use_liger_kernel=True` the prompt tokens are trained as well: the prepared dataset has no\n"
         "completion_mask column any more. Without Liger the mask is there.\n",
         "loss-changed-by-a-library-code-path"),
        # an 8-bit model trained as it is, no adapter anywhere: nothing can learn (out of scope, recognised)
        ("model = AutoModelForCausalLM.from_pretrained('rinna/japanese-gpt-neox-3.6b', load_in_8bit=True, device_map='auto')\n"
         "trainer = Trainer(model=model, args=TrainingArguments(output_dir='out', num_train_epochs=3),\n"
         "                  train_dataset=train_ds, eval_dataset=val_ds, data_collator=collator)\n"
         "trainer.train()\n"
         "{'loss': 0.0, 'learning_rate': 2.9e-05, 'epoch': 0.1}\n"
         "{'eval_loss': nan, 'eval_runtime': 41.2, 'epoch': 0.1}\n",
         "model-has-no-trainable-parameters"),
        ("ValueError: You cannot perform fine-tuning on purely quantized models. Please attach trainable adapters on top of "
         "the quantized model to correctly perform fine-tuning.\n",
         "model-has-no-trainable-parameters"),
        # fewer response-key warnings with a longer limit: truncation cut the marker away
        ("SFT with a response template and completion-only loss. The log is full of\n"
         "UserWarning: Could not find response key `### Answer:` in the following instance: ... "
         "This instance will be ignored in loss calculation.\n"
         "max_seq_length=512 -> 1400 warnings\nmax_seq_length=2048 -> 200 warnings\n",
         "completion-truncated-away-silent-zero-loss"),
        # Keras' own wording for a label id beyond the head's outputs
        ("model.fit(train_ds, epochs=3)\n"
         "tensorflow.python.framework.errors_impl.InvalidArgumentError:  Received a label value of 11 which is "
         "outside the valid range of [0, 2).  Label values: 3 0 11 7\n",
         "class-label-outside-num-labels"),
        # a labels tensor handed to from_pretrained: the constructor refuses it, nothing is trained (out of scope)
        ("I have 4 classes, so I pass them when loading:\n"
         "model = AutoModelForSequenceClassification.from_pretrained('roberta-base', labels=torch.tensor(y))\n"
         "TypeError: __init__() got an unexpected keyword argument 'labels'\n",
         "setup-error-before-training"),
        # Gemma 4 before transformers fixed KV sharing without a cache: loss near chance, generate() fine
        ("LoRA SFT of google/gemma-4-E4B-it, use_cache=False and gradient checkpointing as usual.\n"
         "{'loss': 13.91, 'grad_norm': 52.3, 'learning_rate': 0.0002, 'epoch': 0.01}\n"
         "{'loss': 13.2, 'grad_norm': 47.0, 'learning_rate': 0.0002, 'epoch': 0.02}\n"
         "generate() with the base model answers fine, only training is broken.\n",
         "loss-changed-by-a-library-code-path"),
        # a tool reading its own column mapping during dataset preparation (set-up, out of scope)
        ("AutoTrain token classification dies while preparing the dataset, before a single step:\n"
         "    text_column = self.column_mapping[\"text\"]\n"
         "KeyError: 'text'\n",
         "setup-error-before-training"),
        # eval_loss missing only once the model is torch.compile'd before Trainer
        ("model = torch.compile(AutoModelForSequenceClassification.from_pretrained('bert-base-cased', num_labels=3))\n"
         "trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds)\n"
         "With torch.compile there is no eval_loss in the evaluation metrics; without compile it is logged.\n"
         "{'eval_runtime': 1.2, 'eval_samples_per_second': 80.1, 'epoch': 1.0}\n",
         "compiled-model-hides-forward-signature"),
        # Unsloth's checkpointing hook, not the user's set-up
        ("trainer_stats = trainer.train()\n"
         "/usr/local/lib/python3.11/dist-packages/unsloth_zoo/peft_utils.py in requires_grad_pre_hook(module, input)\n"
         "--> 201             input[0].requires_grad_(True)\n"
         "RuntimeError: only Tensors of floating point dtype can require gradients\n",
         "loss-changed-by-a-library-code-path"),
        # Transformer-XL's LM head named its loss `losses` in old releases
        ("run_clm.py with a transfo-xl config works for GPT-2 but not here:\n"
         '  File "transformers/trainer.py", line 1776, in compute_loss\n'
         "    loss = outputs[\"loss\"] if isinstance(outputs, dict) else outputs[0]\n"
         "KeyError: 'loss'\n",
         "model-forward-ignores-labels"),
        # two accumulation splits of one global batch compared (in Chinese)
        ("两种设置：per_device_train_batch_size=4, gradient_accumulation_steps=4 和 "
         "per_device_train_batch_size=2, gradient_accumulation_steps=8，总 batch 一样，但第一种的 loss 明显更低，为什么？\n",
         "gradient-accumulation-inflates-logged-loss"),
        # the tokenizer= -> processing_class rename notice is informational
        ("Every run since the upgrade prints this before training starts:\n"
         "FutureWarning: `tokenizer` is deprecated and will be removed in version 5.0.0 for `SFTTrainer.__init__`. "
         "Use `processing_class` instead.\n"
         "Training carries on. Do I need to change anything?\n",
         "benign-training-warning"),
        # Trainer dropped the image column the custom collator reads
        ("The following columns in the training set don't have a corresponding argument in "
         "`Qwen2VLForConditionalGeneration.forward` and have been ignored: image.\n"
         "My collate_fn reads example['image'] but the key is never there, so no pixel_values reach the model.\n",
         "unused-columns-removed-before-collator"),
        # a wrapper's (*args, **kwargs) signature: every column removed, the batch is empty
        ("ValueError: The batch received was empty, your model won't be able to train on it. Double-check that your "
         "training dataset contains keys expected by the model: args,kwargs,label_ids,label.\n",
         "unused-columns-removed-before-collator"),
        # a 2080 Ti (no bf16) written the way people write it
        ("Qwen2.5-7B LoRA on a 2080Ti, fp16=True since the card has no bf16:\n"
         "{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 0.0002, 'epoch': 0.01}\n",
         "fp16-activation-overflow-nan"),
        # the loss reshaped logits with the vocabulary size from before resize_token_embeddings
        ("model.resize_token_embeddings(len(processor.tokenizer))\ntrainer.train()\n"
         '  File "transformers/trainer.py", line 3749, in training_step\n'
         "    loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)\n"
         "RuntimeError: shape '[-1, 152064]' is invalid for input of size 94034160\n",
         "loss-changed-by-a-library-code-path"),
        # pad == eos on a reward head: it pools at the first eos of the chat template, inside the prompt
        ("model = AutoModelForSequenceClassification.from_pretrained('Qwen/Qwen2.5-0.5B-Instruct', num_labels=1)\n"
         "tokenizer.pad_token = tokenizer.eos_token\n"
         "With pad == eos the scores ignore the answer: the head takes sequence_lengths from the first <|im_end|>, "
         "which already ends the user turn. Is this expected?\n",
         "model-config-has-no-pad-token-id"),
        # Unsloth's "train on responses only" named in prose, every row's labels all -100
        ("Unsloth SFT of a Qwen3 thinking model with train on responses only switched on. After masking, "
         "every row ends up with labels that are all -100 and the samples are dropped.\n",
         "unsloth-responses-only-markers-not-found"),
        # label smoothing with a remote-code causal LM: the label smoother does not shift its labels
        ("torchrun run_clm.py --model_name_or_path Qwen/Qwen-1_8B --trust_remote_code True "
         "--label_smoothing_factor 0.1 --bf16\nThe loss goes down fast but the model repeats one token at inference.\n",
         "loss-changed-by-a-library-code-path"),
        # ms-swift refused an over-long row while encoding the data
        ("swift sft --model Qwen2-VL-2B-Instruct --max_length 10000 --truncation_strategy delete\n"
         "Traceback (most recent call last):\n"
         '  File "swift/llm/template/base.py", line 512, in encode\n'
         "    raise MaxLengthError(f'Current length of row({length}) is larger'\n"
         "swift.llm.template.base.MaxLengthError: Current length of row(11961) is larger than the max_length(10000).\n",
         "setup-error-before-training"),
        # the user printed the tokenizer's pad token id: None
        ("Traceback (most recent call last):\n  File \"run_clm_sft_with_peft.py\", line 408, in main\n"
         "    train_result = trainer.train()\n  ...\nThe run dies at step 0.\n>>> print(tokenizer.pad_token_id)\nNone\n",
         "tokenizer-has-no-pad-token"),
        # MoE router aux loss on, loss in the hundreds while the aux loss itself is small
        ("swift sft --model gpt-oss --router_aux_loss_coef 0.9\n"
         "{'loss': 930.53, 'grad_norm': 143.6, 'aux_loss': 4.01, 'token_acc': 0.22, 'epoch': 0.01}\n"
         "{'loss': 927.21, 'grad_norm': 20.9, 'aux_loss': 4.009, 'token_acc': 0.46, 'epoch': 0.08}\n"
         "Without router_aux_loss_coef the loss is normal.\n",
         "loss-changed-by-a-library-code-path"),
        # a Liger kernel on and a loss in the thousands
        ("swift rlhf --rlhf_type gkd --model Qwen3-8B-Base --use_liger_kernel true\n"
         "{'loss': 2315.48, 'grad_norm': 8731.2, 'learning_rate': 1e-05, 'epoch': 0.0}\n"
         "{'loss': 1987.06, 'grad_norm': 6420.9, 'learning_rate': 1e-05, 'epoch': 0.0}\n",
         "loss-changed-by-a-library-code-path"),
        # pytorch-pretrained-bert code calls .backward() on what is now a tuple
        ("Traceback (most recent call last):\n  File \"finetune_on_pregenerated.py\", line 305, in main\n    loss.backward()\n"
         "AttributeError: 'tuple' object has no attribute 'backward'\n"
         "loss = model(input_ids, segment_ids, input_mask, lm_label_ids, is_next)  # BertForPreTraining\n",
         "loss-kwarg-name-from-other-version"),
        # PEFT's prefix tuning reads a Cache attribute that transformers removed
        ("transformers 4.57.0, peft 0.17.1, prefix tuning\n"
         "Traceback (most recent call last):\n"
         '  File "/usr/local/lib/python3.11/dist-packages/peft/peft_model.py", line 1878, in forward\n'
         "    past_key_values = self.get_prompt(batch_size)\n"
         '  File "/usr/local/lib/python3.11/dist-packages/peft/peft_model.py", line 790, in get_prompt\n'
         "    for layer_idx in range(len(past_key_values.key_cache)):\n"
         "AttributeError: 'DynamicCache' object has no attribute 'key_cache'\n",
         "loss-changed-by-a-library-code-path"),
        # NaN predictions reach the detection loss's Hungarian matcher in a precision=16 run
        ("Deformable DETR on a V100, Lightning Trainer(precision=16, max_steps=300)\n"
         "Traceback (most recent call last):\n"
         '  File "transformers/loss/loss_deformable_detr.py", line 55, in <listcomp>\n'
         "    indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost_matrix.split(sizes, -1))]\n"
         "ValueError: matrix contains invalid numeric entries\n",
         "fp16-activation-overflow-nan"),
        # the MoE model's own load-balancing loss concatenates router logits from several GPUs
        ("Mixtral-8x7B split over GPUs with device_map\nTraceback (most recent call last):\n"
         '  File "transformers/trainer.py", line 2758, in compute_loss\n    outputs = model(**inputs)\n'
         '  File "transformers/models/mixtral/modeling_mixtral.py", line 1244, in forward\n    aux_loss = load_balancing_loss_func(\n'
         '  File "transformers/models/mixtral/modeling_mixtral.py", line 98, in load_balancing_loss_func\n'
         "    gate_logits = torch.cat(gate_logits, dim=0)\n"
         "RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:3 and cuda:7!\n",
         "loss-changed-by-a-library-code-path"),
        # ... or cannot take the batch's 4-D attention mask
        ("With output_router_logits on it dies in the first forward; without it training runs.\n"
         '  File "transformers/models/qwen3_moe/modeling_qwen3_moe.py", line 802, in load_balancing_loss_func\n'
         "    batch_size, sequence_length = attention_mask.shape\nValueError: too many values to unpack (expected 2)\n",
         "loss-changed-by-a-library-code-path"),
        # Chinese: loss spikes and diverges in fp16, bf16 shows no spike
        ("继续预训练一开始用 fp16 训练，跑了一段时间后 loss 出现突刺，之后再也收敛不回来了：\n"
         "{'loss': 2.1702, 'learning_rate': 1.98e-04, 'epoch': 0.22}\n{'loss': 7.9315, 'learning_rate': 1.97e-04, 'epoch': 0.22}\n"
         "{'loss': 11.204, 'learning_rate': 1.97e-04, 'epoch': 0.23}\n后来改成 bf16 重新跑，目前还没看到突刺。\n",
         "fp16-activation-overflow-nan"),
        # regression on a speech classification head: its loss was cross-entropy whatever num_labels said
        ("HubertForSequenceClassification with num_labels=1 does not give a regression loss. I want a continuous "
         "score from audio, and the docstring says num_labels == 1 computes a Mean-Square loss, but the loss "
         "that comes back is a cross-entropy and the predictions never approach the targets.\n",
         "loss-changed-by-a-library-code-path"),
        # class labels numbered 1..N for an N-class head, and the loss is NaN
        ("分类问题loss为nan，请问是什么原因？\n共10类数据，类别标签是【1、2、...、10】，batch_size=32\n"
         "Epoch 1/50\n  3/438 [....] - ETA: 30:43 - loss: 2.5070 - sparse_categorical_accuracy: 0.1875\n"
         "  9/438 [....] - ETA: 20:11 - loss: nan - sparse_categorical_accuracy: 0.0972\n",
         "class-label-outside-num-labels"),
    ],
    ids=["two-accumulation-settings", "accumulation-korean", "crf-with-minus-100", "keras-shapes-against-default-head",
         "encoder-inputs-without-labels", "loss-type-notice", "chunked-loss-without-lm-head",
         "sft-trainer-on-a-sequence-classifier", "length-assert-in-preprocessing", "placeholder-pad-token",
         "liger-drops-completion-mask", "purely-quantized-model-loss-zero", "purely-quantized-model-refused",
         "response-key-warnings-shrink-with-length", "keras-label-value-outside-range",
         "labels-passed-to-from-pretrained", "gemma4-training-forward", "column-mapping-key-error",
         "compiled-model-eval-loss-missing", "unsloth-checkpointing-hook", "transfo-xl-losses",
         "two-accumulation-splits-chinese", "processing-class-notice", "image-column-dropped", "empty-batch-wrapper-signature",
         "turing-card-written-2080ti", "stale-vocab-size-after-resize",
         "pad-equals-eos-pools-early", "responses-only-in-prose", "label-smoothing-remote-code", "swift-max-length-error",
         "pad-token-id-printed-none", "router-aux-loss-far-too-high", "liger-loss-far-too-high",
         "tuple-has-no-backward", "peft-reads-removed-cache-attribute",
         "detr-matcher-gets-nan-in-fp16", "moe-aux-loss-devices", "moe-aux-loss-4d-mask", "fp16-spikes-chinese",
         "regression-on-a-speech-classifier", "labels-numbered-from-one"],
)
def test_the_evidence_names_its_entry_first(text, entry):
    d = diagnose(parse_text(text), KB)
    assert d.candidates[0].entry == entry
    expected = KB.get(entry).failure_class
    assert d.failure_class == (None if expected == "out_of_scope" else expected)


def test_an_fp16_run_whose_optimizer_never_steps_points_at_fp16_overflow():
    """DeepSpeed's 'lr before stepping' notice, or a learning rate logged as 0.0 three times in a row: the fp16
    loss scaler skips every optimizer step. The notice alone (the first steps of any fp16 run skip too) is not
    enough for a diagnosis; two zero learning rates (a warm-up start) are not the signal."""
    notice = "tried to get lr value before scheduler/optimizer started stepping, returning lr=0\n"
    alone = diagnose(parse_text("training qwen14b, the lr stays 0 for a long stretch and the log keeps printing\n" + notice), KB)
    assert alone.failure_class is None
    d = diagnose(parse_text("deepspeed --fp16 run on Qwen-14B, the lr stays 0 and the loss does not decrease\n" + notice * 2), KB)
    assert d.candidates[0].entry == "fp16-activation-overflow-nan"
    assert any("DeepSpeed never stepped the optimizer" in w for w in d.candidates[0].why)
    logs = ("LoRA SFT on a V100 with --fp16, the loss does not go down:\n"
            "{'loss': 2.4127, 'learning_rate': 0.0, 'epoch': 0.01}\n{'loss': 2.3985, 'learning_rate': 0.0, 'epoch': 0.03}\n")
    three = diagnose(parse_text(logs + "{'loss': 2.4401, 'learning_rate': 0.0, 'epoch': 0.04}\n"), KB)
    assert three.candidates[0].entry == "fp16-activation-overflow-nan"
    assert any("learning rate stays exactly 0.0" in w for w in three.candidates[0].why)
    warmup = diagnose(parse_text(logs + "{'loss': 2.4401, 'learning_rate': 2e-05, 'epoch': 0.04}\n"), KB)
    assert not any("learning rate stays exactly 0.0" in w for c in warmup.candidates for w in c.why)


def test_a_run_that_works_only_under_another_setting_is_not_a_working_run():
    from knowledge.matcher import evidence_score

    entry = KB.get("question-about-expected-behaviour")
    works, _ = evidence_score(entry, parse_text("Training works fine. Why are the labels shifted inside the model?\n"))
    conditional, why = evidence_score(entry, parse_text(
        "Collation breaks when my Dataset returns tensors. If __getitem__ returns plain lists it trains fine. Why?\n"))
    assert conditional < works and any(w.startswith("(against)") and "another setting" in w for w in why)



@pytest.mark.parametrize(
    ("model_class", "family", "head"),
    [
        ("AutoModelForSeq2SeqLM", None, "seq2seq"),
        ("MT5ForConditionalGeneration", None, "seq2seq"),
        ("PegasusForConditionalGeneration", None, "seq2seq"),
        ("LlavaForConditionalGeneration", None, None),  # a vision-language model, not an encoder-decoder
        ("BartForConditionalGeneration", "llama", None),  # the reproducer's family decides when it has one
        ("AutoModelForCausalLM", None, "causal_lm"),
        ("BertForSequenceClassification", None, "seq_cls"),
        ("PeftModel", None, None),
    ],
)
def test_a_model_class_names_its_head_only_when_it_can_tell(model_class, family, head):
    from knowledge.schema import model_head

    assert model_head(model_class, family) == head


def test_fixes_for_another_model_head_are_not_offered_even_without_a_reproduction():
    from pathlib import Path

    text = (Path(__file__).parent / "data" / "t5-no-labels-decoder-error.txt").read_text()
    offered = {f.id for f in diagnose(parse_text(text), KB).fixes}
    assert "target-labels-in-tokenize-function" in offered
    assert not {"labels-in-tokenize-function", "use-lm-collator"} & offered
    causal = diagnose(parse_text(text.replace("AutoModelForSeq2SeqLM", "AutoModelForCausalLM").replace("t5-small", "gpt2")), KB)
    assert {"labels-in-tokenize-function", "use-lm-collator"} <= {f.id for f in causal.fixes}
    assert "target-labels-in-tokenize-function" not in {f.id for f in causal.fixes}
