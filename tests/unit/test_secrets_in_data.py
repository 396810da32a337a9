"""Secret values in what a job keeps: datasets, result, checkpoint, progress and events are masked; mappings of
secrets (`dict[str, Secret]`) are declared, sealed and shown masked."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from collector import defaults
from collector.masking import MASK, mask_json, mask_text, needles

# --- mask_json: the masking step of datasets ---------------------------------------------------------------

def reference(value: Any, forms: list[str]) -> Any:
    """What masking must give, done the slow and obvious way on the decoded document."""
    if isinstance(value, str):
        for form in forms:  # longest first, as `needles` gives them
            value = value.replace(form, MASK)
        return value
    if isinstance(value, dict):
        return {reference(k, forms): reference(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [reference(v, forms) for v in value]
    return value


@pytest.mark.parametrize(("rows", "secret", "expected"), [
    ([{"a": "x tok-123456 y"}], "tok-123456", [{"a": "x *** y"}]),
    ([{"tok-123456": 1, "b": {"tok-123456": ["tok-123456"]}}], "tok-123456", [{"***": 1, "b": {"***": ["***"]}}]),
    ([{"a": 'say "hi there"'}], '"hi there"', [{"a": "say ***"}]),
    ([{"a": "back\\slash"}], "k\\sla", [{"a": "bac***sh"}]),
    ([{"a": "née-secret!"}], "née-secret", [{"a": "***!"}]),
    ([{"a": "😀-secret"}], "😀-secret", [{"a": "***"}]),
    ([{"a": '{"token": "a\\"bcd"}'}], 'a"bcd', [{"a": '{"token": "***"}'}]),       # JSON inside a string
    ([{"a": "https://x/?k=a%2Fb%2Bc1"}], "a/b+c1", [{"a": "https://x/?k=***"}]),   # URL-encoded
    ([{"n": 482913, "s": "pin 482913", "t": [482913.5]}], "482913", [{"n": 482913, "s": "pin ***", "t": [482913.5]}]),
    ([{"b": True, "s": "true", "x": None, "y": "null"}], "true", [{"b": True, "s": "***", "x": None, "y": "null"}]),
    ([{"a": "x\nabcd"}], "nabcd", [{"a": "x\nabcd"}]),           # `\n` + abcd is not "nabcd"
    ([{"a": "é1234"}], "00e91234", [{"a": "é1234"}]),            # nor is `\u00e9` + 1234
    ([{"a": "\u2024 2024", "n": 2024}], "2024", [{"a": "\u2024 ***", "n": 2024}]),
    ([{"a": "a\\", "b": "x 2024"}], "2024", [{"a": "a\\", "b": "x ***"}]),
])
def test_mask_json_masks_strings_and_keys_and_nothing_else(rows: list[Any], secret: str, expected: list[Any]) -> None:
    masked = mask_json(json.dumps(rows), [secret])
    assert json.loads(masked) == expected


class RandomDocuments:
    """JSON documents full of near misses of one secret: in strings and keys, cut short, next to escapes (`\\n`,
    `\\u00e9`, `\\"`), and numbers and literals a secret of digits or `true` could be mistaken in."""

    ALPHABET = ("0", "2", "e", "u", "n", "t", "r", "a", '"', "\\", "\n", " ", ",", "é", "😀")

    def __init__(self, rng: random.Random, secret: str) -> None:
        self.rng, self.secret = rng, secret

    def chars(self, low: int, high: int) -> str:
        return "".join(self.rng.choice(self.ALPHABET) for _ in range(self.rng.randint(low, high)))

    def text(self) -> str:
        pieces = [self.secret, self.secret[1:], self.secret[:-1], self.chars(0, 3)]
        return "".join(self.rng.choice(pieces) for _ in range(self.rng.randint(0, 3)))

    def value(self, depth: int = 0) -> Any:
        kind = self.rng.randint(0, 4 if depth < 3 else 2)
        if kind <= 1:
            return self.text()
        if kind == 2:
            return self.rng.choice([20202, 2.02e20, 2020, True, False, None, 0.5])
        if kind == 3:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.text(): self.value(depth + 1) for _ in range(self.rng.randint(0, 3))}


def test_mask_json_agrees_with_masking_the_decoded_rows_on_random_documents() -> None:
    rng = random.Random(13)
    for _ in range(4000):
        secret = rng.choice(["2020", "true", "0.e2", "ue00", 'nn\\"a', RandomDocuments(rng, "").chars(4, 6)])
        documents = RandomDocuments(rng, secret)
        document = [documents.value() for _ in range(rng.randint(1, 3))]
        expected = reference(document, needles([secret]))
        for ensure_ascii in (True, False):
            masked = json.loads(mask_json(json.dumps(document, ensure_ascii=ensure_ascii), [secret]))
            assert masked == expected, (document, secret, ensure_ascii)
            assert _numbers(masked) == _numbers(document)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [] if isinstance(value, str) else [value]


def test_secrets_shorter_than_the_minimum_are_not_searched_for() -> None:
    short = "x" * (defaults.SECRET_MASK_MIN_CHARS - 1)
    rows = json.dumps([{"a": f"{short} in xxxx"}])
    assert mask_json(rows, [short]) == rows
    assert mask_text(f"{short}!", [short]) == f"{short}!"
    assert mask_text(f"{short}x!", [short + "x"]) == "***!"
