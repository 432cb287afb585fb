"""Generate synthkd's arithmetic word problems with gold answers and worked solutions.

Writes, next to this script:

* ``arithmetic_train.jsonl``: 160 problems (16 of each of the 10 kinds);
* ``arithmetic_test.jsonl``: 40 problems (4 of each kind), no question text shared with train.

Every template, name and item list here was written for synthkd; nothing comes from an existing
dataset. The output is deterministic (one ``random.Random(2026)``): rerunning the script reproduces
both files byte for byte. Arithmetic is exact (``fractions.Fraction``); each answer is recomputed
from the problem's numbers by a second, independent formula, and the worked solution's last
sentence must end with the answer, before anything is written.

Run: ``python data/rationale/make_arithmetic.py``
"""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
SEED = 2026
PER_KIND_TRAIN = 16
PER_KIND_TEST = 4

NAMES = [
    "Amara", "Bilal", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jasmin",
    "Kofi", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quinn", "Rosa", "Sami", "Tomas",
    "Uma", "Vikram", "Wen", "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Carmen", "Dev",
    "Elif", "Felix", "Gita", "Hugo", "Ines", "Jonah", "Keiko", "Luis", "Mina", "Noor",
]

Problem = dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------


def num(x: Fraction | int) -> str:
    """A number as plain text: "12", "7.5" (only whole numbers and tenths occur)."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    assert (x * 10).denominator == 1, f"not a tenth: {x}"
    whole, tenths = divmod(abs(x.numerator * 10 // x.denominator), 10)
    return f"{'-' if x < 0 else ''}{whole}.{tenths}"


def money(x: Fraction | int) -> str:
    """A dollar amount: "$12" for whole dollars, "$7.50" otherwise (only dimes occur)."""
    x = Fraction(x)
    assert x >= 0 and (x * 100).denominator == 1, f"not a money amount: {x}"
    if x.denominator == 1:
        return f"${x.numerator}"
    cents = x.numerator * 100 // x.denominator
    return f"${cents // 100}.{cents % 100:02d}"


def plural(n: int | Fraction, one: str, many: str) -> str:
    """``one`` when n == 1, else ``many``."""
    return one if n == 1 else many


def clock(minutes: int) -> str:
    """Minutes after midnight as a 12-hour clock time: 495 -> "8:15 AM"."""
    h, m = divmod(minutes, 60)
    suffix = "AM" if h < 12 else "PM"
    h12 = h % 12 or 12
    return f"{h12}:{m:02d} {suffix}"


def hm(minutes: int) -> str:
    """A duration as "2 hours and 35 minutes"."""
    h, m = divmod(minutes, 60)
    parts = []
    if h:
        parts.append(f"{h} {plural(h, 'hour', 'hours')}")
    if m:
        parts.append(f"{m} {plural(m, 'minute', 'minutes')}")
    return " and ".join(parts)


# ----------------------------------------------------------------------------------------------
# Templates: each returns a problem dict with question, answer (Fraction), steps and params.
# ----------------------------------------------------------------------------------------------

SHOP_ITEMS: list[tuple[str, str, list[Fraction | int]]] = [
    ("notebook", "notebooks", [2, 3, Fraction(5, 2), 4]),
    ("pencil case", "pencil cases", [3, Fraction(7, 2), 5, 6]),
    ("mango", "mangoes", [1, Fraction(3, 2), 2]),
    ("loaf of bread", "loaves of bread", [2, Fraction(5, 2), 3, 4]),
    ("bottle of juice", "bottles of juice", [1, 2, Fraction(5, 2), 3]),
    ("sketchbook", "sketchbooks", [5, 6, Fraction(15, 2), 8]),
    ("candle", "candles", [3, 4, Fraction(9, 2)]),
    ("tennis ball", "tennis balls", [1, 2, Fraction(3, 2)]),
    ("greeting card", "greeting cards", [2, 3, Fraction(7, 2)]),
    ("bag of rice", "bags of rice", [6, 7, 9, 10]),
    ("paintbrush", "paintbrushes", [2, 3, 4, Fraction(11, 2)]),
    ("jar of honey", "jars of honey", [5, 6, Fraction(13, 2), 8]),
]


def shopping(rng: random.Random) -> Problem:
    """Two kinds of items bought, paid with one bill: the change."""
    name = rng.choice(NAMES)
    (s1, p1s, prices1), (s2, p2s, prices2) = rng.sample(SHOP_ITEMS, 2)
    n1, n2 = rng.randint(2, 6), rng.randint(1, 4)
    c1, c2 = rng.choice(prices1), rng.choice(prices2)
    t1, t2 = n1 * c1, n2 * c2
    total = t1 + t2
    bill = next(b for b in (10, 20, 50, 100) if b > total)
    change = bill - total
    item1 = plural(n1, s1, p1s)
    item2 = plural(n2, s2, p2s)
    q = (
        f"{name} buys {n1} {item1} at {money(c1)} each and {n2} {item2} at {money(c2)} each, "
        f"and pays with a {money(bill)} bill. How much change, in dollars, should {name} get back?"
    )
    steps = [
        f"The {p1s} cost {n1} × {money(c1)} = {money(t1)}.",
        f"The {p2s} cost {n2} × {money(c2)} = {money(t2)}." if n2 > 1 else f"The {s2} costs {money(t2)}.",
        f"Altogether {name} spends {money(t1)} + {money(t2)} = {money(total)}.",
        f"The change is {money(bill)} - {money(total)} = {money(change)}.",
    ]
    return {"question": q, "answer": change, "steps": steps, "params": {"n1": n1, "c1": c1, "n2": n2, "c2": c2, "bill": bill, "ask": "change"}}


SHARE_ITEMS = [
    ("sticker", "stickers"), ("marble", "marbles"), ("cookie", "cookies"), ("seashell", "seashells"),
    ("trading card", "trading cards"), ("bead", "beads"), ("strawberry", "strawberries"),
    ("crayon", "crayons"), ("stamp", "stamps"), ("walnut", "walnuts"), ("button", "buttons"),
]


def sharing(rng: random.Random) -> Problem:
    """Equal sharing with a remainder: share size, leftover, or how many more to fill the last group."""
    name = rng.choice(NAMES)
    one, many = rng.choice(SHARE_ITEMS)
    k = rng.randint(3, 9)
    total = rng.randint(4 * k, 12 * k)
    q_each, r = divmod(total, k)
    ask = rng.choice(["each", "left", "more"])
    if r == 0:
        total += rng.randint(1, k - 1)
        q_each, r = divmod(total, k)
    if ask == "each":
        q = (
            f"{name} has {total} {many} and shares them equally among {k} friends, giving each friend "
            f"as many whole {many} as possible. How many {many} does each friend get?"
        )
        steps = [
            f"Dividing {total} by {k} gives {total} ÷ {k} = {q_each} with a remainder of {r}.",
            f"The {r} extra {plural(r, one, many)} cannot be split evenly, so each friend gets {q_each} {many}.",
        ]
        answer = Fraction(q_each)
    elif ask == "left":
        q = (
            f"{name} shares {total} {many} equally among {k} friends, giving each friend as many as possible. "
            f"How many {many} are left over?"
        )
        steps = [
            f"Each friend gets {total} ÷ {k} = {q_each} {many} (rounded down).",
            f"That uses {k} × {q_each} = {k * q_each} {many}.",
            f"So {total} - {k * q_each} = {r} {plural(r, one, many)} {plural(r, 'is', 'are')} left over.",
        ]
        answer = Fraction(r)
    else:
        q = (
            f"{name} packs {total} {many} into bags of {k}, filling one bag at a time. How many more {many} "
            f"does {name} need so that the last bag is full too?"
        )
        steps = [
            f"{total} ÷ {k} = {q_each} full bags with {r} {plural(r, one, many)} in the last bag.",
            f"The last bag needs {k} - {r} = {k - r} more {plural(k - r, one, many)}.",
        ]
        answer = Fraction(k - r)
    return {"question": q, "answer": answer, "steps": steps, "params": {"total": total, "k": k, "ask": ask}}


VEHICLES = ["train", "bus", "ferry", "delivery van", "tractor", "cargo ship", "motorbike"]


def rates(rng: random.Random) -> Problem:
    """Speed, time and distance; or a work rate."""
    name = rng.choice(NAMES)
    ask = rng.choice(["distance", "minutes", "speed", "work"])
    if ask == "distance":
        vehicle = rng.choice(VEHICLES)
        speed = rng.choice([30, 40, 45, 50, 60, 64, 72, 80, 90])
        t1, t2 = rng.randint(1, 3), rng.randint(1, 3)
        d1, d2 = speed * t1, speed * t2
        q = (
            f"A {vehicle} travels at a steady {speed} km per hour. It travels for {t1} {plural(t1, 'hour', 'hours')}, "
            f"stops for a break, then travels for another {t2} {plural(t2, 'hour', 'hours')}. How many kilometres does it cover in total?"
        )
        steps = [
            f"Travelling time is {t1} + {t2} = {t1 + t2} hours.",
            f"Distance is speed × time = {speed} × {t1 + t2} = {speed * (t1 + t2)} km.",
        ]
        answer = Fraction(d1 + d2)
        params: dict[str, Any] = {"speed": speed, "t1": t1, "t2": t2}
    elif ask == "minutes":
        speed = rng.choice([8, 10, 12, 14, 16, 18, 20, 24])
        hours = rng.choice([Fraction(1, 2), Fraction(3, 2), Fraction(5, 2), Fraction(1), Fraction(2)])
        dist = speed * hours
        q = f"{name} cycles {num(dist)} km at a steady {speed} km per hour. How many minutes does the ride take?"
        steps = [
            f"Time = distance ÷ speed = {num(dist)} ÷ {speed} = {num(hours)} {plural(hours, 'hour', 'hours')}.",
            f"In minutes that is {num(hours)} × 60 = {num(hours * 60)} minutes.",
        ]
        answer = hours * 60
        params = {"dist": dist, "speed": speed}
    elif ask == "speed":
        vehicle = rng.choice(VEHICLES)
        speed = rng.choice([36, 40, 48, 52, 60, 64, 72, 84, 96])
        h, m = rng.randint(1, 4), rng.choice([15, 30, 45])
        hours = h + Fraction(m, 60)
        dist = speed * hours
        if dist.denominator != 1:
            m = 30
            hours = h + Fraction(m, 60)
            dist = speed * hours
        q = (
            f"A {vehicle} covers {num(dist)} km in {h} {plural(h, 'hour', 'hours')} and {m} minutes. "
            f"What is its average speed in km per hour?"
        )
        steps = [
            f"{m} minutes is {m} ÷ 60 = {float(Fraction(m, 60)):g} of an hour, so the trip takes {float(hours):g} hours.",
            f"Average speed = {num(dist)} ÷ {float(hours):g} = {speed} km per hour.",
        ]
        answer = Fraction(speed)
        params = {"dist": dist, "h": h, "m": m}
    else:
        per_min = rng.choice([12, 15, 18, 20, 24, 25, 30])
        per_min2 = rng.choice([8, 10, 14, 16])
        minutes = rng.choice([5, 6, 8, 10, 12, 15])
        q = (
            f"One printer prints {per_min} pages per minute and a second printer prints {per_min2} pages per minute. "
            f"If both run together for {minutes} minutes, how many pages do they print?"
        )
        steps = [
            f"Together they print {per_min} + {per_min2} = {per_min + per_min2} pages per minute.",
            f"In {minutes} minutes that is {per_min + per_min2} × {minutes} = {(per_min + per_min2) * minutes} pages.",
        ]
        answer = Fraction(per_min * minutes + per_min2 * minutes)
        params = {"r1": per_min, "r2": per_min2, "minutes": minutes}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


SALE_ITEMS = ["jacket", "desk lamp", "pair of boots", "backpack", "board game", "rug", "blender", "bicycle helmet", "guitar stand", "tent"]


def percentages(rng: random.Random) -> Problem:
    """Discounts, tips, part of a group, and a score as a percentage."""
    name = rng.choice(NAMES)
    ask = rng.choice(["sale", "tip", "group", "score"])
    if ask == "sale":
        item = rng.choice(SALE_ITEMS)
        pct = rng.choice([10, 15, 20, 25, 30, 40, 50])
        price = rng.choice([p for p in range(12, 181, 2) if (Fraction(p * pct, 100) * 10).denominator == 1])
        off = Fraction(price * pct, 100)
        q = f"A {item} normally costs {money(price)}. This week it is {pct}% off. What is the sale price in dollars?"
        steps = [
            f"The discount is {pct}% of {money(price)}, which is {price} × {pct} ÷ 100 = {money(off)}.",
            f"The sale price is {money(price)} - {money(off)} = {money(price - off)}.",
        ]
        answer = price - off
        params: dict[str, Any] = {"price": price, "pct": pct}
    elif ask == "tip":
        pct = rng.choice([10, 15, 20])
        bill = rng.choice([b for b in range(20, 121, 2) if (Fraction(b * pct, 100) * 10).denominator == 1])
        tip = Fraction(bill * pct, 100)
        q = f"{name}'s dinner bill is {money(bill)}, and {name} adds a {pct}% tip. How much does {name} pay in total, in dollars?"
        steps = [
            f"The tip is {pct}% of {money(bill)} = {money(tip)}.",
            f"The total is {money(bill)} + {money(tip)} = {money(bill + tip)}.",
        ]
        answer = bill + tip
        params = {"bill": bill, "pct": pct}
    elif ask == "group":
        pct = rng.choice([20, 25, 40, 60, 75, 80])
        size = rng.choice([n for n in range(20, 81) if n * pct % 100 == 0])
        part = size * pct // 100
        q = (
            f"In a club of {size} members, {pct}% voted for a picnic. How many members did not vote for the picnic?"
        )
        steps = [
            f"{pct}% of {size} is {size} × {pct} ÷ 100 = {part} members who voted for the picnic.",
            f"So {size} - {part} = {size - part} members did not.",
        ]
        answer = Fraction(size - part)
        params = {"size": size, "pct": pct}
    else:
        total = rng.choice([20, 25, 40, 50])
        right = rng.choice([a for a in range(total // 2, total + 1) if a * 100 % total == 0])
        pct = right * 100 // total
        q = f"{name} answered {right} out of {total} quiz questions correctly. What percentage of the questions did {name} get right?"
        steps = [
            f"The fraction correct is {right} ÷ {total} = {float(Fraction(right, total)):g}.",
            f"As a percentage that is {float(Fraction(right, total)):g} × 100 = {pct}%.",
        ]
        answer = Fraction(pct)
        params = {"right": right, "total": total}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


def ages(rng: random.Random) -> Problem:
    """Ages: multiples, sum and difference, years ahead."""
    a, b = rng.sample(NAMES, 2)
    ask = rng.choice(["times", "sumdiff", "future"])
    if ask == "times":
        k = rng.randint(2, 4)
        young = rng.randint(3, 14)
        y = rng.randint(2, 9)
        z = k * young + y
        q = f"{a} is {k} times as old as {b}. In {y} years, {a} will be {z} years old. How old is {b} now?"
        steps = [
            f"{a} is {z} - {y} = {z - y} years old now.",
            f"{b} is {z - y} ÷ {k} = {young} years old.",
        ]
        answer = Fraction(young)
        params: dict[str, Any] = {"k": k, "y": y, "z": z}
    elif ask == "sumdiff":
        young = rng.randint(5, 30)
        d = rng.randint(2, 12)
        s = 2 * young + d
        q = f"The ages of {a} and {b} add up to {s} years, and {a} is {d} years older than {b}. How old is {a}?"
        steps = [
            f"Without the {d}-year difference the ages would add up to {s} - {d} = {s - d}.",
            f"That is twice {b}'s age, so {b} is {s - d} ÷ 2 = {young}.",
            f"{a} is {young} + {d} = {young + d} years old.",
        ]
        answer = Fraction(young + d)
        params = {"s": s, "d": d}
    else:
        now = rng.randint(20, 60)
        d = rng.randint(3, 15)
        y = rng.randint(2, 12)
        q = f"{a} is {now} years old, and {b} is {d} years younger than {a}. How old will {b} be in {y} years?"
        steps = [
            f"{b} is {now} - {d} = {now - d} years old now.",
            f"In {y} years {b} will be {now - d} + {y} = {now - d + y} years old.",
        ]
        answer = Fraction(now - d + y)
        params = {"now": now, "d": d, "y": y}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


def conversions(rng: random.Random) -> Problem:
    """Unit conversions, some followed by a division into portions."""
    name = rng.choice(NAMES)
    ask = rng.choice(["servings", "minutes", "glasses", "pieces", "inches"])
    if ask == "servings":
        food = rng.choice(["rice", "oats", "lentils", "pasta", "flour"])
        kg = rng.choice([Fraction(3, 2), Fraction(2), Fraction(5, 2), Fraction(3), Fraction(4), Fraction(5)])
        g = rng.choice([s for s in (50, 75, 100, 125, 150, 250) if (kg * 1000 / s).denominator == 1])
        q = f"A bag holds {num(kg)} kg of {food}. How many servings of {g} grams can be measured out of it?"
        steps = [
            f"{num(kg)} kg is {num(kg)} × 1000 = {num(kg * 1000)} grams.",
            f"{num(kg * 1000)} ÷ {g} = {num(kg * 1000 / g)} servings.",
        ]
        answer = kg * 1000 / g
        params: dict[str, Any] = {"kg": kg, "g": g}
    elif ask == "minutes":
        activity = rng.choice(["practised the piano", "hiked", "studied", "painted", "swam laps", "worked in the garden"])
        h, m = rng.randint(1, 5), rng.randint(5, 55)
        q = f"{name} {activity} for {h} {plural(h, 'hour', 'hours')} and {m} minutes. How many minutes is that in total?"
        steps = [
            f"{h} {plural(h, 'hour', 'hours')} is {h} × 60 = {h * 60} minutes.",
            f"Adding the rest gives {h * 60} + {m} = {h * 60 + m} minutes.",
        ]
        answer = Fraction(h * 60 + m)
        params = {"h": h, "m": m}
    elif ask == "glasses":
        drink = rng.choice(["lemonade", "iced tea", "orange juice", "water", "apple juice"])
        litres = rng.choice([Fraction(3, 2), Fraction(2), Fraction(5, 2), Fraction(3), Fraction(9, 2), Fraction(6)])
        ml = rng.choice([s for s in (150, 200, 250, 300, 500) if (litres * 1000 / s).denominator == 1])
        q = f"A jug holds {num(litres)} litres of {drink}. How many {ml} ml glasses can be filled from it?"
        steps = [
            f"{num(litres)} litres is {num(litres)} × 1000 = {num(litres * 1000)} ml.",
            f"{num(litres * 1000)} ÷ {ml} = {num(litres * 1000 / ml)} glasses.",
        ]
        answer = litres * 1000 / ml
        params = {"litres": litres, "ml": ml}
    elif ask == "pieces":
        thing = rng.choice(["ribbon", "rope", "strip of fabric", "length of wire", "wooden batten"])
        cm = rng.choice([20, 25, 30, 40, 50, 60, 75])
        pieces = rng.randint(4, 24)
        metres = Fraction(cm * pieces, 100)
        if (metres * 10).denominator != 1:
            pieces -= pieces % 2
            metres = Fraction(cm * pieces, 100)
        q = f"A {thing} {num(metres)} m long is cut into pieces that are each {cm} cm long. How many pieces are there?"
        steps = [
            f"{num(metres)} m is {num(metres)} × 100 = {num(metres * 100)} cm.",
            f"{num(metres * 100)} ÷ {cm} = {pieces} pieces.",
        ]
        answer = metres * 100 / cm
        params = {"metres": metres, "cm": cm}
    else:
        thing = rng.choice(["bookshelf", "table", "window", "door", "workbench"])
        feet, inches = rng.randint(2, 8), rng.randint(1, 11)
        q = f"A {thing} is {feet} feet {inches} {plural(inches, 'inch', 'inches')} wide. How many inches wide is it? (1 foot = 12 inches)"
        steps = [
            f"{feet} feet is {feet} × 12 = {feet * 12} inches.",
            f"Adding {inches} {plural(inches, 'inch', 'inches')} gives {feet * 12} + {inches} = {feet * 12 + inches} inches.",
        ]
        answer = Fraction(feet * 12 + inches)
        params = {"feet": feet, "inches": inches}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


BAKED = [("muffin", "muffins"), ("bagel", "bagels"), ("scone", "scones"), ("croissant", "croissants"), ("bread roll", "bread rolls")]


def multi_step(rng: random.Random) -> Problem:
    """Combinations of multiplication, addition and subtraction."""
    name = rng.choice(NAMES)
    ask = rng.choice(["bakery", "library", "savings"])
    if ask == "bakery":
        one, many = rng.choice(BAKED)
        trays, per = rng.randint(3, 9), rng.choice([6, 8, 10, 12, 15])
        made = trays * per
        morning = rng.randint(made // 4, made // 2)
        afternoon = rng.randint(1, made - morning - 1)
        q = (
            f"A bakery bakes {trays} trays of {many} with {per} {many} on each tray. It sells {morning} {many} in the morning "
            f"and {afternoon} in the afternoon. How many {many} are left at closing time?"
        )
        steps = [
            f"The bakery makes {trays} × {per} = {made} {many}.",
            f"It sells {morning} + {afternoon} = {morning + afternoon} {many}.",
            f"So {made} - {morning + afternoon} = {made - morning - afternoon} {plural(made - morning - afternoon, one, many)} are left.",
        ]
        answer = Fraction(made - morning - afternoon)
        params: dict[str, Any] = {"trays": trays, "per": per, "sold": [morning, afternoon]}
    elif ask == "library":
        shelves, per = rng.randint(4, 12), rng.choice([20, 24, 25, 30, 35, 40])
        out = rng.randint(5, shelves * per // 3)
        new = rng.randint(3, 40)
        q = (
            f"A school library has {shelves} shelves holding {per} books each. Students borrow {out} books, "
            f"and then {new} new books are added to the shelves. How many books are on the shelves now?"
        )
        steps = [
            f"At first there are {shelves} × {per} = {shelves * per} books.",
            f"After the loans there are {shelves * per} - {out} = {shelves * per - out} books.",
            f"With the new books there are {shelves * per - out} + {new} = {shelves * per - out + new} books.",
        ]
        answer = Fraction(shelves * per - out + new)
        params = {"shelves": shelves, "per": per, "out": out, "new": new}
    else:
        weekly_options: list[Fraction | int] = [4, 5, 6, 8, 10, 12, 15, Fraction(15, 2), Fraction(25, 2)]
        weekly = rng.choice(weekly_options)
        weeks = rng.randint(4, 12)
        saved = weekly * weeks
        thing = rng.choice(["a pair of headphones", "a video game", "a skateboard", "a book set", "a kite", "a watch"])
        cost = rng.choice([c for c in range(10, 151) if c < saved])
        q = (
            f"{name} saves {money(weekly)} every week for {weeks} weeks and then buys {thing} for {money(cost)}. "
            f"How many dollars does {name} have left?"
        )
        steps = [
            f"{name} saves {weeks} × {money(weekly)} = {money(saved)}.",
            f"After the purchase {name} has {money(saved)} - {money(cost)} = {money(saved - cost)} left.",
        ]
        answer = Fraction(saved - cost)
        params = {"weekly": weekly, "weeks": weeks, "cost": cost}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


COLLECTIONS = [("stickers", "sticker"), ("postcards", "postcard"), ("coins", "coin"), ("pebbles", "pebble"), ("comic books", "comic book")]


def comparing(rng: random.Random) -> Problem:
    """Comparing quantities: "more than", "times as many", differences of totals."""
    a, b, c = rng.sample(NAMES, 3)
    ask = rng.choice(["chain", "pages", "times"])
    if ask == "chain":
        many, _ = rng.choice(COLLECTIONS)
        x, more, k = rng.randint(8, 40), rng.randint(3, 20), rng.randint(2, 3)
        y = x + more
        z = k * y
        word = {2: "twice", 3: "three times"}[k]
        q = (
            f"{a} has {x} {many}. {b} has {more} more {many} than {a}, and {c} has {word} as many as {b}. "
            f"How many more {many} does {c} have than {a}?"
        )
        steps = [
            f"{b} has {x} + {more} = {y} {many}.",
            f"{c} has {k} × {y} = {z} {many}.",
            f"{c} has {z} - {x} = {z - x} more {many} than {a}.",
        ]
        answer = Fraction(z - x)
        params: dict[str, Any] = {"x": x, "more": more, "k": k}
    elif ask == "pages":
        p, q2 = rng.randint(15, 60), rng.randint(15, 60)
        r = rng.randint(20, p + q2 - 1)
        q = (
            f"{a} read {p} pages on Saturday and {q2} pages on Sunday. Over the same weekend {b} read {r} pages. "
            f"How many more pages did {a} read than {b}?"
        )
        steps = [
            f"{a} read {p} + {q2} = {p + q2} pages.",
            f"The difference is {p + q2} - {r} = {p + q2 - r} pages.",
        ]
        answer = Fraction(p + q2 - r)
        params = {"p": p, "q": q2, "r": r}
    else:
        container = rng.choice(["jar", "box", "basket", "crate"])
        item = rng.choice(["marbles", "apples", "buttons", "shells", "acorns"])
        small, k = rng.randint(6, 30), rng.randint(3, 6)
        q = (
            f"The first {container} holds {small} {item}. The second {container} holds {k} times as many. "
            f"How many fewer {item} are in the first {container} than in the second?"
        )
        steps = [
            f"The second {container} holds {k} × {small} = {k * small} {item}.",
            f"The first holds {k * small} - {small} = {k * small - small} fewer {item}.",
        ]
        answer = Fraction(k * small - small)
        params = {"small": small, "k": k}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


def geometry(rng: random.Random) -> Problem:
    """Area and perimeter of rectangles and squares."""
    ask = rng.choice(["fence", "pond", "square", "tiles"])
    if ask == "fence":
        length, width = rng.randint(6, 40), rng.randint(4, 25)
        price_options: list[Fraction | int] = [2, 3, 4, 5, Fraction(5, 2), Fraction(7, 2)]
        price = rng.choice(price_options)
        per = 2 * (length + width)
        q = (
            f"A rectangular yard is {length} m long and {width} m wide. Fencing costs {money(price)} per metre. "
            f"How much, in dollars, does it cost to fence the whole yard?"
        )
        steps = [
            f"The perimeter is 2 × ({length} + {width}) = {per} m.",
            f"The fence costs {per} × {money(price)} = {money(per * price)}.",
        ]
        answer = per * price
        params: dict[str, Any] = {"length": length, "width": width, "price": price}
    elif ask == "pond":
        length, width = rng.randint(8, 30), rng.randint(6, 20)
        side = rng.randint(2, min(length, width) - 2)
        q = (
            f"A rectangular garden measures {length} m by {width} m. A square pond with sides of {side} m is dug in it. "
            f"How many square metres of the garden are not covered by the pond?"
        )
        steps = [
            f"The garden's area is {length} × {width} = {length * width} square metres.",
            f"The pond's area is {side} × {side} = {side * side} square metres.",
            f"The uncovered area is {length * width} - {side * side} = {length * width - side * side} square metres.",
        ]
        answer = Fraction(length * width - side * side)
        params = {"length": length, "width": width, "side": side}
    elif ask == "square":
        side = rng.randint(3, 25)
        q = f"A square picture frame has a perimeter of {4 * side} cm. What is its area in square centimetres?"
        steps = [
            f"Each side is {4 * side} ÷ 4 = {side} cm.",
            f"The area is {side} × {side} = {side * side} square centimetres.",
        ]
        answer = Fraction(side * side)
        params = {"perimeter": 4 * side}
    else:
        tile = rng.choice([Fraction(1, 2), Fraction(1)])
        length, width = rng.randint(3, 9), rng.randint(2, 7)
        per_m2 = 1 / (tile * tile)
        q = (
            f"A floor is {length} m long and {width} m wide. It is covered with square tiles that are {num(tile)} m on each side. "
            f"How many tiles are needed?"
        )
        if tile == 1:
            steps = [
                f"The floor's area is {length} × {width} = {length * width} square metres.",
                f"Each tile covers 1 square metre, so {length * width} tiles are needed.",
            ]
        else:
            steps = [
                f"The floor's area is {length} × {width} = {length * width} square metres.",
                f"Each tile covers {num(tile)} × {num(tile)} = 0.25 square metres, so 4 tiles fit in one square metre.",
                f"The floor needs {length * width} × 4 = {length * width * 4} tiles.",
            ]
        answer = length * width * per_m2
        params = {"length": length, "width": width, "tile": tile}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


EVENTS = ["film", "concert", "football match", "school play", "lecture", "board meeting", "cooking class"]


def time_spans(rng: random.Random) -> Problem:
    """Durations between clock times, and schedules with breaks."""
    name = rng.choice(NAMES)
    ask = rng.choice(["event", "workday", "schedule"])
    if ask == "event":
        event = rng.choice(EVENTS)
        start = rng.randrange(9 * 60, 20 * 60, 5)
        length = rng.randrange(60, 200, 5)
        end = start + length
        to_hour = 60 - start % 60 if start % 60 else 0
        q = f"A {event} starts at {clock(start)} and ends at {clock(end)}. How many minutes long is it?"
        if to_hour and end - start > to_hour:
            full_hours, rest = divmod(end - (start + to_hour), 60)
            steps = [
                f"From {clock(start)} to {clock(start + to_hour)} is {to_hour} minutes.",
                f"From {clock(start + to_hour)} to {clock(end)} is {full_hours * 60 + rest} minutes.",
                f"In total that is {to_hour} + {full_hours * 60 + rest} = {length} minutes.",
            ]
        else:
            steps = [
                f"From {clock(start)} to {clock(end)} is {hm(length)}.",
                f"That is {length // 60} × 60 + {length % 60} = {length} minutes."
                if length % 60
                else f"That is {length // 60} × 60 = {length} minutes.",
            ]
        answer = Fraction(length)
        params: dict[str, Any] = {"start": start, "end": end}
    elif ask == "workday":
        start = rng.choice([7 * 60, 7 * 60 + 30, 8 * 60, 8 * 60 + 30, 9 * 60])
        length = rng.choice([6 * 60, 7 * 60, 8 * 60, 8 * 60 + 30, 9 * 60, 9 * 60 + 30])
        lunch = rng.choice([30, 60])
        end = start + length
        worked = Fraction(length - lunch, 60)
        q = (
            f"{name} starts work at {clock(start)} and finishes at {clock(end)}, with a {lunch}-minute lunch break. "
            f"How many hours does {name} actually work?"
        )
        steps = [
            f"From {clock(start)} to {clock(end)} is {num(Fraction(length, 60))} hours.",
            f"Taking away the {num(Fraction(lunch, 60))}-hour break leaves {num(Fraction(length, 60))} - {num(Fraction(lunch, 60))} = {num(worked)} hours.",
        ]
        answer = worked
        params = {"start": start, "end": end, "lunch": lunch}
    else:
        n = rng.randint(3, 6)
        lesson = rng.choice([30, 40, 45, 50, 55])
        gap = rng.choice([5, 10, 15])
        total = n * lesson + (n - 1) * gap
        q = (
            f"{name} has {n} lessons in a row, each {lesson} minutes long, with a {gap}-minute break between consecutive lessons. "
            f"How many minutes pass from the start of the first lesson to the end of the last one?"
        )
        steps = [
            f"The lessons take {n} × {lesson} = {n * lesson} minutes.",
            f"There are {n - 1} breaks, taking {n - 1} × {gap} = {(n - 1) * gap} minutes.",
            f"Altogether that is {n * lesson} + {(n - 1) * gap} = {total} minutes.",
        ]
        answer = Fraction(total)
        params = {"n": n, "lesson": lesson, "gap": gap}
    params["ask"] = ask
    return {"question": q, "answer": answer, "steps": steps, "params": params}


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "shopping_change": shopping,
    "equal_sharing": sharing,
    "rates": rates,
    "percentages": percentages,
    "ages": ages,
    "unit_conversion": conversions,
    "multi_step": multi_step,
    "comparison": comparing,
    "area_perimeter": geometry,
    "time_spans": time_spans,
}


# ----------------------------------------------------------------------------------------------
# Independent recomputation of every answer from the problem's numbers
# ----------------------------------------------------------------------------------------------


def recompute(kind: str, p: dict[str, Any]) -> Fraction:
    """The answer recomputed from the numbers in ``p`` by a formula written separately from the template."""
    return Fraction(_recompute(kind, p))


def _recompute(kind: str, p: dict[str, Any]) -> Any:
    """:func:`recompute`'s formulas, kind by kind."""
    ask = p["ask"]
    if kind == "shopping_change":
        return Fraction(p["bill"]) - (p["n1"] * Fraction(p["c1"]) + p["n2"] * Fraction(p["c2"]))
    if kind == "equal_sharing":
        t, k = p["total"], p["k"]
        return Fraction({"each": t // k, "left": t % k, "more": -t % k}[ask])
    if kind == "rates":
        if ask == "distance":
            return Fraction(p["speed"] * p["t1"] + p["speed"] * p["t2"])
        if ask == "minutes":
            return Fraction(p["dist"]) * 60 / p["speed"]
        if ask == "speed":
            return Fraction(p["dist"]) * 60 / (60 * p["h"] + p["m"])
        return Fraction((p["r1"] + p["r2"]) * p["minutes"])
    if kind == "percentages":
        if ask == "sale":
            return Fraction(p["price"]) * (100 - p["pct"]) / 100
        if ask == "tip":
            return Fraction(p["bill"]) * (100 + p["pct"]) / 100
        if ask == "group":
            return Fraction(p["size"]) * (100 - p["pct"]) / 100
        return Fraction(100 * p["right"], p["total"])
    if kind == "ages":
        if ask == "times":
            return Fraction(p["z"] - p["y"], p["k"])
        if ask == "sumdiff":
            return Fraction(p["s"] + p["d"], 2)
        return Fraction(p["now"] - p["d"] + p["y"])
    if kind == "unit_conversion":
        if ask == "servings":
            return Fraction(p["kg"]) * 1000 / p["g"]
        if ask == "minutes":
            return Fraction(60 * p["h"] + p["m"])
        if ask == "glasses":
            return Fraction(p["litres"]) * 1000 / p["ml"]
        if ask == "pieces":
            return Fraction(p["metres"]) * 100 / p["cm"]
        return Fraction(12 * p["feet"] + p["inches"])
    if kind == "multi_step":
        if ask == "bakery":
            return Fraction(p["trays"] * p["per"] - sum(p["sold"]))
        if ask == "library":
            return Fraction(p["shelves"] * p["per"] - p["out"] + p["new"])
        return Fraction(p["weekly"]) * p["weeks"] - p["cost"]
    if kind == "comparison":
        if ask == "chain":
            return Fraction(p["k"] * (p["x"] + p["more"]) - p["x"])
        if ask == "pages":
            return Fraction(p["p"] + p["q"] - p["r"])
        return Fraction((p["k"] - 1) * p["small"])
    if kind == "area_perimeter":
        if ask == "fence":
            return (2 * p["length"] + 2 * p["width"]) * Fraction(p["price"])
        if ask == "pond":
            return Fraction(p["length"] * p["width"] - p["side"] ** 2)
        if ask == "square":
            return Fraction(p["perimeter"], 4) ** 2
        return Fraction(p["length"] * p["width"]) / Fraction(p["tile"]) ** 2
    if kind == "time_spans":
        if ask == "event":
            return Fraction(p["end"] - p["start"])
        if ask == "workday":
            return Fraction(p["end"] - p["start"] - p["lunch"], 60)
        return Fraction(p["n"] * p["lesson"] + (p["n"] - 1) * p["gap"])
    raise ValueError(f"unknown kind {kind}")


_LAST_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def check(kind: str, problem: Problem) -> None:
    """Assert the problem is well formed: answer recomputed, positive, a whole number or tenths, 2-4
    steps each one sentence, and the last step's last number is the answer."""
    answer = problem["answer"]
    assert answer == recompute(kind, problem["params"]), (kind, problem)
    assert answer > 0 and (answer * 10).denominator == 1, (kind, problem)
    steps = problem["steps"]
    assert 2 <= len(steps) <= 4, (kind, problem)
    assert all(s.endswith(".") or s.endswith("?") for s in steps), (kind, problem)
    last = _LAST_NUMBER.findall(steps[-1])[-1]
    assert Fraction(last) == answer, (kind, last, problem)


def generate() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build the train and test problems (deterministically from SEED)."""
    rng = random.Random(SEED)
    seen: set[str] = set()
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for kind, template in TEMPLATES.items():
        problems: list[Problem] = []
        while len(problems) < PER_KIND_TRAIN + PER_KIND_TEST:
            problem = template(rng)
            if problem["question"] in seen:
                continue
            check(kind, problem)
            seen.add(problem["question"])
            problems.append(problem)
        for i, problem in enumerate(problems):
            row = {"question": problem["question"], "answer": num(problem["answer"]), "steps": problem["steps"], "kind": kind}
            (test if i < PER_KIND_TEST else train).append(row)
    rng.shuffle(train)
    rng.shuffle(test)
    out_train = [{"id": f"arith-train-{i:04d}", **row} for i, row in enumerate(train, 1)]
    out_test = [{"id": f"arith-test-{i:04d}", **row} for i, row in enumerate(test, 1)]
    return out_train, out_test


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, UTF-8, keys in insertion order, trailing newline."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    train, test = generate()
    assert len(train) == PER_KIND_TRAIN * len(TEMPLATES) and len(test) == PER_KIND_TEST * len(TEMPLATES)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    write_jsonl(HERE / "arithmetic_train.jsonl", train)
    write_jsonl(HERE / "arithmetic_test.jsonl", test)
    print(f"wrote {len(train)} train and {len(test)} test problems to {HERE}")


if __name__ == "__main__":
    main()
