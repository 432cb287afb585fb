"""Calibration text for choosing which layers a depth-pruned student keeps.

Short chat exchanges of many kinds (facts, word tasks, classification, explanation, lists, arithmetic,
advice), written for synthkd. They are not training data and not an evaluation set: pruning only
runs the source model over them to see how much each layer changes its input (`influence.py`).
Kept general on purpose, so the choice does not lean towards any one pipeline's task.
"""

from __future__ import annotations

CALIBRATION_VERSION = "1"

EXCHANGES: tuple[tuple[str, str], ...] = (
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."),
    ("Who wrote the play Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
    ("In which country is the city of Kyoto?", "Kyoto is in Japan."),
    ("What language is mostly spoken in Brazil?", "Portuguese is the main language spoken in Brazil."),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide from the air and release oxygen."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Give a word that means the same as \"quick\".", "A word that means the same as \"quick\" is \"fast\"."),
    ("What is the past tense of \"swim\"?", "The past tense of \"swim\" is \"swam\"."),
    ("Spell the word \"necessary\" backwards.", "Backwards, \"necessary\" is \"yrassecen\"."),
    ("What is the singular of \"geese\"?", "The singular of \"geese\" is \"goose\"."),
    ("Is this sentence a question or a statement? \"The train leaves at noon.\"", "It is a statement."),
    ("Classify the topic of this headline: \"Local team wins the regional cup final\".", "The topic is sports."),
    ("Is the tone of this message friendly or hostile? \"Thanks so much, see you tomorrow!\"", "The tone is friendly."),
    ("Does this review recommend the product? \"It broke after two days and support never answered.\"",
     "No, the review does not recommend the product."),
    ("Explain why the sky looks blue.",
     "Sunlight is scattered by the gas molecules in the air, and blue light is scattered much more than red light, "
     "so blue light reaches our eyes from every part of the sky."),
    ("Why do we have seasons?",
     "Earth's axis is tilted, so as it orbits the Sun each hemisphere takes turns receiving more direct sunlight "
     "and longer days."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("Describe what a library is in one sentence.", "A library is a place that keeps books and other media for people to read or borrow."),
    ("List three primary colors.", "Red, yellow and blue."),
    ("Name four animals that live in the sea.", "Dolphins, octopuses, sharks and sea turtles."),
    ("Give three tips for sleeping better.",
     "Go to bed at the same time every night, keep the bedroom dark and quiet, and avoid screens before sleep."),
    ("List the days of the weekend.", "Saturday and Sunday."),
    ("What is 12 plus 30?", "12 plus 30 is 42."),
    ("What is 9 times 7?", "9 times 7 is 63."),
    ("If a book costs 8 dollars, how much do three books cost?", "Three books cost 24 dollars."),
    ("How many minutes are in two hours?", "There are 120 minutes in two hours."),
    ("Write a short greeting for a birthday card.", "Happy birthday! Wishing you a wonderful year full of joy and good friends."),
    ("Suggest a name for a small bakery.", "How about \"The Morning Loaf\"?"),
    ("Write one sentence about autumn.", "In autumn the leaves turn red and gold and fall softly to the ground."),
    ("Rewrite this sentence in the passive voice: \"The cat chased the mouse.\"", "The mouse was chased by the cat."),
    ("Translate \"thank you\" into French.", "\"Thank you\" in French is \"merci\"."),
    ("Summarize in one sentence: \"The meeting was moved from Monday to Wednesday because the room was booked.\"",
     "The meeting moved to Wednesday since the room was taken on Monday."),
    ("How can I keep my houseplants healthy?",
     "Water them when the top of the soil is dry, give them enough light, and repot them when the roots fill the pot."),
    ("What should I pack for a day of hiking?", "Bring water, snacks, sunscreen, a map, a light jacket and good walking shoes."),
    ("What is a synonym for \"happy\"?", "A synonym for \"happy\" is \"joyful\"."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("Which is heavier, a kilogram of iron or a kilogram of feathers?", "They weigh the same: one kilogram each."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
)
