"""The built-in corpus: deterministic, structured, English-like text.

The project must train out of the box with no download, so it writes its own
corpus. A fixed seed builds a small *world* (people, towns, professions, pets)
whose facts never change, then draws paragraphs about it from a handful of
templates. What makes the text learnable but not memorisable:

* agreement: he/she/his/her follow the person's gender through a paragraph,
  "was/were" and singular/plural nouns follow the number, "bakes/bake"
  follow the subject;
* consistent facts: a person always lives in the same town, works the same
  job and owns the same pet, so a name predicts many later words;
* in-context copying and arithmetic: names, towns and items mentioned early in
  a paragraph come back later, totals are the sum or product of the numbers
  given, the weekdays of a diary follow each other, age comparisons agree
  with birth years;
* real randomness: which person, which template, which numbers and the order
  of sentences are drawn fresh for every paragraph.

Everything comes from one ``random.Random`` seeded with a constant, and only
ordered containers are iterated, so every call in every process produces the
same bytes. The text is pure ASCII: one paragraph per line, paragraphs
separated by a blank line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import DataError

SEED = 1_234_567
# Target size of the whole text in bytes; train is about 90% of it.
SIZES: dict[str, int] = {"tiny": 225_000, "demo": 4_500_000}
# Paragraph i goes to valid when i % 20 == 18 and to test when i % 20 == 19:
# interleaving keeps the three splits identically distributed.
_SPLIT_PERIOD, _VALID_SLOT, _TEST_SLOT = 20, 18, 19

_FEMALE = ("Alice Clara Edith Greta Helen Irene Julia Laura Maria Nora Olga Paula Rosa Sara Tessa "
           "Vera Wanda Anna Bella Celia Dora Elsa Fiona Gemma Hanna Ida Lena Mona Nina Ruth Agnes Bertha "
           "Cora Daisy Emma Flora Grace Hilda Iris Joan Kate Lucy Mabel Nell Opal Pearl Rita Stella Tilda Una "
           "Viola Winifred Yvonne Zelda Amelia Beatrice Cecily Dorothy Eleanor Frances Harriet Imogen").split()
_MALE = ("Adam Bruno Carl David Edgar Felix Georg Hugo Ivan Jonas Karl Leon Martin Nils Oscar "
         "Peter Simon Tomas Victor Walter Arthur Basil Conrad Dennis Emil Frank Henry Otto Paul Rudolf Albert "
         "Bernard Cyril Duncan Ernest Gilbert Harold Isaac Jasper Kenneth Lionel Miles Neville Oliver Percy "
         "Quentin Roland Stanley Theodore Ulrich Vernon Wilfred Ambrose Benedict Clement Edmund Gregory").split()
_SURNAMES = ("Abbott Baker Carver Dalton Ellis Fisher Garner Hale Ingram Jarvis Keller Lowell Mercer "
             "Norris Oakley Porter Quinn Rowe Sawyer Thorne Upton Vance Walsh Yates Archer Brook Cole "
             "Drake Finch Grant Hayes Lane Marsh Nash Pike Reed Stone Tate Webb Wood Ashby Barlow Chandler "
             "Dunmore Everett Fairfax Gilmore Holloway Kendall Lockwood Marlowe Newbury Pemberton Radcliffe "
             "Sinclair Thornton Underwood Wakefield Whitmore Yardley Bramwell Corbett Dawson Fletcher Harper "
             "Kingsley Merritt Prescott Rutherford Sheldon Talbot Winslow").split()
_TOWN_HEADS = ("Ash Bel Cal Dun El Fen Glen Hart Kel Lark Mar Nor Oak Pen Ros Stan Thorn Wil Brim Cray "
               "Amber Black Cold Deep Elder Frost Gold High Iron Long Mill North Red Salt Silver West").split()
_TOWN_TAILS = "ford bury mouth wick ton dale holm stead more by gate haven field water wood".split()
_RIVERS = ("Alder Brent Colne Dove Esk Frome Isis Kennet Lune Medway Ouse Tamar Wey Yare Avon Cherwell "
           "Darent Exe Fowey Hamble Itchen Loddon Nene Otter Parrett Rother Severn Teign Ure Wensum").split()
_REGIONS = ("north", "south", "east", "west", "centre")
_LANDMARKS = ("old bridge", "clock tower", "stone church", "lighthouse", "water mill", "market hall",
              "castle", "town library")
_TRADES = ("fishing", "wool", "timber", "copper mining", "glassmaking", "cheese making", "shipbuilding",
           "salt", "pottery", "wine")
_COLORS = ("black", "white", "brown", "grey", "ginger", "spotted", "golden")
_PET_NAMES = ("Biscuit Pepper Shadow Rusty Misty Pip Clover Juniper Sable Tansy Bramble Moss Pebble "
              "Sorrel Tuck Willow Hazel Smudge Acorn Barley Cinder Dusty Ember Fennel Ginger Holly Inky Jasper "
              "Kipper Lupin Maple Nutmeg Oberon Poppy Quill Rascal Saffron Thistle Umber Velvet Wren").split()
_SPECIES = ("dog", "cat", "horse", "goat", "parrot", "rabbit")
_FOODS = ("apple pie", "fish soup", "fresh bread", "goat cheese", "plum cake", "roast potatoes",
          "mushroom stew", "honey biscuits")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_SEASON_OF_MONTH = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer",
                    "autumn", "autumn", "autumn", "winter")
_WEATHER = {
    "winter": ("cold and grey", "cold, with snow on the hills", "freezing at night"),
    "spring": ("mild and wet", "bright, with short showers", "windy but warm"),
    "summer": ("hot and dry", "warm and sunny", "warm, with long evenings"),
    "autumn": ("cool and misty", "wet and windy", "cool, with clear mornings"),
}
_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                 "fourteen fifteen sixteen seventeen eighteen nineteen twenty").split()
# (singular, plural) market goods.
_GOODS = (("apple", "apples"), ("egg", "eggs"), ("loaf", "loaves"), ("candle", "candles"),
          ("fish", "fish"), ("onion", "onions"), ("pear", "pears"), ("jar of honey", "jars of honey"),
          ("sack of flour", "sacks of flour"), ("cabbage", "cabbages"), ("knife", "knives"))
_PLACES = ("garden", "barn", "kitchen", "orchard", "yard", "stable", "cellar")

# Free choices that no context predicts: they keep the text from being memorisable.
_ADJECTIVES = ("skilled", "young", "quiet", "cheerful", "careful", "famous", "patient", "busy", "clever",
               "kind", "proud", "tired", "honest", "shy")
_OFTEN = ("Every morning", "Most days", "Each afternoon", "Twice a week", "Every evening", "On weekdays")
_LIKING = ("more than anything else", "above all", "very much", "on cold days", "at every feast")
_SUPERLATIVES = ("best", "fastest", "most careful", "busiest", "friendliest", "oldest")
_FINE = ("fine", "dry", "warm", "bright", "calm")
_RELATIVES = ("mother", "father", "aunt", "uncle", "grandmother", "grandfather", "sister", "brother")
_SIGHTS = ("best known sight", "oldest building", "pride of the people", "most visited place")
_VISITORS = ("come to see", "often walk to", "take pictures of", "love")
_WHEN = ("On Monday", "On Tuesday", "On Wednesday", "On Thursday", "On Friday", "On Saturday", "On Sunday",
         "Last week", "One morning", "Early one day", "In the spring", "In the autumn")
_WENT = ("went", "walked", "hurried", "cycled", "rode")
_PET_DOING = ("asleep", "hiding", "playing", "eating", "sitting quietly", "lying in the sun")
_WAITED = ("sat down beside it and waited", "laughed and picked it up", "called it home for dinner",
           "stayed there for a while")
_FEELINGS = ("tired", "happy", "hungry", "pleased with the week", "ready for a rest")
_TRAVEL = ("by train", "by coach", "on horseback", "by bicycle", "on foot", "by boat")


@dataclass(frozen=True)
class _Job:
    name: str
    plural: str
    workplace: str
    verb3: str  # third person singular: "she bakes"
    verb: str  # base form: "they bake"
    past: str  # "she baked"
    objects: tuple[str, ...]


_JOBS = (
    _Job("baker", "bakers", "bakery", "bakes", "bake", "baked", ("bread", "cakes", "pies", "rolls")),
    _Job("fisher", "fishers", "harbour", "catches", "catch", "caught", ("cod", "herring", "crabs", "eels")),
    _Job("carpenter", "carpenters", "workshop", "builds", "build", "built", ("tables", "chairs", "doors", "boats")),
    _Job("teacher", "teachers", "school", "teaches", "teach", "taught", ("reading", "history", "music", "sums")),
    _Job("doctor", "doctors", "clinic", "treats", "treat", "treated", ("fevers", "coughs", "burns", "broken arms")),
    _Job("farmer", "farmers", "farm", "grows", "grow", "grew", ("wheat", "barley", "turnips", "beans")),
    _Job("potter", "potters", "studio", "makes", "make", "made", ("bowls", "jugs", "plates", "vases")),
    _Job("smith", "smiths", "forge", "forges", "forge", "forged", ("nails", "horseshoes", "gates", "tools")),
    _Job("weaver", "weavers", "mill", "weaves", "weave", "wove", ("blankets", "shawls", "rugs", "sails")),
    _Job("tailor", "tailors", "shop", "sews", "sew", "sewed", ("coats", "shirts", "dresses", "hats")),
    _Job("miner", "miners", "mine", "digs", "dig", "dug", ("copper", "coal", "tin", "iron ore")),
    _Job("painter", "painters", "studio", "paints", "paint", "painted", ("portraits", "ships", "landscapes", "signs")),
)


@dataclass(frozen=True)
class _Town:
    name: str
    region: str
    river: str
    population: int
    founded: int
    trade: str
    landmark: str


@dataclass(frozen=True)
class _Person:
    first: str
    last: str
    female: bool
    town: _Town
    job: _Job
    born: int
    pet: str
    pet_name: str
    pet_color: str
    food: str

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    # Pronouns, so templates read naturally: p.he, p.He, p.his, p.him.
    he = property(lambda self: "she" if self.female else "he")
    He = property(lambda self: "She" if self.female else "He")
    his = property(lambda self: "her" if self.female else "his")
    His = property(lambda self: "Her" if self.female else "His")
    him = property(lambda self: "her" if self.female else "him")


@dataclass(frozen=True)
class _World:
    towns: tuple[_Town, ...]
    people: tuple[_Person, ...]
    mayors: dict[str, _Person]  # town name -> mayor
    friends: dict[str, _Person]  # full name -> best friend


def _build_world(r: random.Random) -> _World:
    """Draw the fixed facts: 120 towns and 1200 people."""
    names = [h + t for h in _TOWN_HEADS for t in _TOWN_TAILS]
    r.shuffle(names)
    towns = tuple(
        _Town(name, r.choice(_REGIONS), r.choice(_RIVERS), r.randrange(600, 90_000),
              r.randrange(1100, 1890), r.choice(_TRADES), r.choice(_LANDMARKS))
        for name in names[:120]
    )
    full_names = [(f, s, True) for f in _FEMALE for s in _SURNAMES] + [(m, s, False) for m in _MALE for s in _SURNAMES]
    r.shuffle(full_names)
    people = tuple(
        _Person(first, last, female, r.choice(towns), r.choice(_JOBS), r.randrange(1920, 2001),
                r.choice(_SPECIES), r.choice(_PET_NAMES), r.choice(_COLORS), r.choice(_FOODS))
        for first, last, female in full_names[:1200]
    )
    mayors = {t.name: r.choice(people) for t in towns}
    friends = {p.full: r.choice(people) for p in people}
    return _World(towns, people, mayors, friends)


def _count(n: int, sg: str, pl: str, words: bool = True) -> str:
    """'one apple', 'three apples', '14 apples'."""
    num = _NUMBER_WORDS[n] if words and n < len(_NUMBER_WORDS) else str(n)
    return f"{num} {sg if n == 1 else pl}"


def _some_sentences(r: random.Random, pool: list[str]) -> str:
    """Three to six of the pool's sentences in random order: paragraphs share facts, not shape."""
    r.shuffle(pool)
    return " ".join(pool[: r.randrange(3, 7)])


def _bio(r: random.Random, w: _World) -> str:
    p = r.choice(w.people)
    t, j, f = p.town, p.job, w.friends[p.full]
    years_here = r.randrange(1, max(2, 2020 - p.born))
    later = r.randrange(2021, 2041)
    obj = r.choice(j.objects)
    pool = [
        f"{p.He} was born in {p.born} and has lived in {t.name} for {_count(years_here, 'year', 'years', False)}.",
        f"{r.choice(_OFTEN)} {p.he} goes to the {j.workplace} near the {t.landmark}, where {p.he} {j.verb3} {obj}.",
        f"{p.His} {p.pet} is called {p.pet_name}, and it is {p.pet_color}.",
        f"{p.first} likes {p.food} {r.choice(_LIKING)}.",
        f"{p.His} best friend is {f.full}, a {r.choice(_ADJECTIVES)} {f.job.name} from {f.town.name}.",
        f"In {later}, {p.first} will be {later - p.born} years old.",
        f"People in {t.name} say that {p.first} is the {r.choice(_SUPERLATIVES)} {j.name} in the {t.region}.",
        f"When the weather is {r.choice(_FINE)}, {p.he} walks {p.pet_name} along the {t.river} River.",
        f"{p.He} learned to {j.verb} {obj} from {p.his} {r.choice(_RELATIVES)} when {p.he} was {r.randrange(6, 19)}.",
    ]
    body = _some_sentences(r, pool)
    return f"{p.full} is a {r.choice(_ADJECTIVES)} {j.name} from {t.name}. {body}"


def _town(r: random.Random, w: _World) -> str:
    t = r.choice(w.towns)
    mayor = w.mayors[t.name]
    size = "small" if t.population < 5000 else "market" if t.population < 30_000 else "large"
    month = r.randrange(12)
    season = _SEASON_OF_MONTH[month]
    pool = [
        f"It lies on the {t.river} River and has about {t.population} people.",
        f"The town was founded in {t.founded}.",
        f"Most people in {t.name} work in {t.trade}.",
        f"The {t.landmark} is the {r.choice(_SIGHTS)} in {t.name}.",
        f"The mayor of {t.name} is {mayor.full}, who is a {mayor.job.name}.",
        f"In {_MONTHS[month]} the weather in {t.name} is usually {r.choice(_WEATHER[season])}, as it is {season}.",
        f"Visitors {r.choice(_VISITORS)} the {t.landmark} and the banks of the {t.river}.",
    ]
    body = _some_sentences(r, pool)
    return f"{t.name} is a {size} town in the {t.region} of the country. {body}"


def _market(r: random.Random, w: _World) -> str:
    p = r.choice(w.people)
    (a_sg, a_pl), (b_sg, b_pl) = r.sample(_GOODS, 2)
    n, m, price = r.randrange(1, 13), r.randrange(1, 13), r.randrange(2, 10)
    a_the = a_pl if n > 1 else a_sg
    return (
        f"{r.choice(_WHEN)}, {p.first} {r.choice(_WENT)} to the market in {p.town.name}. "
        f"{p.He} bought {_count(n, a_sg, a_pl)} and {_count(m, b_sg, b_pl)}. "
        f"The {a_the} cost {price} coins each, so {p.he} paid {n * price} coins for {'it' if n == 1 else 'them'}. "
        f"{p.He} gave the {a_the} to {w.friends[p.full].first}, so there {'was' if m == 1 else 'were'} "
        f"{_count(m, b_sg, b_pl)} left in {p.his} basket, and {p.he} had bought {n + m} things in all."
    )


def _trade(r: random.Random, w: _World) -> str:
    t, j = r.choice(w.towns), r.choice(_JOBS)
    k, hours = r.randrange(2, 13), r.randrange(20, 61)
    return (
        f"In {t.name} there are {_count(k, j.name, j.plural)}. "
        f"The {j.plural} of {t.name} {j.verb} {r.choice(j.objects)} {r.choice(_OFTEN).lower()}, and each {j.name} "
        f"works about {hours} hours a week, so together the {j.plural} work about {k * hours} hours a week. "
        f"One {j.name} {j.verb3} {r.choice(j.objects)} at the {j.workplace} by the {t.landmark}, "
        f"and the others work near the {t.river} River."
    )


def _compare(r: random.Random, w: _World) -> str:
    a, b = r.sample(w.people, 2)
    if a.born == b.born:
        rel = f"{a.first} and {b.first} are the same age"
    else:
        older = "older" if a.born < b.born else "younger"
        rel = f"{a.first} is {older} than {b.first} by {_count(abs(a.born - b.born), 'year', 'years', False)}"
    same = "also lives" if a.town == b.town else "lives"
    jobs = (f"{a.first} and {b.first} are both {a.job.plural}." if a.job == b.job
            else f"{a.first} is a {a.job.name}, while {b.first} is a {b.job.name}.")
    return (
        f"{a.full} was born in {a.born}, and {b.full} was born in {b.born}, so {rel}. "
        f"{a.first} lives in {a.town.name} and {b.first} {same} in {b.town.name}. {jobs}"
    )


def _dialogue(r: random.Random, w: _World) -> str:
    p = r.choice(w.people)
    f = w.friends[p.full]
    place = r.choice(_PLACES)
    doing = r.choice(_PET_DOING)
    return (
        f"\"Have you seen {p.pet_name}?\" asked {p.first}. "
        f"\"Yes, your {p.pet_color} {p.pet} is in the {place},\" said {f.first}. "
        f"\"Thank you, {f.first},\" said {p.first}, and {p.he} went to the {place} to find {p.pet_name}. "
        f"{p.pet_name} was {doing} in the {place}, so {p.first} {r.choice(_WAITED)}."
    )


def _diary(r: random.Random, w: _World) -> str:
    p = r.choice(w.people)
    j, t, f = p.job, p.town, w.friends[p.full]
    start, span = r.randrange(7), r.randrange(3, 6)
    deeds = [
        f"{j.past} {r.choice(j.objects)} at the {j.workplace}",
        f"visited {f.first} in {f.town.name}",
        f"walked {p.pet_name} along the river",
        f"ate {p.food} for dinner",
        f"cleaned the {r.choice(_PLACES)}",
        f"went to the {t.landmark} with {f.first}",
        f"wrote a letter to {p.his} {r.choice(_RELATIVES)}",
    ]
    days = [f"On {_DAYS[(start + i) % 7]} {p.he} {r.choice(deeds)}." for i in range(span)]
    last = _DAYS[(start + span - 1) % 7]
    return (f"{p.first} kept a diary of {p.his} week in {t.name}. " + " ".join(days)
            + f" By {last} evening {p.he} was {r.choice(_FEELINGS)}.")


def _counting(r: random.Random, w: _World) -> str:
    p = r.choice(w.people)
    sg, pl = r.choice(_GOODS)
    n = r.randrange(2, 11)
    counted = ", ".join(_NUMBER_WORDS[1 : n + 1])
    need = n + r.randrange(1, 4)
    return (
        f"{p.first} counted the {pl} in the {r.choice(_PLACES)}: {counted}. "
        f"There were {_count(n, sg, pl)}, but {p.he} needed {_count(need, sg, pl)}, "
        f"so {p.he} was short by {_NUMBER_WORDS[need - n]}."
    )


def _journey(r: random.Random, w: _World) -> str:
    p = r.choice(w.people)
    dest = r.choice(w.towns)
    miles, speed = r.randrange(2, 31) * 5, r.choice((5, 10, 15))
    how = r.choice(_TRAVEL)
    return (
        f"{r.choice(_WHEN)}, {p.full} travelled {how} from {p.town.name} to {dest.name}, a journey of {miles} miles. "
        f"At {speed} miles an hour the trip took {miles // speed} hours"
        + (f" and {(miles % speed) * 60 // speed} minutes. " if miles % speed else ". ")
        + f"In {dest.name} {p.he} saw the {dest.landmark}, and the way back was another {miles} miles, "
        f"so {p.he} travelled {2 * miles} miles in all."
    )


_PARAGRAPHS = (_bio, _bio, _town, _market, _trade, _compare, _dialogue, _diary, _counting, _journey)


def _paragraphs(size: str) -> list[str]:
    if size not in SIZES:
        raise DataError(f"unknown built-in corpus size {size!r}; choose one of {', '.join(SIZES)}")
    r = random.Random(SEED)
    world = _build_world(r)
    target, total, out = SIZES[size], 0, []
    while total < target:
        par = r.choice(_PARAGRAPHS)(r, world)
        out.append(par)
        total += len(par) + 2  # the text is ASCII, so characters are bytes
    return out


def builtin_corpus_text(size: str = "demo") -> str:
    """The whole built-in corpus (all splits, in generation order)."""
    return "\n\n".join(_paragraphs(size)) + "\n"


def builtin_corpus_splits(size: str = "demo") -> tuple[str, str, str]:
    """(train, valid, test) texts of the built-in corpus, about 90/5/5 by paragraph."""
    splits: tuple[list[str], list[str], list[str]] = ([], [], [])
    for i, par in enumerate(_paragraphs(size)):
        slot = i % _SPLIT_PERIOD
        splits[1 if slot == _VALID_SLOT else 2 if slot == _TEST_SLOT else 0].append(par)
    train, valid, test = ("\n\n".join(s) + "\n" for s in splits)
    return train, valid, test
