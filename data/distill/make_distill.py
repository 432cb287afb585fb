"""Generate synthkd's short-answer distillation instructions: a training pool and a held-out set.

Writes, next to this script:

* ``pool.jsonl``: the training pool (instructions sent to the teacher for distillation);
* ``heldout.jsonl``: the held-out set, disjoint from the pool (items, subjects and near-duplicates).

Each line is a JSON object with keys ``id``, ``instruction``, ``family``, ``gold`` (in that order).
``gold`` is a short answer string for the checkable families (antonym, capital, plural, sentiment)
and ``null`` for the open-ended ones (list, definition, open).

The families are chosen for a very small teacher (SmolLM2-135M-Instruct): one-word answers, well
known facts, short lists, one-sentence definitions and short everyday answers. Every item list,
review sentence, open-ended instruction and template below was written for synthkd in its own
words; nothing comes from an existing instruction dataset.

The output is deterministic (one ``random.Random(0)``): rerunning the script reproduces both files
byte for byte. Before anything is written the script asserts that

1. no key item (antonym word pair, country or capital, noun, review text, list category,
   definition word, open-ended subject) appears in both files, and no instruction appears twice;
2. no pool/held-out pair of instructions shares a 13-token n-gram, and no same-family
   pool/held-out pair has ROUGE-L F1 (token LCS) above 0.9;
3. the held-out set has at least 160 rows and at least 20 rows per checkable family, and the pool
   has at least 420 rows; every instruction is under 40 words.

Run: ``python data/distill/make_distill.py``
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 0
HELDOUT_SHARE = 0.28
NGRAM = 13
MAX_ROUGE_L = 0.9
MAX_WORDS = 40
MIN_POOL = 420
MIN_HELDOUT = 160
MIN_HELDOUT_PER_GOLD_FAMILY = 20

FAMILIES = ["antonym", "capital", "plural", "sentiment", "list", "definition", "open"]
GOLD_FAMILIES = {"antonym", "capital", "plural", "sentiment"}

# ----------------------------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------------------------

# (asked word, its one dominant antonym). No word occurs in two pairs.
ANTONYMS: list[tuple[str, str]] = [
    ("hot", "cold"), ("up", "down"), ("happy", "sad"), ("big", "small"), ("fast", "slow"),
    ("long", "short"), ("day", "night"), ("black", "white"), ("yes", "no"), ("in", "out"),
    ("left", "right"), ("early", "late"), ("rich", "poor"), ("full", "empty"), ("wet", "dry"),
    ("young", "old"), ("true", "false"), ("win", "lose"), ("push", "pull"), ("before", "after"),
    ("boy", "girl"), ("king", "queen"), ("love", "hate"), ("buy", "sell"), ("inside", "outside"),
    ("above", "below"), ("north", "south"), ("east", "west"), ("always", "never"), ("heavy", "light"),
    ("strong", "weak"), ("clean", "dirty"), ("thick", "thin"), ("loud", "quiet"), ("near", "far"),
    ("first", "last"), ("top", "bottom"), ("wide", "narrow"), ("friend", "enemy"), ("question", "answer"),
    ("remember", "forget"), ("laugh", "cry"), ("begin", "end"), ("float", "sink"), ("safe", "dangerous"),
    ("cheap", "expensive"), ("asleep", "awake"), ("alive", "dead"), ("male", "female"), ("entrance", "exit"),
    ("increase", "decrease"), ("maximum", "minimum"), ("success", "failure"), ("victory", "defeat"),
    ("sunrise", "sunset"), ("visible", "invisible"), ("possible", "impossible"), ("polite", "rude"),
    ("ancient", "modern"), ("guilty", "innocent"), ("pass", "fail"), ("floor", "ceiling"),
    ("arrival", "departure"), ("import", "export"), ("major", "minor"), ("private", "public"),
    ("shallow", "deep"), ("smooth", "rough"), ("tight", "loose"), ("vertical", "horizontal"),
    ("plus", "minus"), ("sister", "brother"), ("uncle", "aunt"), ("nephew", "niece"), ("winter", "summer"),
    ("odd", "even"), ("lend", "borrow"), ("ascend", "descend"), ("inhale", "exhale"), ("include", "exclude"),
    ("interior", "exterior"), ("optimist", "pessimist"), ("huge", "tiny"), ("rise", "fall"),
    ("hello", "goodbye"), ("sit", "stand"), ("beautiful", "ugly"), ("careful", "careless"),
    ("plural", "singular"), ("employer", "employee"), ("appear", "disappear"), ("agree", "disagree"),
    ("honest", "dishonest"), ("legal", "illegal"), ("whisper", "shout"), ("war", "peace"), ("come", "go"),
    ("wild", "tame"), ("forward", "backward"), ("multiply", "divide"), ("on", "off"), ("good", "bad"),
    ("mother", "father"), ("son", "daughter"), ("add", "subtract"), ("front", "back"),
    ("upstairs", "downstairs"), ("input", "output"), ("send", "receive"), ("dawn", "dusk"),
    ("most", "least"), ("inner", "outer"), ("permanent", "temporary"), ("winner", "loser"),
]

# (country as written in a sentence, capital). Well-known countries with one undisputed capital
# whose usual English name has no diacritics.
CAPITALS: list[tuple[str, str]] = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("China", "Beijing"),
    ("Russia", "Moscow"), ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"), ("Chile", "Santiago"), ("Venezuela", "Caracas"), ("Cuba", "Havana"),
    ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Turkey", "Ankara"), ("Poland", "Warsaw"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("the Czech Republic", "Prague"), ("Sweden", "Stockholm"),
    ("Norway", "Oslo"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Ireland", "Dublin"),
    ("the United Kingdom", "London"), ("Belgium", "Brussels"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("South Korea", "Seoul"), ("North Korea", "Pyongyang"), ("the Philippines", "Manila"),
    ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"), ("Afghanistan", "Kabul"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Syria", "Damascus"),
    ("Jordan", "Amman"), ("Lebanon", "Beirut"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"),
    ("Ethiopia", "Addis Ababa"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Algeria", "Algiers"),
    ("Tunisia", "Tunis"), ("Libya", "Tripoli"), ("Uganda", "Kampala"), ("Senegal", "Dakar"),
    ("Zimbabwe", "Harare"), ("New Zealand", "Wellington"), ("Jamaica", "Kingston"), ("Qatar", "Doha"),
    ("the United Arab Emirates", "Abu Dhabi"), ("Cambodia", "Phnom Penh"), ("Ecuador", "Quito"),
    ("Uruguay", "Montevideo"), ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"),
    ("Slovakia", "Bratislava"), ("Belarus", "Minsk"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"),
    ("Malta", "Valletta"), ("Cyprus", "Nicosia"), ("Panama", "Panama City"), ("Kuwait", "Kuwait City"),
    ("Oman", "Muscat"), ("Rwanda", "Kigali"), ("Zambia", "Lusaka"), ("Angola", "Luanda"),
    ("Albania", "Tirana"), ("Somalia", "Mogadishu"), ("Mozambique", "Maputo"),
]

# (singular noun, plural). Mostly regular nouns and the common irregular ones.
PLURALS: list[tuple[str, str]] = [
    ("book", "books"), ("cat", "cats"), ("dog", "dogs"), ("car", "cars"), ("tree", "trees"),
    ("apple", "apples"), ("chair", "chairs"), ("table", "tables"), ("house", "houses"), ("bird", "birds"),
    ("pencil", "pencils"), ("cup", "cups"), ("door", "doors"), ("shoe", "shoes"), ("hat", "hats"),
    ("lamp", "lamps"), ("egg", "eggs"), ("road", "roads"), ("toy", "toys"), ("monkey", "monkeys"),
    ("donkey", "donkeys"), ("valley", "valleys"), ("box", "boxes"), ("bus", "buses"), ("dish", "dishes"),
    ("church", "churches"), ("watch", "watches"), ("glass", "glasses"), ("fox", "foxes"), ("brush", "brushes"),
    ("dress", "dresses"), ("peach", "peaches"), ("bench", "benches"), ("lunch", "lunches"), ("wish", "wishes"),
    ("bush", "bushes"), ("class", "classes"), ("city", "cities"), ("baby", "babies"), ("party", "parties"),
    ("story", "stories"), ("cherry", "cherries"), ("lady", "ladies"), ("country", "countries"),
    ("family", "families"), ("puppy", "puppies"), ("strawberry", "strawberries"), ("body", "bodies"),
    ("diary", "diaries"), ("pony", "ponies"), ("knife", "knives"), ("leaf", "leaves"), ("wolf", "wolves"),
    ("wife", "wives"), ("loaf", "loaves"), ("shelf", "shelves"), ("half", "halves"), ("thief", "thieves"),
    ("life", "lives"), ("calf", "calves"), ("mouse", "mice"), ("child", "children"), ("man", "men"),
    ("woman", "women"), ("tooth", "teeth"), ("foot", "feet"), ("goose", "geese"), ("person", "people"),
    ("ox", "oxen"), ("potato", "potatoes"), ("tomato", "tomatoes"), ("piano", "pianos"), ("photo", "photos"),
    ("radio", "radios"), ("zoo", "zoos"), ("kangaroo", "kangaroos"), ("video", "videos"), ("sheep", "sheep"),
    ("deer", "deer"), ("crisis", "crises"),
]

POSITIVE_REVIEWS: list[str] = [
    "The pasta was delicious and the staff were very friendly.",
    "I loved this movie from start to finish.",
    "The hotel room was spotless and the bed was comfortable.",
    "This blender works perfectly and is easy to clean.",
    "What a wonderful book, I could not put it down.",
    "The delivery arrived early and everything was in great shape.",
    "Our tour guide was funny, patient, and full of great stories.",
    "These headphones sound amazing and fit my ears well.",
    "The new park is beautiful and my kids adore it.",
    "Customer support solved my problem in five minutes.",
    "The concert was fantastic and the crowd was full of energy.",
    "This jacket keeps me warm and looks great.",
    "This bakery sells the best bread in town.",
    "My haircut turned out exactly how I wanted.",
    "The app is fast, simple, and a joy to use.",
    "We had a lovely time at the beach resort.",
    "The teacher explained everything clearly and kindly.",
    "This coffee is rich and smooth, and I will buy it again.",
    "The museum exhibits were fascinating and well organized.",
    "The train was on time and the seats were roomy.",
    "I am thrilled with my new running shoes.",
    "The garden center staff gave me excellent advice.",
    "The soup was hot, fresh, and full of flavor.",
    "This game is so much fun to play with friends.",
    "The mechanic was honest and fixed my car quickly.",
    "The view from our balcony was breathtaking.",
    "The cleaners did a brilliant job on our carpets.",
    "This phone case is sturdy and feels great in my hand.",
    "The show made me laugh all evening.",
    "The dentist was gentle and the visit was painless.",
    "The pizza had a crispy crust and tasty toppings.",
    "Our flight was smooth and the crew was cheerful.",
    "This backpack is light, roomy, and very well made.",
    "The yoga class left me feeling calm and refreshed.",
    "I adore the colors in this painting.",
    "The gym is clean and the trainers are helpful.",
    "That ice cream shop has amazing flavors and kind staff.",
    "This vacuum is powerful and surprisingly quiet.",
    "The wedding venue was gorgeous and the food was superb.",
    "My new desk chair is very comfortable.",
    "Everyone at the library was welcoming and helpful.",
    "The campsite was peaceful and the lake was stunning.",
    "This shampoo leaves my hair soft and shiny.",
    "The bike shop repaired my wheel perfectly and cheaply.",
    "The podcast is smart, warm, and always interesting.",
    "Best birthday dinner I have ever had.",
    "The plumber arrived on time and did excellent work.",
    "These cookies are soft, sweet, and absolutely delicious.",
]

NEGATIVE_REVIEWS: list[str] = [
    "The food was cold and the waiter was rude.",
    "This movie was boring and far too long.",
    "My hotel room smelled bad and the shower was broken.",
    "The toaster stopped working after two days.",
    "The book was dull and I gave up halfway.",
    "My package arrived late and the box was crushed.",
    "The tour was rushed and the guide seemed annoyed.",
    "These earbuds crackle and keep falling out.",
    "The playground is dirty and the swings are broken.",
    "Customer service kept me on hold for an hour and never helped.",
    "The sound at the concert was terrible and the band started late.",
    "This coat is thin and the zipper broke right away.",
    "The bread was stale and hard as a rock.",
    "The barber ruined my hair and ignored what I asked.",
    "The app crashes every time I open it.",
    "Our vacation was a disaster from beginning to end.",
    "The class was confusing and the instructor was unprepared.",
    "This tea tastes bitter and weak.",
    "The exhibition was crowded, noisy, and disappointing.",
    "The bus was an hour late and packed with people.",
    "My new boots hurt my feet and the sole fell off.",
    "The shop assistant was rude and unhelpful.",
    "The salad was soggy and the dressing tasted sour.",
    "This puzzle game is frustrating and full of bugs.",
    "The repair shop overcharged me and the car still rattles.",
    "Our room faced a brick wall and the window would not open.",
    "The cleaning crew left the kitchen messier than before.",
    "The charger got hot and stopped working within a week.",
    "The comedy was not funny at all.",
    "The clinic was dirty and the staff were careless.",
    "The burger was greasy and burnt on one side.",
    "We were delayed twice and the airline staff were unfriendly.",
    "The suitcase handle snapped on the first trip.",
    "The fitness class was overcrowded and the music was painfully loud.",
    "I regret buying this ugly lamp.",
    "The pool was freezing and full of leaves.",
    "The cake was dry and tasted like cardboard.",
    "This printer jams constantly and wastes ink.",
    "The party was dull and the music was awful.",
    "The mattress is lumpy and gives me back pain.",
    "The website is slow and impossible to navigate.",
    "The campground was noisy and the toilets were filthy.",
    "This soap dried out my skin and left a rash.",
    "The driver threw my parcel over the fence and broke it.",
    "The radio show was annoying and full of ads.",
    "Worst meal I have eaten in years.",
    "The electrician never showed up and never called.",
    "The fries were cold, limp, and far too salty.",
]

# Plural noun phrases that fit "List three ___." No two categories are the same subject.
LIST_CATEGORIES: list[str] = [
    "fruits", "vegetables", "farm animals", "colors of the rainbow", "musical instruments",
    "kitchen utensils", "sports played with a ball", "planets in our solar system", "objects in a classroom",
    "types of weather", "parts of the human body", "countries in Europe", "sea creatures", "birds",
    "insects", "flowers", "kinds of trees", "animals people keep as pets", "vehicles with wheels",
    "jobs in a hospital", "school subjects", "shapes", "days of the week", "months of the year",
    "breakfast foods", "hot drinks", "desserts", "pieces of clothing", "pieces of furniture",
    "tools in a toolbox", "board games", "hobbies", "rooms in a house", "things that fly",
    "buildings in a city", "continents", "oceans", "languages spoken in Asia", "dog breeds",
    "kinds of bread", "types of pasta", "herbs used in cooking", "nuts", "green things",
    "round objects", "yellow foods", "things that run on batteries", "materials that can be recycled",
    "camping supplies", "office supplies", "art supplies", "gardening tools", "reptiles", "mammals",
    "big cats", "things you see in the night sky", "emotions", "parts of a tree", "parts of a car",
    "parts of a bicycle", "things made of wood", "metals", "gemstones", "types of shoes",
    "pieces of jewelry", "natural disasters", "units of time", "units of length", "kinds of boats",
    "kinds of music", "card games", "outdoor games for children", "winter sports", "water sports",
    "cleaning supplies", "pizza toppings", "soups", "salad ingredients", "items in a first aid kit",
    "crops that farmers grow", "desert animals", "animals with stripes", "grains", "dairy products",
    "famous landmarks", "famous rivers", "things people bring to a picnic", "things that make loud noises",
    "cheeses", "spices", "sauces", "playground equipment", "kinds of fish", "snack foods",
    "kitchen appliances", "characters from fairy tales",
]

# Common concrete words, with the article they take in "what is ___?" (none for mass nouns).
DEFINITION_WORDS: list[str] = [
    "a volcano", "a library", "an umbrella", "a bridge", "an island", "a desert", "a river", "a forest",
    "a glacier", "a hospital", "a bakery", "a pharmacy", "a calendar", "a thermometer", "a telescope",
    "a microscope", "a compass", "a magnet", "a battery", "a candle", "a ladder", "a passport",
    "a dictionary", "a recipe", "a clock", "a mirror", "a wallet", "a pillow", "a blanket",
    "a refrigerator", "an oven", "a kettle", "a hammer", "a screwdriver", "a shovel", "a broom",
    "a bucket", "a rope", "a tent", "a canoe", "a helicopter", "a submarine", "a rocket", "a satellite",
    "a comet", "a cloud", "a thunderstorm", "a tornado", "an earthquake", "a lake", "a cave", "a farm",
    "an orchard", "a barn", "a castle", "a lighthouse", "a tunnel", "a highway", "a stadium",
    "a restaurant", "a doctor", "a farmer", "a pilot", "a chef", "a firefighter", "a nurse", "a dentist",
    "a carpenter", "an astronaut", "an orchestra", "a violin", "a drum", "a newspaper", "an alphabet",
    "a vowel", "a pyramid", "a fossil", "a dinosaur", "a spider", "a caterpillar", "a nest", "a seed",
    "a mushroom", "honey", "rain", "fog", "a shadow", "a neighbor", "a holiday", "a wedding", "a parade",
    "a festival", "a market", "a bank", "a coin", "a ticket", "an envelope", "a kite", "a puzzle",
    "a globe", "a needle", "an elevator", "a harbor", "a waterfall", "a skyscraper", "a fence",
]

# (subject, instruction): short everyday requests answerable in two or three sentences. The
# subject is what the instruction is about; no two instructions share one.
OPEN_INSTRUCTIONS: list[tuple[str, str]] = [
    ("sleep", "Give one tip for sleeping better."),
    ("sunglasses", "Why do people wear sunglasses?"),
    ("birthday card", "Write a short greeting for a birthday card."),
    ("busy breakfast", "What is a good breakfast for a busy morning?"),
    ("drinking water", "Why is it important to drink enough water?"),
    ("thank-you note", "Write a short thank-you note to a neighbor who watered your plants."),
    ("rainy day", "Suggest a fun activity for a rainy day."),
    ("test studying", "Give one tip for studying for a test."),
    ("walking", "Why is walking good for your health?"),
    ("house plant", "Give one tip for keeping a house plant healthy."),
    ("saving money", "Give one simple way to save money."),
    ("new school friends", "How can a new student make friends at school?"),
    ("relaxing", "Suggest one way to relax after a long day."),
    ("brushing teeth", "Why should you brush your teeth twice a day?"),
    ("recycling", "Why is recycling helpful?"),
    ("children reading", "Why is reading books good for children?"),
    ("morning routine", "Describe a simple morning routine in two sentences."),
    ("happy dog", "What does a dog need to be happy?"),
    ("cooking rice", "Give one tip for cooking rice."),
    ("late apology", "Write a short apology for being late to a meeting."),
    ("picnic invitation", "Write a one-line invitation to a picnic in the park."),
    ("cold day clothes", "What should you wear on a cold winter day?"),
    ("car trip", "Give one tip for a long car trip."),
    ("hand washing", "Why is washing your hands important?"),
    ("screen breaks", "Why is it good to take breaks from screens?"),
    ("beginner vegetable", "What is a good vegetable for a beginner to grow?"),
    ("exam encouragement", "Write a short message to encourage a friend before an exam."),
    ("new job", "Write a short congratulations message for someone starting a new job."),
    ("new coworker", "Write a friendly welcome message for a new coworker."),
    ("punctuality", "Give one tip for getting to work on time."),
    ("knife safety", "Give one safety tip for using a kitchen knife."),
    ("bike helmet", "Why should you wear a helmet when riding a bike?"),
    ("afternoon snack", "Suggest a healthy snack for the afternoon."),
    ("school lunch", "What is a good lunch to pack for school?"),
    ("weeknight dinner", "Suggest an easy dinner for a weeknight."),
    ("game night", "Give one idea for a fun family game night."),
    ("house guest", "How can you make a guest feel welcome in your home?"),
    ("moving house", "Give one tip for moving to a new house."),
    ("job interview", "Give one tip for a job interview."),
    ("public speaking", "How can someone feel less nervous before giving a speech?"),
    ("new language", "Give one tip for learning a new language."),
    ("guitar practice", "How can a beginner practice playing the guitar?"),
    ("lost keys", "What should you do if you lose your keys?"),
    ("tidy bedroom", "Give one tip for keeping your bedroom tidy."),
    ("sorting laundry", "Why should you sort laundry before washing it?"),
    ("camping trip", "What should you bring on a camping trip?"),
    ("hiking safety", "Give one safety tip for hiking."),
    ("learning to swim", "Why should children learn to swim?"),
    ("spring", "Why do many people enjoy spring?"),
    ("snowy day", "Describe a snowy day in two sentences."),
    ("ocean poem", "Write a two-line poem about the ocean."),
    ("moon poem", "Write a two-line poem about the moon."),
    ("lost cat story", "Write the first sentence of a story about a lost cat."),
    ("lemonade slogan", "Write a short slogan for a lemonade stand."),
    ("goldfish name", "Suggest a name for a pet goldfish."),
    ("vegetable joke", "Tell a short, friendly joke about vegetables."),
    ("dinner compliment", "Give a kind compliment to someone who cooked dinner for you."),
    ("farewell message", "Write a short goodbye message for a coworker who is leaving."),
    ("get well", "Write a short get-well message for a sick friend."),
    ("blue sky", "Why is the sky blue?"),
    ("autumn leaves", "Why do leaves change color in autumn?"),
    ("maps", "Why are maps useful?"),
    ("bird migration", "Why do some birds fly south for the winter?"),
    ("traffic lights", "Why are traffic lights important?"),
    ("eating vegetables", "Why should people eat vegetables?"),
    ("boredom", "Suggest something to do when you feel bored."),
    ("sunday afternoon", "Suggest a relaxing way to spend a Sunday afternoon."),
    ("book lover gift", "Suggest a simple gift for a friend who loves books."),
    ("saving electricity", "Give one way to save electricity at home."),
    ("saving water", "Give one way to use less water at home."),
    ("food waste", "How can a family waste less food?"),
    ("first flight", "Give one tip for a first trip on an airplane."),
    ("packing suitcase", "Give one tip for packing a suitcase."),
    ("working from home", "How can you stay focused while working from home?"),
    ("meeting email", "Write a one-sentence email asking a coworker to meet on Friday."),
    ("roommate reminder", "Write a short note reminding your roommate to buy milk."),
    ("city park", "Describe a city park in two sentences."),
    ("fresh bread smell", "Describe the smell of fresh bread."),
    ("summer", "What do people like about summer?"),
    ("cup of tea", "How do you make a cup of tea?"),
    ("phone battery", "Give one tip for making a phone battery last longer."),
    ("strong password", "Give one tip for choosing a strong password."),
    ("seat belts", "Why should people wear seat belts in cars?"),
    ("smoke alarm", "What should you do if a smoke alarm goes off?"),
    ("shopping list", "Why is it helpful to make a shopping list?"),
    ("wedding wish", "Write a short wish for a couple on their wedding day."),
    ("new year greeting", "Write a short New Year greeting for a friend."),
    ("baking cookies", "Give one tip for baking cookies."),
    ("morning coffee", "Why do many people drink coffee in the morning?"),
    ("good friend", "What makes someone a good friend?"),
    ("teamwork", "Why is teamwork important?"),
    ("kindness to strangers", "Give one simple way to be kind to a stranger."),
    ("volunteering", "Why do people volunteer in their community?"),
    ("museum visit", "Why can visiting a museum be interesting?"),
    ("zoo trip", "What can children learn from a trip to the zoo?"),
    ("city trees", "Why are trees important in cities?"),
    ("bees", "Why are bees important?"),
    ("winter sweater", "Write one sentence describing a cozy winter sweater."),
    ("new driver", "Give one tip for a new driver."),
    ("hot day", "How can you stay cool on a very hot day?"),
]

# ----------------------------------------------------------------------------------------------
# Templates. A template with a one-word slot is at most 9 tokens long, so that two instructions
# from it that differ only in the slot stay below ROUGE-L 0.9.
# ----------------------------------------------------------------------------------------------

ANTONYM_TEMPLATES = [
    'What is the opposite of "{w}"?',
    'Give the antonym of "{w}". Answer with one word.',
    'Which word means the opposite of "{w}"?',
    'Opposite of "{w}", in one word?',
    'What is the antonym of "{w}"? Use one word.',
    'Name the opposite of the word "{w}".',
]

CAPITAL_TEMPLATES = [
    "What is the capital of {c}?",
    "Which city is the capital of {c}?",
    "Name the capital city of {c}.",
    "What city is {c}'s capital?",
    "Tell me the capital of {c}.",
    "The capital of {c} is which city?",
]

PLURAL_TEMPLATES = [
    'What is the plural of "{w}"? One word only.',
    'Give the plural form of "{w}".',
    'Write the plural of the noun "{w}".',
    "One {w}, two what? Answer with the plural.",
    'Plural of "{w}"? Reply with one word.',
    'What is the plural form of the word "{w}"?',
]

SENTIMENT_TEMPLATES = [
    'Is the sentiment of this review positive or negative? "{r}" Answer with one word.',
    'Review: "{r}" Is this review positive or negative?',
    'Classify the sentiment as positive or negative: "{r}"',
    'Does this sound positive or negative? "{r}"',
    '"{r}" Is this positive or negative? Answer with one word.',
]

LIST_TEMPLATES = [
    "List three {c}.",
    "Name three {c}.",
    "Give three examples of {c}.",
    "Write a list of three {c}.",
    "Can you name three {c}?",
    "What are three {c}? List them.",
]

DEFINITION_TEMPLATES = [
    "In one sentence, what is {aw}?",
    'Define the word "{w}" in one sentence.',
    "Explain what {aw} is in one sentence.",
    'What does "{w}" mean? Answer in one sentence.',
    "Describe {aw} in one short sentence.",
    'Give a one-sentence definition of "{w}".',
]

# ----------------------------------------------------------------------------------------------
# Text measures
# ----------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lowercased alphanumeric tokens (text split on non-alphanumerics)."""
    return _TOKEN_RE.findall(text.lower())


def ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def lcs_len(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 (LCS-based F-measure, beta = 1) of two token lists."""
    if not a or not b:
        return 0.0
    lcs = lcs_len(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r)


def cap_first(s: str) -> str:
    return s[0].upper() + s[1:]


# ----------------------------------------------------------------------------------------------
# Building the rows
# ----------------------------------------------------------------------------------------------

Item = dict[str, Any]  # keys: family, keys (set of strings that must not cross files), gold, slots / text


def family_items() -> dict[str, list[Item]]:
    """All items of every family, in source order."""
    items: dict[str, list[Item]] = {f: [] for f in FAMILIES}
    for w, a in ANTONYMS:
        items["antonym"].append({"keys": {w, a}, "gold": a, "slots": {"w": w}})
    for c, cap in CAPITALS:
        items["capital"].append({"keys": {c.lower(), cap.lower()}, "gold": cap, "slots": {"c": c}})
    for w, p in PLURALS:
        items["plural"].append({"keys": {w}, "gold": p, "slots": {"w": w}})
    for r in POSITIVE_REVIEWS:
        items["sentiment"].append({"keys": {r.lower()}, "gold": "positive", "slots": {"r": r}})
    for r in NEGATIVE_REVIEWS:
        items["sentiment"].append({"keys": {r.lower()}, "gold": "negative", "slots": {"r": r}})
    for c in LIST_CATEGORIES:
        items["list"].append({"keys": {c}, "gold": None, "slots": {"c": c}})
    for aw in DEFINITION_WORDS:
        w = aw.split(" ", 1)[1] if aw.split(" ", 1)[0] in ("a", "an") else aw
        items["definition"].append({"keys": {w}, "gold": None, "slots": {"aw": aw, "w": w}})
    for subject, text in OPEN_INSTRUCTIONS:
        items["open"].append({"keys": {subject}, "gold": None, "text": text})
    return items


TEMPLATES = {
    "antonym": ANTONYM_TEMPLATES,
    "capital": CAPITAL_TEMPLATES,
    "plural": PLURAL_TEMPLATES,
    "sentiment": SENTIMENT_TEMPLATES,
    "list": LIST_TEMPLATES,
    "definition": DEFINITION_TEMPLATES,
}


def split_family(rng: random.Random, family: str, items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Shuffle and cut into (pool, heldout), HELDOUT_SHARE of the items held out. Sentiment is cut
    per label so both files stay balanced."""
    groups: list[list[Item]]
    if family == "sentiment":
        groups = [[x for x in items if x["gold"] == g] for g in ("positive", "negative")]
    else:
        groups = [list(items)]
    pool: list[Item] = []
    held: list[Item] = []
    for g in groups:
        rng.shuffle(g)
        k = round(len(g) * HELDOUT_SHARE)
        held += g[:k]
        pool += g[k:]
    return pool, held


def render(rng: random.Random, family: str, items: list[Item]) -> list[dict[str, Any]]:
    """Instructions for one family in one file; templates are dealt round-robin in a shuffled order
    so every template appears in both files in about equal numbers."""
    rows = []
    if family == "open":
        for x in items:
            rows.append({"instruction": x["text"], "family": family, "gold": x["gold"], "keys": x["keys"]})
        return rows
    templates = TEMPLATES[family]
    order = list(range(len(templates)))
    rng.shuffle(order)
    for i, x in enumerate(items):
        text = cap_first(templates[order[i % len(order)]].format(**x["slots"]))
        rows.append({"instruction": text, "family": family, "gold": x["gold"], "keys": x["keys"]})
    return rows


def build() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pool_rows, held_rows, _ = build_with_items()
    return pool_rows, held_rows


def build_with_items() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[Item]]]:
    """(pool rows, held-out rows, the held-out items of each family)."""
    rng = random.Random(SEED)
    items = family_items()
    pool_rows: list[dict[str, Any]] = []
    held_rows: list[dict[str, Any]] = []
    held_by_family: dict[str, list[Item]] = {}
    for family in FAMILIES:
        pool_items, held_items = split_family(rng, family, items[family])
        held_by_family[family] = held_items
        pool_rows += render(rng, family, pool_items)
        held_rows += render(rng, family, held_items)
    rng.shuffle(pool_rows)
    rng.shuffle(held_rows)
    for i, r in enumerate(pool_rows, 1):
        r["id"] = f"pool-{i:04d}"
    for i, r in enumerate(held_rows, 1):
        r["id"] = f"heldout-{i:03d}"
    return pool_rows, held_rows, held_by_family


# ----------------------------------------------------------------------------------------------
# Held-out sets that can show generalisation (for `synthkd efficacy`), written beside heldout.jsonl
# with random streams of their own, so pool.jsonl and heldout.jsonl stay byte for byte as they were.
#  - heldout_phrasings.jsonl: the held-out items of the gold families, asked in phrasings the pool
#    never uses (a student that learned the pool's sentence shapes, not the facts, fails here).
#  - heldout_families.jsonl: short-answer families the pool does not have at all, of the same kind
#    (one word from a small model's everyday knowledge), each with gold.
# ----------------------------------------------------------------------------------------------

PHRASING_TEMPLATES = {
    "antonym": [
        'Tell me a word that means the reverse of "{w}".',
        'If something is not "{w}", it is what? Give the opposite word.',
        'I need the word opposite in meaning to "{w}". What is it?',
        'Reverse the meaning of "{w}" with a single word.',
    ],
    "capital": [
        "Where is the seat of government of {c}? Name the city.",
        "I am travelling to the capital of {c}. Which city am I going to?",
        "{c} has its capital in which city?",
        "Name the city where the government of {c} sits.",
    ],
    "plural": [
        'I have more than one "{w}". How do I write that word?',
        'Turn "{w}" into its plural.',
        'How do you say "{w}" when there are many of them?',
        'Make the word "{w}" plural.',
    ],
    "sentiment": [
        'A customer wrote: "{r}" Was the customer happy (positive) or unhappy (negative)?',
        'Read this: "{r}" Answer positive or negative.',
        'Would you call this comment positive or negative? "{r}"',
        'Label the feeling of this text as positive or negative: "{r}"',
    ],
}

PAST_TENSE = [
    ("go", "went"), ("eat", "ate"), ("see", "saw"), ("run", "ran"), ("write", "wrote"), ("take", "took"),
    ("give", "gave"), ("come", "came"), ("drink", "drank"), ("swim", "swam"), ("sing", "sang"), ("buy", "bought"),
    ("think", "thought"), ("teach", "taught"), ("catch", "caught"), ("fly", "flew"), ("drive", "drove"),
    ("speak", "spoke"), ("break", "broke"), ("choose", "chose"), ("forget", "forgot"), ("sleep", "slept"),
    ("feel", "felt"), ("keep", "kept"), ("find", "found"), ("tell", "told"), ("sell", "sold"), ("stand", "stood"),
]
COMPARATIVES = [
    ("big", "bigger"), ("small", "smaller"), ("fast", "faster"), ("slow", "slower"), ("tall", "taller"),
    ("old", "older"), ("young", "younger"), ("hot", "hotter"), ("cold", "colder"), ("good", "better"),
    ("bad", "worse"), ("happy", "happier"), ("easy", "easier"), ("heavy", "heavier"), ("strong", "stronger"),
    ("long", "longer"), ("warm", "warmer"), ("cheap", "cheaper"), ("loud", "louder"), ("dark", "darker"),
    ("thin", "thinner"), ("wide", "wider"), ("deep", "deeper"), ("soft", "softer"), ("high", "higher"),
]
COLOURS = [
    ("a ripe banana", "yellow"), ("fresh grass", "green"), ("fresh snow", "white"), ("coal", "black"),
    ("a clear sky at noon", "blue"), ("a ripe tomato", "red"), ("a lemon", "yellow"), ("a fire truck", "red"),
    ("milk chocolate", "brown"), ("a crow", "black"), ("a ripe strawberry", "red"), ("a polar bear", "white"),
    ("a lime", "green"), ("a pumpkin", "orange"), ("a flamingo", "pink"), ("an eggplant", "purple"),
    ("a carrot", "orange"), ("a cucumber", "green"), ("a school bus in the United States", "yellow"),
    ("cow's milk", "white"), ("a frog", "green"), ("a ripe cherry", "red"),
]
NEW_FAMILY_TEMPLATES = {
    "past_tense": [
        'What is the past tense of "{w}"? Answer with one word.',
        'Give the simple past form of the verb "{w}".',
        'What is the past form of the verb "{w}"?',
    ],
    "comparative": [
        'What is the comparative form of "{w}"? One word.',
        'Give the comparative of the adjective "{w}".',
        'What is the comparative of "{w}"? Answer with one word.',
    ],
    "colour": [
        "What colour is {x}? Answer with one word.",
        "Name the usual colour of {x}.",
        "In one word, what colour is {x}?",
    ],
    "country": [
        "{cap} is the capital of which country?",
        "Which country has {cap} as its capital?",
        "Name the country whose capital is {cap}.",
    ],
}
NEW_FAMILIES = list(NEW_FAMILY_TEMPLATES)
# CAPITALS is listed best known first; a small teacher knows the first ones' countries, not Nicosia's.
WELL_KNOWN_CAPITALS = 25


def _dealt(rng: random.Random, templates: list[str], slots: list[dict[str, str]]) -> list[str]:
    """Each item's instruction, templates dealt round-robin in a shuffled order."""
    order = list(range(len(templates)))
    rng.shuffle(order)
    return [cap_first(templates[order[i % len(order)]].format(**x)) for i, x in enumerate(slots)]


def build_phrasings(held_by_family: dict[str, list[Item]]) -> list[dict[str, Any]]:
    """The held-out items of the gold families, asked in the phrasings of PHRASING_TEMPLATES."""
    rng = random.Random(SEED + 1)
    rows: list[dict[str, Any]] = []
    for family, templates in PHRASING_TEMPLATES.items():
        items = held_by_family[family]
        for x, text in zip(items, _dealt(rng, templates, [x["slots"] for x in items])):
            rows.append({"instruction": text, "family": family, "gold": x["gold"], "keys": x["keys"]})
    rng.shuffle(rows)
    for i, r in enumerate(rows, 1):
        r["id"] = f"phrasing-{i:03d}"
    return rows


def build_new_families() -> list[dict[str, Any]]:
    """Every item of the families the pool does not have."""
    rng = random.Random(SEED + 2)
    sources = {
        "past_tense": [({"w": w}, past) for w, past in PAST_TENSE],
        "comparative": [({"w": w}, more) for w, more in COMPARATIVES],
        "colour": [({"x": x}, colour) for x, colour in COLOURS],
        "country": [({"cap": cap}, country) for country, cap in CAPITALS[:WELL_KNOWN_CAPITALS]],
    }
    rows: list[dict[str, Any]] = []
    for family, pairs in sources.items():
        texts = _dealt(rng, NEW_FAMILY_TEMPLATES[family], [slots for slots, _ in pairs])
        rows += [{"instruction": t, "family": family, "gold": gold, "keys": set()} for t, (_, gold) in zip(texts, pairs)]
    rng.shuffle(rows)
    for i, r in enumerate(rows, 1):
        r["id"] = f"family-{i:03d}"
    return rows


def check_generalisation(pool: list[dict[str, Any]], phrasings: list[dict[str, Any]], families: list[dict[str, Any]]) -> None:
    """The two extra held-out sets: gold everywhere, no instruction of the pool's, no shared 13-gram with it, a
    phrasing set whose templates the pool never uses, and families the pool does not have."""
    pool_texts = {" ".join(r["instruction"].lower().split()) for r in pool}
    pool_grams: set[tuple[str, ...]] = set()
    for r in pool:
        pool_grams |= ngrams(tokens(r["instruction"]), NGRAM)
    for r in phrasings + families:
        assert isinstance(r["gold"], str) and r["gold"].strip() and r["instruction"].isascii(), r
        assert " ".join(r["instruction"].lower().split()) not in pool_texts, r
        assert not ngrams(tokens(r["instruction"]), NGRAM) & pool_grams, r
    used = {t for f in PHRASING_TEMPLATES for t in TEMPLATES[f]}
    assert not used & {t for ts in PHRASING_TEMPLATES.values() for t in ts}, "a phrasing template is the pool's"
    assert {r["family"] for r in phrasings} <= GOLD_FAMILIES
    assert not {r["family"] for r in families} & set(FAMILIES), "a new family is one the pool has"


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def check_items() -> None:
    """Source lists: no duplicates, and no antonym word used in two pairs."""
    words = [w for pair in ANTONYMS for w in pair]
    dup = [w for w, n in Counter(words).items() if n > 1]
    assert not dup, f"antonym words used twice: {dup}"
    for name, keys in [
        ("capital countries", [c.lower() for c, _ in CAPITALS]),
        ("capital cities", [cap.lower() for _, cap in CAPITALS]),
        ("plural nouns", [w for w, _ in PLURALS]),
        ("reviews", [r.lower() for r in POSITIVE_REVIEWS + NEGATIVE_REVIEWS]),
        ("list categories", LIST_CATEGORIES),
        ("definition words", DEFINITION_WORDS),
        ("open subjects", [s for s, _ in OPEN_INSTRUCTIONS]),
        ("open instructions", [t for _, t in OPEN_INSTRUCTIONS]),
    ]:
        dup = [k for k, n in Counter(keys).items() if n > 1]
        assert not dup, f"duplicate {name}: {dup}"
    for aw in DEFINITION_WORDS:
        first = aw.split(" ", 1)[0]
        if first in ("a", "an"):
            w = aw.split(" ", 1)[1]
            assert (first == "an") == (w[0] in "aeiou"), f"article: {aw}"


def check(pool: list[dict[str, Any]], held: list[dict[str, Any]]) -> float:
    """Assert every hard constraint; return the largest same-family cross-file ROUGE-L F1."""
    check_items()
    assert len(pool) >= MIN_POOL, f"pool has {len(pool)} rows < {MIN_POOL}"
    assert len(held) >= MIN_HELDOUT, f"heldout has {len(held)} rows < {MIN_HELDOUT}"
    assert len(held) <= 999 and len(pool) <= 9999, "ids would overflow their width"
    held_counts = Counter(r["family"] for r in held)
    for f in GOLD_FAMILIES:
        assert held_counts[f] >= MIN_HELDOUT_PER_GOLD_FAMILY, f"heldout has {held_counts[f]} {f} rows"

    everything = pool + held
    norm = Counter(" ".join(r["instruction"].lower().split()) for r in everything)
    dup = [t for t, n in norm.items() if n > 1]
    assert not dup, f"instruction appears twice: {dup}"
    for r in everything:
        assert r["family"] in FAMILIES, r
        assert r["instruction"].isascii(), r["instruction"]
        n_words = len(r["instruction"].split())
        assert n_words < MAX_WORDS, f"{n_words} words: {r['instruction']}"
        if r["family"] in GOLD_FAMILIES:
            assert isinstance(r["gold"], str) and r["gold"].strip(), r
        else:
            assert r["gold"] is None, r
        if r["family"] == "sentiment":
            assert r["gold"] in ("positive", "negative"), r

    # 1. Key items never in both files (within a family).
    for f in FAMILIES:
        pk = set().union(*(r["keys"] for r in pool if r["family"] == f))
        hk = set().union(*(r["keys"] for r in held if r["family"] == f))
        both = pk & hk
        assert not both, f"{f}: key items in both files: {sorted(both)}"

    # 2a. No shared 13-gram between any pool and any held-out instruction.
    pool_grams: set[tuple[str, ...]] = set()
    for r in pool:
        pool_grams |= ngrams(tokens(r["instruction"]), NGRAM)
    for r in held:
        shared = ngrams(tokens(r["instruction"]), NGRAM) & pool_grams
        assert not shared, f"{NGRAM}-gram shared with the pool: {r['instruction']!r}: {shared}"

    # 2b. Same-family cross-file ROUGE-L F1 at most 0.9.
    max_r = 0.0
    for f in FAMILIES:
        pt = [(r["instruction"], tokens(r["instruction"])) for r in pool if r["family"] == f]
        ht = [(r["instruction"], tokens(r["instruction"])) for r in held if r["family"] == f]
        for hs, h in ht:
            for ps, p in pt:
                s = rouge_l(h, p)
                assert s <= MAX_ROUGE_L + 1e-12, f"ROUGE-L {s:.3f} > {MAX_ROUGE_L}: {hs!r} vs {ps!r}"
                max_r = max(max_r, s)
    return max_r


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for r in rows:
            obj = {"id": r["id"], "instruction": r["instruction"], "family": r["family"], "gold": r["gold"]}
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")


def main() -> None:
    pool, held, held_by_family = build_with_items()
    max_r = check(pool, held)
    phrasings, families = build_phrasings(held_by_family), build_new_families()
    check_generalisation(pool, phrasings, families)
    write(HERE / "pool.jsonl", pool)
    write(HERE / "heldout.jsonl", held)
    write(HERE / "heldout_phrasings.jsonl", phrasings)
    write(HERE / "heldout_families.jsonl", families)
    print(f"heldout_phrasings: {len(phrasings)} rows; heldout_families: {len(families)} rows "
          f"({', '.join(f'{f} {n}' for f, n in Counter(r['family'] for r in families).items())})")
    pc = Counter(r["family"] for r in pool)
    hc = Counter(r["family"] for r in held)
    print(f"{'family':<12}{'pool':>6}{'heldout':>9}")
    for f in FAMILIES:
        print(f"{f:<12}{pc[f]:>6}{hc[f]:>9}")
    print(f"{'total':<12}{len(pool):>6}{len(held):>9}")
    print(f"max same-family cross-file ROUGE-L F1: {max_r:.3f}")


if __name__ == "__main__":
    main()
