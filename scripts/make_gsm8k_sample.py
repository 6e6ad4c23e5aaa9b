"""Write examples/data/gsm8k_sample.jsonl: small GSM8K-shaped word problems, generated.

Each row is `{"question": ..., "answer": ...}` where the answer is worked reasoning with
GSM8K's `<<a+b=c>>` calculator marks and a final `#### N` line, exactly the shape of
openai/gsm8k's rows, so a run file written for it works on the real dataset unchanged.
Deterministic (seeded); rerun to regenerate: `python scripts/make_gsm8k_sample.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elif", "Femi", "Goro", "Hana", "Ivan", "Jade"]
THINGS = ["apples", "stickers", "marbles", "books", "pencils", "cookies", "cards", "shells"]


def one(rng: random.Random) -> dict[str, str]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 40), rng.randint(2, 30)
    kind = rng.randrange(4)
    if kind == 0:
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        r = a + b
        steps = f"{name} has {a} + {b} = <<{a}+{b}={r}>>{r} {thing}."
    elif kind == 1:
        a = a + b
        q = f"{name} had {a} {thing} and gave away {b}. How many {thing} are left?"
        r = a - b
        steps = f"{name} has {a} - {b} = <<{a}-{b}={r}>>{r} {thing} left."
    elif kind == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        q = f"{name} buys {a} boxes with {b} {thing} in each box. How many {thing} is that?"
        r = a * b
        steps = f"{a} boxes hold {a} * {b} = <<{a}*{b}={r}>>{r} {thing}."
    else:
        c = rng.randint(2, 9)
        q = (
            f"{name} has {a} {thing}, finds {b} more and then splits them into groups of "
            f"{c}, keeping the rest. How many {thing} are left over?"
        )
        s = a + b
        r = s % c
        steps = (
            f"{name} has {a} + {b} = <<{a}+{b}={s}>>{s} {thing}.\n"
            f"{s} groups of {c} leave {s} % {c} = <<{s}%{c}={r}>>{r}."
        )
    return {"question": q, "answer": f"{steps}\n#### {r}"}


def main(n: int = 256, seed: int = 17) -> None:
    rng = random.Random(seed)
    out = Path(__file__).resolve().parents[1] / "examples" / "data" / "gsm8k_sample.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps(one(rng)) for _ in range(n)]
    out.write_text("\n".join(rows) + "\n")
    print(f"{n} rows -> {out}")


if __name__ == "__main__":
    main()
