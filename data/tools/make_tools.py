"""Write the tool-use data: data/tools/countries.jsonl (the lookup table), data/tools/tasks.jsonl (training tasks)
and data/tools/heldout_tasks.jsonl, each task with the answer the tools give (`gold`) and the tool it needs
(`gold_tool`). Held-out tasks use other numbers, countries and dates than the training ones. Deterministic:
`python data/tools/make_tools.py` rewrites the same files.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

COUNTRIES = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Canada", "Ottawa"),
    ("Egypt", "Cairo"), ("Norway", "Oslo"), ("Chile", "Santiago"), ("Vietnam", "Hanoi"), ("Ghana", "Accra"),
    ("Poland", "Warsaw"), ("Mexico", "Mexico City"), ("Thailand", "Bangkok"), ("Austria", "Vienna"), ("Cuba", "Havana"),
    ("Greece", "Athens"), ("Ireland", "Dublin"), ("Morocco", "Rabat"), ("Nepal", "Kathmandu"), ("Sweden", "Stockholm"),
    ("Argentina", "Buenos Aires"), ("Portugal", "Lisbon"), ("Finland", "Helsinki"), ("Jordan", "Amman"),
    ("Colombia", "Bogota"), ("Hungary", "Budapest"), ("Senegal", "Dakar"), ("Iceland", "Reykjavik"),
    ("Mongolia", "Ulaanbaatar"), ("Uruguay", "Montevideo"), ("Denmark", "Copenhagen"), ("Tunisia", "Tunis"),
]
PHRASES = {
    "times": ["What is {a} times {b}?", "Multiply {a} by {b}.", "Compute {a} * {b} exactly."],
    "plus": ["What is {a} plus {b}?", "Add {a} and {b}."],
    "capital": ["What is the capital of {c}?", "Which city is the capital of {c}?"],
    "days": ["How many days are there from {d1} to {d2}?", "Count the days between {d1} and {d2}."],
    "weekday": ["What day of the week was {d}?", "On which weekday did {d} fall?"],
}


def task(kind: str, rng: random.Random, countries: list[tuple[str, str]]) -> dict[str, str]:
    phrase = rng.choice(PHRASES[kind])
    if kind in ("times", "plus"):
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        return {"instruction": phrase.format(a=a, b=b), "gold": str(a * b if kind == "times" else a + b), "gold_tool": "calculator"}
    if kind == "capital":
        country, capital = rng.choice(countries)
        return {"instruction": phrase.format(c=country), "gold": capital, "gold_tool": "lookup_capital"}
    start = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1500))
    if kind == "days":
        end = start + dt.timedelta(days=rng.randint(5, 200))
        return {"instruction": phrase.format(d1=start.isoformat(), d2=end.isoformat()), "gold": str((end - start).days), "gold_tool": "days_between"}
    return {"instruction": phrase.format(d=start.isoformat()), "gold": start.strftime("%A"), "gold_tool": "weekday"}


def main() -> None:
    (HERE / "countries.jsonl").write_text("".join(json.dumps({"country": c, "capital": k}) + "\n" for c, k in COUNTRIES))
    rng = random.Random(0)
    train_countries, heldout_countries = COUNTRIES[:22], COUNTRIES[22:]
    seen: set[str] = set()
    for name, n, countries, prefix in (("tasks.jsonl", 80, train_countries, "tool"), ("heldout_tasks.jsonl", 30, heldout_countries, "tool-heldout")):
        rows = []
        while len(rows) < n:
            row = task(rng.choice(list(PHRASES)), rng, countries)
            if row["instruction"] in seen:
                continue
            seen.add(row["instruction"])
            rows.append({"id": f"{prefix}-{len(rows):03d}", **row})
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
