"""The audit chain's canonical text is the standard library's, byte for byte, whichever
encoder wrote it (rows written before the fast path must keep verifying): every code point,
floats at every magnitude and the boundaries where the two encoders part, big integers,
NaN, nesting, digests; and a multi-row insert stores exactly the rows it was given."""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
import struct
import sys
from dataclasses import replace
from typing import Any

import pytest

from plantd.identity.audit import (
    AUDIT_TABLE_SQL,
    COLUMNS,
    GENESIS,
    VALUE_LIMIT,
    Entry,
    chain,
    insert_rows,
    row_hash,
    stored_value,
)


def reference_value(value: Any) -> str | None:
    """stored_value as the chain has always written it (the json module alone)."""
    if value is None:
        return None
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    raw = text.encode("utf-8")
    if len(raw) <= VALUE_LIMIT:
        return text
    digest = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    return json.dumps(digest, sort_keys=True, separators=(",", ":"))


def reference_hash(row: dict[str, Any]) -> str:
    canonical = json.dumps(
        [row[c] for c in COLUMNS], separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256((row["prev_hash"] + canonical).encode("utf-8")).hexdigest()


def floats() -> list[float]:
    rng = random.Random(13)
    out = [0.0, -0.0, 5e-324, sys.float_info.max, 1e-4, 1e15, 1e16, 1e21, 1e22, 0.1, 1 / 3]
    for exp in range(-330, 309):  # every decade, both sides of each boundary
        for mant in (1.0, 9.999999999999998, 1.5, 2.5):
            with_exp = mant * 10.0**exp if -308 < exp < 308 else float(f"{mant}e{exp}")
            out += [with_exp, -with_exp, math.nextafter(with_exp, 0.0)]
    for _ in range(50_000):
        f = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        out.append(f)
        out.append(10 ** rng.uniform(-6, 17) * rng.choice((1, -1)))
        out.append(rng.uniform(1.6e9, 2.2e9))  # timestamps
    return [f for f in out if math.isfinite(f)]


def test_every_code_point_encodes_as_json_does() -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        text = "".join(chars[start : start + 4096])
        assert stored_value(text) == reference_value(text)
        assert stored_value({text: text}) == reference_value({text: text})


def test_floats_encode_as_json_does() -> None:
    values = floats()
    for f in values:
        assert stored_value(f) == reference_value(f), f
    assert stored_value(values[:300]) == reference_value(values[:300])


def test_rows_hash_as_json_does() -> None:
    base = Entry(
        principal="ålice", service="org.plantd.State", operation="set", outcome="ok", key="k"
    )
    for ts in [*floats()[::50], 0.0, 1e-5, 1e16, 1.7e9]:
        rows = chain([replace(base, ts=ts), base], 1.7e9, 7, GENESIS)
        for row in rows:
            assert row["hash"] == reference_hash(row) == row_hash(row), ts
    with pytest.raises(ValueError):
        chain([replace(base, ts=math.nan)], 0.0, 0, GENESIS)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -(2**63),
        2**64 - 1,
        2**64,
        10**40,
        True,
        "",
        '\u2028\x7f\x00\x1f"\\/',
        [None, {"b": 1, "a": [1.5, "é", None]}],
        {"z": {"y": 1e-7, "x": 12345.678}, "a": 1e16},
        {"nan": math.nan, "inf": -math.inf},
        [[[[[[[[1]]]]]]]] * 3,
        {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        ["x" * (VALUE_LIMIT + 1)],
        {"é" * 3000: 1},
        (1, 2),
    ],
)
def test_values_encode_as_json_does(value: Any) -> None:
    assert stored_value(value) == reference_value(value)


def test_deeper_than_orjson_goes_to_json() -> None:
    value: Any = 0
    for _ in range(400):
        value = [value]
    assert stored_value(value) == reference_value(value)


def test_multi_row_insert_stores_every_row_exactly() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(AUDIT_TABLE_SQL)
    entries = [
        Entry(
            principal="p",
            service="s",
            operation="set",
            outcome="ok",
            key=f"k{i}",
            old=i,
            new={"v": i},
            revision=i,
        )
        for i in range(1, 300)
    ]
    seq, prev = 0, GENESIS
    for size in (1, 2, 3, 127, 128, 129, 37):
        rows = chain(entries[:size], 1_700_000_000.123, seq, prev)
        insert_rows(db, rows)
        seq, prev = rows[-1]["seq"], rows[-1]["hash"]
        stored = db.execute(
            "SELECT * FROM audit WHERE seq > ? ORDER BY seq", (seq - size,)
        ).fetchall()
        assert stored == [tuple(r[c] for c in (*COLUMNS, "hash")) for r in rows]
    assert db.execute("SELECT count(*) FROM audit").fetchone()[0] == seq
