import time

import pytest

from bot.parse import parse_text
from bot.redact import redact

SECRETS = [
    ("hf_token", 'login(token="hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789")', "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("openai_key", "OPENAI=sk-abcdefghijklmnopqrstuvwxyz012345", "sk-abcdefghijklmnopqrstuvwxyz012345"),
    ("openai_key", "client = OpenAI(api_key=sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12)", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12"),
    ("anthropic_key", "key: sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv"),
    ("slack_token", "SLACK_BOT=xoxb-123456789012-1234567890123-AbCdEfGhIjKl", "xoxb-123456789012-1234567890123-AbCdEfGhIjKl"),
    ("slack_token", "app token xapp-1-A0123-456-abcdef0123", "xapp-1-A0123-456-abcdef0123"),
    (
        "slack_webhook",
        "post to https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX now",
        "hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX",
    ),
    ("github_token", "gh auth ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("github_token", "GH=github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_pat_11ABCDEFG0123456789"),
    ("aws_access_key", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("wandb_key", "export WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567", "0123456789abcdef0123456789abcdef01234567"),
    ("wandb_key", 'wandb.login(key="fedcba9876543210fedcba9876543210fedcba98")', "fedcba9876543210fedcba9876543210fedcba98"),
    ("url_password", "DATABASE=postgres://alice:Sup3rS3cret@db.internal:5432/x", "Sup3rS3cret"),
    ("generic_secret", 'token = "abcd1234efgh5678"', "abcd1234efgh5678"),
    ("generic_secret", "api_key=ZXCVBNMASDFGH123456", "ZXCVBNMASDFGH123456"),
    ("generic_secret", "password: hunter22", "hunter22"),
    ("generic_secret", '{"client_secret": "q1w2e3r4t5y6"}', "q1w2e3r4t5y6"),
    ("generic_secret", 'model = AutoModel.from_pretrained(name, use_auth_token="myPrivate123")', "myPrivate123"),
]


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS)
def test_each_secret_kind_is_redacted(kind, text, secret):
    redacted, kinds = redact(text)
    assert secret not in redacted
    assert f"[REDACTED:{kind}]" in redacted
    assert kind in kinds


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS)
def test_secret_appears_nowhere_in_report(kind, text, secret):
    paste = f"Traceback (most recent call last):\n  File \"t.py\", line 1, in <module>\nValueError: bad {text}\n```python\n{text}\n```\n"
    report = parse_text(paste)
    assert secret not in report.model_dump_json()
    assert kind in report.redacted


@pytest.mark.parametrize(
    "text",
    [
        "tokenizer.pad_token = tokenizer.eos_token",
        'tokenizer.pad_token = "<|endoftext|>"',
        "model = AutoModel.from_pretrained(name, token=True, use_auth_token=True)",
        'api_key=os.environ["OPENAI_API_KEY"]',
        "token=args.hf_token",
        "max_new_tokens=512, add_special_tokens=False, skip_special_tokens=True",
        "token: ${{ secrets.GITHUB_TOKEN }}",
        "The model did not return a loss from the inputs, only the following keys: logits.",
        "https://huggingface.co/meta-llama/Llama-3.1-8B",
        "task-specific-prompting-for-llms-is-fun",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == (text, [])


def test_kinds_are_sorted_and_unique():
    text = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01 and AKIAIOSFODNN7EXAMPLE and hf_ZyXwVuTsRqPoNmLkJiHgFeDcBa98"
    redacted, kinds = redact(text)
    assert kinds == ["aws_access_key", "hf_token"]
    assert redacted.count("[REDACTED:hf_token]") == 2


def test_redacting_twice_changes_nothing():
    once, _ = redact('token="abcd1234efgh5678" hf_AbCdEfGhIjKlMnOpQrStUvWxYz01')
    assert redact(once) == (once, [])


def test_secret_hidden_behind_slack_entities_is_redacted():
    report = parse_text("&gt; password=&quot;hunter22xyz&quot;")
    assert "hunter22xyz" not in report.model_dump_json()


@pytest.mark.parametrize("unit", ["token=", "hf_", "a", "sk-", "://a:", "password: x ", "key"])
def test_pathological_input_is_fast(unit):
    text = unit * (1_000_000 // len(unit))
    start = time.perf_counter()
    redact(text)
    assert time.perf_counter() - start < 5
