"""Write the conversation seeds: data/chat/seeds.jsonl (training) and data/chat/heldout_seeds.jsonl.

Each seed is a topic a person wants help with, and, for some, who they are (a persona) or a first message of
their own. Topics of the held-out seeds are never among the training topics. Deterministic:
`python data/chat/make_chat.py` rewrites the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOPICS = [
    "keeping basil alive on a windowsill", "cooking rice without a rice cooker", "getting rid of fruit flies",
    "choosing running shoes", "stretching after a long walk", "making a weekly food budget", "saving for a bicycle",
    "why the sky is blue", "how rainbows form", "why leaves change color in autumn", "how vaccines train the body",
    "what causes the seasons", "how bees make honey", "packing light for a weekend trip", "beating jet lag",
    "learning to juggle", "practicing a new language every day", "writing a short thank-you note",
    "preparing for a job interview", "keeping a houseplant watered while away", "removing a coffee stain",
    "starting a compost pile", "making a paper airplane fly farther", "planning a picnic", "choosing a first telescope",
    "how tides work", "why bread rises", "how to boil an egg", "cleaning a cast iron pan", "sleeping better",
    "staying focused while studying", "reading more books", "organising a small closet", "teaching a dog to sit",
    "how a refrigerator keeps food cold", "what a solar eclipse is", "how wind turbines make power",
    "learning chess openings", "taking better phone photos", "keeping a journal", "baking cookies that stay soft",
    "fixing a squeaky door", "making cold brew coffee", "how clouds form", "why cats purr", "choosing a houseplant for low light",
    "how to tie a bowline knot", "how to read a bus timetable",
]
HELDOUT_TOPICS = [
    "growing tomatoes on a balcony", "making pancakes fluffy", "why the moon has phases", "how volcanoes erupt",
    "starting to run as a beginner", "keeping bread fresh longer", "how a compass works", "learning to whistle",
    "writing a good to-do list", "cleaning a laptop keyboard", "how earthquakes are measured", "training for a 5k",
    "making iced tea", "why the ocean is salty", "planning a birthday party", "choosing a backpack for hiking",
]
PERSONAS = ["a college student", "a retired teacher", "a parent of two small children", "a nurse working night shifts",
            "a beginner cook", "a curious ten-year-old's parent", "someone who just moved to a new city", None, None, None]
OPENERS = ["I have a question about {topic}.", "Can you help me with {topic}?", "Quick question: {topic}. Where do I start?"]


def seeds(topics: list[str], prefix: str, rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for i, topic in enumerate(topics):
        row: dict[str, str] = {"id": f"{prefix}-{i:03d}", "topic": topic}
        persona = rng.choice(PERSONAS)
        if persona:
            row["persona"] = persona
        if rng.random() < 0.3:  # some seeds bring their own first message
            row["first_message"] = rng.choice(OPENERS).format(topic=topic)
        rows.append(row)
    return rows


def main() -> None:
    assert not set(TOPICS) & set(HELDOUT_TOPICS)
    rng = random.Random(0)
    for name, topics, prefix in (("seeds.jsonl", TOPICS, "chat"), ("heldout_seeds.jsonl", HELDOUT_TOPICS, "chat-heldout")):
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in seeds(topics, prefix, rng)))


if __name__ == "__main__":
    main()
