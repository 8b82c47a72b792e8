"""Processor `redact`: secrets masked everywhere a string can hide, named masks, copy on write."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.errors import ConfigError
from shipper.processors.redact import _masker
from shipper.processors.walk import STRUCTURAL
from shipper.record import validate
from shipper.testing import build_processor, make_span

OPENAI = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcdEFGH"
OPENAI_LEGACY = "sk-" + "a1B2c3D4e5" * 4 + "zzzzzzzz"
ANTHROPIC = "sk-ant-api03-" + "Zx9_Yw8-Vu7T" * 6
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEF123"
AWS = "AKIAIOSFODNN7EXAMPLE"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc+/=\n-----END RSA PRIVATE KEY-----"

ALL = {"builtin": ["secrets", "email", "phone", "card_number"], "patterns": {"ticket": r"TCK-\d{4}"}}


def _strings(value, path=""):
    """Every string in a value, dict keys included, with where it is."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}(key)", key
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def _record_strings(record):
    for key, value in record.items():
        if key not in STRUCTURAL:
            yield from _strings(value, key)


ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _joined(*parts):
    return st.tuples(*parts).map("".join)


def _luhn_completed(digits: str) -> str:
    for check in "0123456789":
        total = 0
        for i, ch in enumerate(reversed(digits + check)):
            n = int(ch) * (2 if i % 2 else 1)
            total += n - 9 if n > 9 else n
        if total % 10 == 0:
            return digits + check
    raise AssertionError


secrets = st.one_of(
    _joined(st.sampled_from(["sk-", "sk-proj-", "sk-svcacct-"]), st.text(ALNUM + "_-", min_size=20, max_size=48)),
    _joined(st.just("sk-ant-api03-"), st.text(ALNUM + "_-", min_size=20, max_size=48)),
    _joined(st.sampled_from(["Bearer ", "bearer\t", "BEARER  "]), st.text(ALNUM + "-._~+/", min_size=16, max_size=40)),
    _joined(st.sampled_from(["AKIA", "ASIA", "AROA"]), st.text(ALNUM[26:], min_size=16, max_size=16)),
    _joined(st.sampled_from(["aws_secret_access_key=", "AWS_SECRET_KEY: '"]), st.text(ALNUM + "/+", min_size=40, max_size=40)),
    _joined(st.just("-----BEGIN PRIVATE KEY-----\n"), st.text(ALNUM + "+/=\n", max_size=60),
            st.sampled_from(["\n-----END PRIVATE KEY-----", ""])),
    _joined(st.text(ALNUM + "._", min_size=1, max_size=8), st.just("@"), st.text(ALNUM, min_size=1, max_size=8),
            st.sampled_from([".com", ".co.uk", ".io"])),
    _joined(st.sampled_from(["+1 ", "+44 ", "", "("]), st.text("0123456789", min_size=3, max_size=3),
            st.sampled_from([" ", "-", ") "]), st.text("0123456789", min_size=3, max_size=4), st.sampled_from(["-", " ", ""]),
            st.text("0123456789", min_size=4, max_size=4)),
    st.text("0123456789", min_size=15, max_size=15).map(_luhn_completed),
    _joined(st.just("TCK-"), st.text("0123456789", min_size=4, max_size=4)),
    st.sampled_from([OPENAI, OPENAI_LEGACY, ANTHROPIC, BEARER, AWS, PEM, "4111 1111 1111 1111",
                     "jane.doe@example.com", "+1 415 555 0100"]),
)
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
texts = st.lists(st.one_of(words, secrets), max_size=4).map(" ".join) | st.lists(
    st.one_of(words, secrets), max_size=3).map("".join)
scalars = st.one_of(texts, st.integers(), st.booleans(), st.none())
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=12)
attributes = st.dictionaries(st.text(min_size=1, max_size=20), st.one_of(texts, st.integers(), st.lists(texts, max_size=2)),
                             max_size=4)


@st.composite
def records(draw):
    return make_span(
        5, 6, 7, name="n" + draw(texts), input=draw(json_values),
        output=draw(json_values), metadata=draw(st.dictionaries(texts, json_values, max_size=3)),
        attributes=draw(attributes), tags=draw(st.lists(texts, max_size=2)),
        user_id=draw(texts), error={"type": "E", "message": draw(texts), "stack": draw(texts)},
        llm={"model": "m", "input_messages": [{"role": "user", "content": draw(texts)}],
             "output_messages": [{"role": "assistant", "content": draw(json_values)}]},
        events=[{"name": "e", "time_ns": 1, "attributes": draw(attributes)}],
    )


def _matches(redact, value: str) -> list[str]:
    """The names of the patterns that would still mask something in `value` (none once it is redacted)."""
    return [name for name, regex in redact.patterns.items()
            if any(_masker(name)(m) != m.group() for m in regex.finditer(value))]


@settings(max_examples=100, deadline=None)
@given(record=records())
def test_no_configured_pattern_matches_anywhere_after_redaction(record) -> None:
    """After `redact`, no configured pattern matches any string or key of the record, at any depth."""
    redact, _ = build_processor("redact", ALL)
    before = copy.deepcopy(record)
    (out,) = redact([record])
    for where, text in _record_strings(out):
        assert _matches(redact, text) == [], (where, text)
    assert record == before  # never changed in place


def test_each_builtin_secret_is_masked_with_its_name() -> None:
    """OpenAI, Anthropic, bearer, AWS and private-key secrets become [REDACTED:<kind>] by default."""
    redact, counters = build_processor("redact")
    text = (f"openai {OPENAI} legacy {OPENAI_LEGACY} anthropic {ANTHROPIC} header {BEARER} aws {AWS} "
            f"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY pem {PEM} tail")
    (out,) = redact([make_span(input=text)])
    assert out["input"] == ("openai [REDACTED:openai_key] legacy [REDACTED:openai_key] anthropic "
                            "[REDACTED:anthropic_key] header [REDACTED:bearer_token] aws [REDACTED:aws_access_key] "
                            "[REDACTED:aws_secret_key] pem [REDACTED:private_key] tail")
    assert counters.counts["redacted"] == 1


def test_a_private_key_cut_before_its_end_is_still_masked() -> None:
    """A PEM block missing its END line (cut short) is masked to the end of the string."""
    redact, _ = build_processor("redact")
    (out,) = redact([make_span(output="key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC")])
    assert out["output"] == "key: [REDACTED:private_key]"


def test_personal_data_patterns_are_opt_in() -> None:
    """Emails, phone and card numbers pass by default and are masked once listed in `builtin`."""
    text = "mail jane.doe@example.com call +1 (415) 555-0100 card 4111-1111-1111-1111"
    default, _ = build_processor("redact")
    assert default([make_span(input=text)])[0]["input"] == text
    opted, _ = build_processor("redact", {"builtin": ["secrets", "email", "phone", "card_number"]})
    assert opted([make_span(input=text)])[0]["input"] == (
        "mail [REDACTED:email] call [REDACTED:phone] card [REDACTED:card_number]")


def test_card_numbers_must_pass_the_luhn_check() -> None:
    """A digit run that is not a valid card number (Luhn) is left alone."""
    redact, _ = build_processor("redact", {"builtin": ["card_number"]})
    (out,) = redact([make_span(input="good 4242424242424242 bad 4242424242424241")])
    assert out["input"] == "good [REDACTED:card_number] bad 4242424242424241"


def test_secrets_are_masked_everywhere_a_string_can_hide() -> None:
    """Input, output, messages, params, metadata, attributes, events, links, error, tags and nested keys."""
    redact, _ = build_processor("redact", {"keys": ["ssn"]})
    record = make_span(
        name=f"call {AWS}", input={"deep": [{"deeper": [f"x {OPENAI}"]}]}, output=[BEARER],
        llm={"input_messages": [{"role": "user", "content": f"my key is {ANTHROPIC}"}],
             "output_messages": [{"role": "assistant", "content": [{"type": "text", "text": OPENAI}]}],
             "params": {"api_key": "plain"}},
        metadata={"password": "hunter2", "nested": {"SSN": "123-45-6789", OPENAI: "key as a key"}},
        attributes={"http.request.header.authorization": "Basic abc", "note": OPENAI},
        events=[{"name": "exception", "time_ns": 1, "attributes": {"exception.message": f"bad {OPENAI}"}}],
        links=[{"trace_id": "a" * 32, "span_id": "b" * 16, "attributes": {"why": AWS}}],
        error={"type": "AuthError", "message": f"invalid key {OPENAI}", "stack": f"line 1 {ANTHROPIC}"},
        tags=[f"t {AWS}"], resource={"token.owner": AWS},
    )
    (out,) = redact([record])
    validate(out)
    assert out["name"] == "call [REDACTED:aws_access_key]"
    assert out["input"] == {"deep": [{"deeper": ["x [REDACTED:openai_key]"]}]}
    assert out["output"] == ["[REDACTED:bearer_token]"]
    assert out["llm"]["input_messages"][0]["content"] == "my key is [REDACTED:anthropic_key]"
    assert out["llm"]["output_messages"][0]["content"][0]["text"] == "[REDACTED:openai_key]"
    assert out["llm"]["params"] == {"api_key": "[REDACTED:key]"}
    assert out["metadata"] == {"password": "[REDACTED:key]",
                               "nested": {"SSN": "[REDACTED:key]", "[REDACTED:openai_key]": "key as a key"}}
    assert out["attributes"] == {"http.request.header.authorization": "[REDACTED:key]",
                                 "note": "[REDACTED:openai_key]"}
    assert out["events"][0]["attributes"]["exception.message"] == "bad [REDACTED:openai_key]"
    assert out["links"][0]["attributes"]["why"] == "[REDACTED:aws_access_key]"
    assert out["error"] == {"type": "AuthError", "message": "invalid key [REDACTED:openai_key]",
                            "stack": "line 1 [REDACTED:anthropic_key]"}
    assert out["tags"] == ["t [REDACTED:aws_access_key]"]
    assert out["resource"] == {"token.owner": "[REDACTED:aws_access_key]"}


def test_copy_on_write_leaves_the_shared_record_alone() -> None:
    """Another exporter's view is unchanged: the input dict is not mutated, unchanged parts are shared."""
    redact, _ = build_processor("redact")
    record = make_span(input=f"key {OPENAI}", output={"big": ["unchanged"] * 3}, metadata={"a": "b"})
    before = copy.deepcopy(record)
    (out,) = redact([record])
    assert record == before
    assert out is not record and out["output"] is record["output"] and out["metadata"] is record["metadata"]
    clean = make_span(input="nothing to see")
    assert redact([clean])[0] is clean


def test_structural_fields_are_never_touched() -> None:
    """Ids, kind, status and timestamps stay as they are even when a pattern would match them."""
    redact, _ = build_processor("redact", {"patterns": {"hex": "[0-9a-f]{16}"}})
    record = make_span(12, 34, 56, kind="llm", status="ok", input="0123456789abcdef")
    (out,) = redact([record])
    assert {k: out[k] for k in STRUCTURAL if k in out} == {k: record[k] for k in STRUCTURAL if k in record}
    assert out["input"] == "[REDACTED:hex]"


def test_custom_patterns_and_turning_builtins_off() -> None:
    """`patterns` adds named regexes; `builtin: []` turns the defaults off."""
    redact, _ = build_processor("redact", {"builtin": [], "patterns": {"ticket": r"TCK-\d{4}"}})
    (out,) = redact([make_span(input=f"TCK-1234 and {OPENAI}", metadata={"password": "x"})])
    assert out["input"] == f"[REDACTED:ticket] and {OPENAI}"
    assert out["metadata"] == {"password": "x"}


CONFIG_ERRORS = [
    ({"builtin": ["secret"]}, "builtin[0]: unknown built-in rule 'secret'; expected some of"),
    ({"patterns": {"x": "("}}, "patterns.x: not a valid regular expression: missing ), unterminated subpattern"),
    ({"patterns": {"x": "a*"}}, "patterns.x: the pattern matches the empty string or its own mask"),
    ({"patterns": {"red": "RED"}}, "patterns.red: the pattern matches the empty string or its own mask [REDACTED:red]"),
    ({"patterns": {"my key": "x"}}, "patterns.my key: a pattern name may use letters, digits, _ and - only"),
    ({"keys": "password"}, "keys: expected a list, got 'password'"),
    ({"patterns": ["x"]}, "patterns: expected a mapping, got ['x']"),
]


@pytest.mark.parametrize(("settings", "message"), CONFIG_ERRORS, ids=[m.split(":")[0] for _, m in CONFIG_ERRORS])
def test_config_errors(settings, message) -> None:
    """Each invalid redact setting is refused with its key path and what was expected."""
    with pytest.raises(ConfigError) as caught:
        build_processor("redact", settings)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_the_embedded_default_config_masks_secrets() -> None:
    """`shipper run` without -c redacts secrets (the embedded default) before its file exporter writes anything."""
    from shipper.chain import build_chain
    from shipper.config import load_config
    from shipper.stats import Stats

    config = load_config(None)
    chain = build_chain(config.processors, Stats(), "/nonexistent", "shared", config.settings.max_record_bytes)
    (out,) = chain([make_span(input=f"key {OPENAI}", metadata={"api_key": "x"})])
    assert out["input"] == "key [REDACTED:openai_key]" and out["metadata"] == {"api_key": "[REDACTED:key]"}


_SECRETS_LIKE = st.text(alphabet=st.sampled_from(list("skantSKANT-_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\u017f\u212abearBEARws"
                                                      " \n=:/+PRIVATEKY")), max_size=80)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(_SECRETS_LIKE, st.text(max_size=60),
                      st.sampled_from([OPENAI, OPENAI_LEGACY, ANTHROPIC, BEARER, AWS, PEM, BEARER.upper(),
                                       "aWs_SeCrEt_KeY=" + "A" * 40, "aw\u017f_secret_key: " + "b" * 40])))
def test_the_cheap_prefilter_never_skips_a_string_a_builtin_pattern_matches(text) -> None:
    """The substring prefilter of the built-in secrets is a necessary condition of their regexes."""
    import re

    from shipper.processors.redact import BUILTIN_PATTERNS, GROUPS

    redact, _ = build_processor("redact")
    full = re.compile("|".join(f"(?:{BUILTIN_PATTERNS[n]})" for n in GROUPS["secrets"] if n in BUILTIN_PATTERNS))
    if full.search(text) is not None:
        assert redact._any(text)
        assert redact.text(text) != text or redact.matches(text) == []


secret_key_names = st.sampled_from(["password", "DB_PASSWORD", "x-api-key", "ApiKey", "Authorization", "cookie",
                                    "Set-Cookie", "refresh_token", "my_secret", "passwd", "private_key", "plain",
                                    "model", "AUTHORIZATION", "aw\u017f", "Bearer", "session_token"])
keyed_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.one_of(secret_key_names, texts), inner, max_size=3), max_leaves=10)


@st.composite
def keyed_records(draw):
    record = draw(records())
    record["metadata"] = draw(st.dictionaries(st.one_of(secret_key_names, texts), keyed_values, max_size=3))
    return record


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(st.one_of(keyed_records(), st.just(make_span(1, 2, 3, input="hello", metadata={"a": 1}))),
                      min_size=1, max_size=40))
def test_a_batch_is_redacted_exactly_as_each_record_alone(batch) -> None:
    """The whole-slice JSON test and the key walk are only shortcuts: a batch comes out as the records
    would, one by one, with every secret masked (default rules: the shortcut is on)."""
    redact, _ = build_processor("redact")
    assert redact._clean is not None
    alone = [redact.record(r) for r in batch]
    assert redact(batch) == alone


def test_a_secret_key_below_clean_values_is_still_masked() -> None:
    """No value pattern anywhere (the JSON test passes), but a key rule matches deep down."""
    redact, _ = build_processor("redact")
    clean = make_span(1, 2, 3, input="hi")
    keyed = make_span(1, 2, 4, input={"request": {"headers": [{"Authorization": "Basic abc"}]}})
    out = redact([clean, keyed, clean])
    assert out[0] is clean and out[2] is clean
    assert out[1]["input"]["request"]["headers"][0]["Authorization"] == "[REDACTED:key]"
