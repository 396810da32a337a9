"""What masking secrets in a dataset costs: `ctx.dataset` with and without the secret scan, 100,000 rows.

    .venv/bin/python bench/masking_bench.py [--rows 100000] [--repeats 5]

Rows of 10 columns (ints, floats, text, a bool, a nested object), serialized as `ctx.dataset` does, then
masked with `collector.masking.mask_json` against three secrets: none found (the usual case), one found in
a few rows, one found in every row, and a 4-digit secret found in every row, in strings (`2024-05-31`) and in
numbers (left alone): the case that checks each place found for being inside a string. Prints the median of
each next to the serialization itself, which `ctx.dataset` does anyway. Touches no Redis.

Then `mask_text` (every log line, every error text, a URL a submit refuses) on hostile text that a client can
send, at 250 kB and at twice that: each must take at most 3x as long at twice the size (linear, not quadratic:
a regex that backtracks over a long run of one character takes seconds of an API process), and under a second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from collector.masking import mask_json, mask_text

SECRETS = ["api-key-3f9a1c0d2b77", "Bearer tok-91c2e0aa4f", "db-pw-77e1c2d9aa"]


def make_rows(count: int, *, echo: str | None = None, every: int = 0) -> list[dict]:
    """`count` rows; every `every`-th one (0: none) echoes `echo` in a text cell, as a leaky API would."""
    rows = []
    for n in range(count):
        note = f"row {n} of the publisher report, ok"
        if echo is not None and every and n % every == 0:
            note = f"request sent with {echo}"
        rows.append({"id": n, "publisher": f"pub-{n % 97}", "revenue": n * 0.37, "clicks": n % 1000,
                     "ctr": (n % 13) / 13, "country": "DE", "active": n % 2 == 0, "note": note,
                     "day": "2024-05-31", "meta": {"source": "api", "page": n // 100}})
    return rows


def median_s(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "no secret in the data": (make_rows(args.rows), SECRETS),
        "secret in 1 row of 1000": (make_rows(args.rows, echo=SECRETS[1], every=1000), SECRETS),
        "secret in every row": (make_rows(args.rows, echo=SECRETS[1], every=1), SECRETS),
        "4-digit secret in every row": (make_rows(args.rows), [*SECRETS, "2024"]),
    }
    print(f"{args.rows} rows, median of {args.repeats} runs")
    for name, (rows, secrets) in cases.items():
        payload = json.dumps(rows, default=str)
        dumps_s = median_s(lambda rows=rows: json.dumps(rows, default=str), args.repeats)
        mask_s = median_s(lambda payload=payload, secrets=secrets: mask_json(payload, secrets), args.repeats)
        masked = mask_json(payload, secrets)
        cells = [v for row in json.loads(masked) for v in row.values() if isinstance(v, str)]  # valid JSON still
        assert not any(s in cell for s in secrets for cell in cells), "a secret survived"
        print(f"  {name:32s} {len(payload) / 1e6:6.1f} MB  json.dumps {dumps_s * 1000:7.1f} ms  "
              f"mask_json {mask_s * 1000:7.1f} ms  ({100 * mask_s / dumps_s:5.1f}% of dumps)")
    check_linear()


# Text a client can put in a URL, a setting or a header that ends up in a log line or an error: long runs of the
# characters each masking pattern starts or loops on.
HOSTILE = {
    "question marks": "?", "ampersands": "&", "names without a value": "?a", "empty parameters": "?=",
    "a password name": "?password", "authorization blanks": "authorization: " + " ", "scheme letters": "a",
    "URL users": "a://b:", "at signs": "@",
}


def check_linear(size: int = 250_000, repeats: int = 3) -> None:
    """`mask_text` on each hostile text at `size` and `2 * size` characters: linear, and fast."""
    print(f"mask_text on hostile text, {size // 1000} kB and {2 * size // 1000} kB, median of {repeats}")
    for name, unit in HOSTILE.items():
        single, double = ((unit * (n // len(unit) + 1))[:n] for n in (size, 2 * size))
        one_s = median_s(lambda text=single: mask_text(text), repeats)
        two_s = median_s(lambda text=double: mask_text(text), repeats)
        print(f"  {name:24s} {one_s * 1000:8.1f} ms  {two_s * 1000:8.1f} ms  ({two_s / max(one_s, 1e-6):4.1f}x)")
        assert two_s < 1.0 and two_s <= 3 * one_s + 0.005, f"masking {name} is not linear"


if __name__ == "__main__":
    main()
