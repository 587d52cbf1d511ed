"""``body.json_depth``: the nesting Python's JSON reader would see, counted without recursion or parsing."""

from __future__ import annotations

import json
import time

import pytest

from silodiff.service.body import json_depth


@pytest.mark.parametrize(
    "text,depth",
    [
        ("", 0),
        ("1", 0),
        ('{"n": [[1]]}', 3),
        ("[]" * 5, 1),
        ('"[[[{{{"', 0),  # brackets in a string do not nest
        ('{"a\\"[": ["\\\\", [[]]]}', 4),  # nor after an escaped quote; an escaped backslash ends its escape
        ('[[["open', 3),  # an unclosed string: the reader stops there
        ('["a\\"]' + "[" * 40, 1),  # … and the brackets after it are inside it
        ('{"a": ' * 900 + "1" + "}" * 900, 900),
    ],
)
def test_depth_of_json_text(text, depth):
    assert json_depth(text.encode()) == depth


def test_depth_matches_the_json_reader_on_valid_json():
    for value in ([], {"a": [1, {"b": ["]", "}"]}]}, [[[[[]]]], {"k": {"k": {"k": "[["}}}]):
        text, expect = json.dumps(value), 0
        # the reader's own depth, by walking what it parsed
        stack = [(json.loads(text), 1)]
        while stack:
            v, d = stack.pop()
            if isinstance(v, (list, dict)):
                expect = max(expect, d)
                stack += [(c, d + 1) for c in (v.values() if isinstance(v, dict) else v)]
        assert json_depth(text.encode()) == expect


def test_other_encodings_the_reader_accepts():
    text = '["\u225b\u2200", ' + "[" * 40 + "]" * 40 + "]"  # code units with the bytes of [ and "
    for encoding in ("utf-8-sig", "utf-16", "utf-16-be", "utf-32-le"):
        assert json_depth(text.encode(encoding)) == 41, encoding
    assert json_depth(b"\xff\xfe\x00") == 0  # not decodable: the reader refuses it before nesting anything


@pytest.mark.parametrize("text", ['"' + '\\"' * 500_000, '""' * 500_000, "[]" * 500_000, '["' * 300_000])
def test_linear_time_on_a_megabyte(text):
    t0 = time.process_time()
    json_depth(text.encode())
    assert time.process_time() - t0 < 5.0  # quadratic scanning of unclosed strings took minutes
