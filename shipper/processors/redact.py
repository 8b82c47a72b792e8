"""Processor `redact`: mask secrets and personal data wherever a string can hide in a record.

Every field of a record is walked, nested to any depth (input, output, llm messages and params,
metadata, attributes, events, links, error, resource, tags, name, session and user ids), except the
structural ones that are validated ids, enums and numbers (`v`, `trace_id`, `span_id`, `parent_id`,
`kind`, `otel_kind`, `start_ns`, `end_ns`, `status`). Two kinds of rules:

- `keys`: globs (case-insensitive) on the names of keys at any depth below a field; the whole value of
  a matching key becomes `[REDACTED:key]`.
- value patterns: regular expressions searched in every string (dict keys included); each match is
  replaced by `[REDACTED:<pattern name>]`. Built-in ones are chosen with `builtin`: the default,
  `[secrets]`, means `openai_key`, `anthropic_key`, `bearer_token`, `aws_access_key`, `aws_secret_key`,
  `private_key` and the key names of `secret_keys` (password, secret, api_key, authorization, ...);
  `email`, `phone` and `card_number` (Luhn-checked) are opt-in. `patterns` adds your own, by name.

Records are never changed in place: a redacted record is a copy sharing every part that did not change
(copy on write), so one exporter's `redact` never alters what another exporter sends. This is a line of
defence, not a guarantee: a secret in a shape no pattern knows goes through.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.component import Context
from shipper.processors.walk import STRUCTURAL, changed_paths, map_items
from shipper.record import Record

__all__ = ["BUILTIN_PATTERNS", "RedactConfig", "RedactProcessor"]

BUILTIN_PATTERNS: dict[str, str] = {
    "private_key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    "anthropic_key": r"\bsk-ant-[A-Za-z0-9_\-]{20,}",
    "openai_key": r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
    "bearer_token": r"(?i:\bbearer\s+[A-Za-z0-9\-._~+/]{16,}=*)",
    "aws_access_key": r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}\b",
    "aws_secret_key": r"(?i:aws_?secret_?(?:access_?)?key\b[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+]{40}\b",
    "card_number": r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)",
    "email": r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b",
    "phone": r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)[ .\-]?|\d{2,4}[ .\-])\d{3,4}[ .\-]?\d{3,4}(?![\w])",
}
"""Built-in value patterns, applied in this order (before your own `patterns`), whatever order `builtin` lists."""
SECRET_KEYS = ["*password*", "*passwd*", "*secret*", "*api_key*", "*api-key*", "*apikey*", "*authorization*",
               "*access_token*", "*refresh_token*", "*session_token*", "*private_key*", "cookie", "set-cookie"]
GROUPS = {"secrets": ["openai_key", "anthropic_key", "bearer_token", "aws_access_key", "aws_secret_key",
                      "private_key", "secret_keys"]}
OPT_IN = ["email", "phone", "card_number"]
KNOWN = sorted({*BUILTIN_PATTERNS, "secret_keys", *GROUPS})
KEY_MASK = "[REDACTED:key]"
_MAX_PASSES = 3
_KEY_CACHE = 4096
_CONTAINERS = (dict, list)
_SLICE = 32
"""Records whose JSON is tested together: a slice with one secret in it is walked record by record."""


# What a string must contain for a built-in secret pattern to match in it: a plain substring test is
# several times cheaper than the patterns themselves (each starts with \b, an alternation or (?i), which
# the regex engine tries at every position). "cased" needles are tested on `text.casefold()`, which
# folds at least every case the (?i) patterns would match (long s, Kelvin sign...).
_NEEDLES: dict[str, tuple[str, str]] = {
    "private_key": ("plain", "PRIVATE KEY-----"),
    "anthropic_key": ("plain", "sk-ant-"),
    "openai_key": ("plain", "sk-"),
    "bearer_token": ("cased", "bearer"),
    "aws_secret_key": ("cased", "aws"),
}
_AWS_PREFIX_PATTERN = r"A(?:KI|SI|BI|CC|GP|ID|IP|NP|NV|PK|RO|SC)A"
_AWS_PREFIX = re.compile(_AWS_PREFIX_PATTERN).search


def _literal_prefilter(names: list[str], others: list[str]) -> Callable[[str], Any]:
    """`_prefilter` for built-in patterns by their required substrings, `others` by their regexes."""
    needles = [_NEEDLES[n] for n in names if n in _NEEDLES]
    plain = tuple(dict.fromkeys(needle for how, needle in needles if how == "plain"))
    cased = tuple(dict.fromkeys(needle for how, needle in needles if how == "cased"))
    aws = _AWS_PREFIX if "aws_access_key" in names else None
    rest = _prefilter(others) if others else None

    def could_match(text: str) -> Any:
        for needle in plain:
            if needle in text:
                return True
        if aws is not None and "A" in text and aws(text) is not None:
            return True
        if cased:
            folded = text.casefold()
            for needle in cased:
                if needle in folded:
                    return True
        return None if rest is None else rest(text)

    return could_match


def _json_prefilter(names: list[str]) -> Callable[[bytes], bool]:
    """"Could a value pattern match in any string of this JSON?", tested on the JSON of many records at once.

    Sound for orjson's output: it writes every string as it is but for `"`, `\\` and control
    characters, none of which a needle holds, so a needle in a string (key or value) is a needle in the
    JSON; case-insensitive needles are tested on the casefolded text, as `_literal_prefilter` does.
    Only for built-in patterns (`_NEEDLES` and the AWS key prefixes): your own need each string.
    """
    needles = [_NEEDLES[n] for n in names if n in _NEEDLES]
    plain = [needle.encode() for how, needle in needles if how == "plain"]
    plain = [n for n in dict.fromkeys(plain) if not any(o != n and o in n for o in plain)]  # "sk-" covers "sk-ant-"
    cased = tuple(dict.fromkeys(needle for how, needle in needles if how == "cased"))
    cased_b = tuple(n.encode() for n in cased)
    aws = re.compile(_AWS_PREFIX_PATTERN.encode()).search if "aws_access_key" in names else None

    def could_match(blob: bytes) -> bool:
        for needle in plain:
            if needle in blob:
                return True
        if aws is not None and b"A" in blob and aws(blob) is not None:
            return True
        if not cased:
            return False
        if blob.isascii():
            low = blob.lower()
            for needle_b in cased_b:  # noqa: SIM110 - a loop, not any(): no generator on the hot path
                if needle_b in low:
                    return True
            return False
        folded = blob.decode().casefold()
        for text in cased:  # noqa: SIM110 - as above
            if text in folded:
                return True
        return False

    return could_match


def _prefilter(patterns: list[str]) -> Callable[[str], Any]:
    """One search for "could any pattern match here?", so most strings cost one regex call, not one each.

    Patterns with backreferences or named groups cannot be joined safely; then every string is searched.
    """
    if not patterns:
        return lambda text: None
    if any(re.search(r"\\[1-9]|\(\?P[<=]", p) for p in patterns):
        return lambda text: True
    return re.compile("|".join(f"(?:{p})" for p in patterns)).search


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _masker(name: str) -> Callable[[re.Match[str]], str]:
    mask = f"[REDACTED:{name}]"
    if name == "card_number":
        def card(match: re.Match[str]) -> str:
            digits = re.sub(r"\D", "", match.group())
            return mask if _luhn(digits) else match.group()
        return card
    return lambda match: mask


@dataclass(kw_only=True)
class RedactConfig:
    """Which built-in rules are on, and your own key globs and value patterns."""

    builtin: list[str] = field(default_factory=lambda: ["secrets"])
    keys: list[str] = field(default_factory=list)
    patterns: dict[str, str] = field(default_factory=dict)

    def check(self) -> list[str]:
        problems = []
        for i, name in enumerate(self.builtin):
            if isinstance(name, str) and name not in KNOWN:
                problems.append(f"builtin[{i}]: unknown built-in rule {name!r}; expected some of {', '.join(KNOWN)}")
        for name, pattern in self.patterns.items():
            if not isinstance(pattern, str):
                continue  # already reported: expected a string
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
                problems.append(f"patterns.{name}: a pattern name may use letters, digits, _ and - only "
                                "(it is shown in the mask)")
                continue
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                problems.append(f"patterns.{name}: not a valid regular expression: {exc}")
                continue
            if regex.search("") is not None or regex.search(f"[REDACTED:{name}]") is not None:
                problems.append(f"patterns.{name}: the pattern matches the empty string or its own mask "
                                f"[REDACTED:{name}]; make it match only the text to hide")
        return problems

    def enabled(self) -> list[str]:
        """The built-in rule names turned on, groups expanded."""
        names: list[str] = []
        for name in self.builtin:
            for one in GROUPS.get(name, [name]):
                if one not in names:
                    names.append(one)
        return names


class RedactProcessor:
    """Masks matching keys and values; returns copies of the records it changed."""

    Config = RedactConfig

    def __init__(self, config: RedactConfig, ctx: Context) -> None:
        self.counters = ctx.counters
        enabled = config.enabled()
        rules = {name: pattern for name, pattern in BUILTIN_PATTERNS.items() if name in enabled}
        rules.update(config.patterns)
        self.patterns = {name: re.compile(pattern) for name, pattern in rules.items()}
        self._subs = [(regex.subn, _masker(name)) for name, regex in self.patterns.items()]
        literal = [name for name in rules if name in _NEEDLES or name == "aws_access_key"]
        literal = [name for name in literal if name not in config.patterns]  # your own pattern of that name
        others = [p for name, p in rules.items() if name not in literal]
        self._any = _literal_prefilter(literal, others)
        globs = [*config.keys, *(SECRET_KEYS if "secret_keys" in enabled else [])]
        self._clean = None if others else _json_prefilter(literal)
        self._plain_keys: set[str] = set()
        self._key_regex = re.compile("|".join(fnmatch.translate(g.lower()) for g in globs)) if globs else None
        self._key_verdicts: dict[str, bool] = {}
        self._keys: dict[str, tuple[bool, str | None]] = {}

    def _secret_key(self, key: str) -> bool:
        verdict = self._key_verdicts.get(key)
        if verdict is None:
            verdict = self._key_regex is not None and self._key_regex.match(key.lower()) is not None
            if len(self._key_verdicts) < _KEY_CACHE:
                self._key_verdicts[key] = verdict
        return verdict

    def _plain_record(self, span: Record) -> bool:
        """True when no key below any field of `span` is a secret key or not a string (values aside)."""
        plain_dict = self._plain_dict
        for key, item in span.items():
            kind = type(item)
            if kind is dict:
                if key not in STRUCTURAL and not plain_dict(item):
                    return False
            elif kind is list and not self._plain_list(item):
                return False
        return True

    def _plain_dict(self, value: dict[Any, Any]) -> bool:
        plain = self._plain_keys
        if not plain.issuperset(value):
            for key in value:
                if key not in plain:
                    if type(key) is not str or self._secret_key(key):
                        return False
                    if len(plain) < _KEY_CACHE:
                        plain.add(key)
        for item in value.values():
            kind = type(item)
            if kind is dict:
                if not self._plain_dict(item):
                    return False
            elif kind is list and not self._plain_list(item):
                return False
        return True

    def _plain_list(self, value: list[Any]) -> bool:
        for item in value:
            kind = type(item)
            if kind is dict:
                if not self._plain_dict(item):
                    return False
            elif kind is list and not self._plain_list(item):
                return False
        return True

    def _key(self, key: str) -> tuple[bool, str | None]:
        """(is it a secret key, its masked text or None when unchanged), kept: keys repeat."""
        info = self._keys.get(key)
        if info is None:
            masked = key if self._any(key) is None else self.text(key)
            info = (self._secret_key(key), None if masked == key else masked)
            if len(self._keys) < _KEY_CACHE:
                self._keys[key] = info
        return info

    def text(self, value: str) -> str:
        """`value` with every pattern's matches masked (again, should masking make a new match appear)."""
        if self._any(value) is None:
            return value
        for _ in range(_MAX_PASSES):
            changed = False
            for subn, mask in self._subs:
                new, n = subn(mask, value)
                if n and new != value:
                    value, changed = new, True
            if not changed:
                break
        return value

    def value(self, value: Any) -> Any:
        """`value` redacted; the very same object when nothing in it changed (the per-record hot path)."""
        kind = type(value)
        if kind is str:
            return value if self._any(value) is None else self.text(value)
        if kind is dict:
            out = None
            any_, key_info, walk = self._any, self._key, self.value
            for key, item in value.items():
                secret, masked_key = key_info(key) if type(key) is str else (False, None)
                if secret:
                    new = KEY_MASK
                elif type(item) is str:
                    new = item if any_(item) is None else self.text(item)
                elif type(item) in _CONTAINERS:
                    new = walk(item)
                else:
                    new = item
                new_key = key if masked_key is None else masked_key
                if new is not item or new_key is not key:
                    if out is None:
                        out = dict(value)
                    if new_key is not key:
                        del out[key]
                    out[new_key] = new
            return value if out is None else out
        if kind is list:
            return map_items(value, self.value)
        return value

    def record(self, span: Record) -> Record:
        """The record redacted: `span` itself when nothing matched, else a copy on write."""
        out = None
        for key, item in span.items():
            if key in STRUCTURAL:
                continue
            new = self.value(item)
            if new is not item:
                if out is None:
                    out = dict(span)
                out[key] = new
        if out is None:
            return span
        self.counters.add("redacted")
        return out

    def __call__(self, batch: list[Record]) -> list[Record]:
        """The batch redacted. Most batches hold no secret at all: the value patterns are tested on the
        JSON of a slice of records at once (`_json_prefilter`), the key rules on the keys alone, and only
        a record that could match is walked string by string."""
        record, could_match, plain = self.record, self._clean, self._plain_record
        if could_match is None:
            return [record(span) for span in batch]
        out: list[Record] = []
        for start in range(0, len(batch), _SLICE):
            part = batch[start:start + _SLICE]
            try:
                dirty = could_match(orjson.dumps(part))
            except TypeError:  # not JSON (a lone surrogate, a huge int...): each string is tested alone
                dirty = True
            out.extend([record(span) for span in part] if dirty else
                       [span if plain(span) else record(span) for span in part])
        return out

    def explain(self, span: Record, trace: list[Record]) -> str:
        """Which fields this record would have masked, and by what."""
        changes = changed_paths(span, self.record(span))
        if not changes:
            return "kept: nothing to redact"
        parts = []
        for path, new in changes:
            masks = sorted(set(re.findall(r"\[REDACTED:([\w\-]+)\]", str(new))))
            parts.append(f"{path} ({', '.join(masks) or 'masked'})")
        return "kept, redacted: " + "; ".join(parts)
