"""The English word list of the embedded language (flowbench.data.language).

Two kinds of words:

FUNCTION_WORDS  shared by every topic, grouped by word class (determiners, pronouns, adverbs,
                prepositions, punctuation, conjunctions).
TOPICS          eight topics, each with its own nouns, verbs (past tense, so they agree with any
                subject) and adjectives.

Every word appears once in the whole list. `vocabulary(n_topics)` fixes the id order:
function words first (in class order), then the content words of the first n_topics topics.
With all eight topics the vocabulary has 48 + 8 * 26 = 256 words.
"""
from __future__ import annotations

FUNCTION_WORDS: dict[str, tuple[str, ...]] = {
    "det": ("the", "a", "this", "that", "every", "one", "my", "our", "your", "their"),
    "pron": ("it", "they", "we", "she", "he", "you", "i", "someone"),
    "adv": ("quickly", "slowly", "often", "never", "always", "soon", "still", "again",
            "together", "gently"),
    "prep": ("in", "on", "near", "under", "over", "with", "from", "by", "behind", "through"),
    "punct": (".", ",", "!", "?"),
    "conj": ("and", "but", "so", "while", "because", "then"),
}

# topic -> word class -> words (12 nouns, 8 verbs, 6 adjectives per topic)
TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "animals": {
        "noun": ("cat", "dog", "horse", "rabbit", "fox", "wolf", "bear", "mouse", "tiger",
                 "lion", "deer", "goat"),
        "verb": ("barked", "chased", "hunted", "slept", "growled", "jumped", "licked", "sniffed"),
        "adj": ("furry", "wild", "tame", "fierce", "hungry", "sleepy"),
    },
    "food": {
        "noun": ("bread", "cheese", "apple", "soup", "cake", "rice", "butter", "pie", "salad",
                 "honey", "pepper", "lemon"),
        "verb": ("baked", "cooked", "tasted", "sliced", "ate", "boiled", "stirred", "served"),
        "adj": ("sweet", "salty", "fresh", "crispy", "spicy", "warm"),
    },
    "sea": {
        "noun": ("ocean", "wave", "boat", "fish", "shell", "reef", "whale", "sailor", "harbor",
                 "tide", "crab", "anchor"),
        "verb": ("sailed", "swam", "floated", "drifted", "fished", "dived", "rowed", "sank"),
        "adj": ("blue", "deep", "wet", "calm", "stormy", "sandy"),
    },
    "space": {
        "noun": ("star", "planet", "rocket", "moon", "comet", "galaxy", "orbit", "astronaut",
                 "satellite", "telescope", "asteroid", "nebula"),
        "verb": ("launched", "orbited", "landed", "glowed", "exploded", "spun", "beamed", "zoomed"),
        "adj": ("distant", "bright", "cosmic", "dark", "lunar", "vast"),
    },
    "music": {
        "noun": ("song", "guitar", "piano", "drum", "violin", "melody", "choir", "band",
                 "concert", "rhythm", "singer", "flute"),
        "verb": ("sang", "played", "strummed", "hummed", "composed", "danced", "whistled", "tuned"),
        "adj": ("loud", "soft", "musical", "melodic", "catchy", "quiet"),
    },
    "sport": {
        "noun": ("ball", "team", "goal", "coach", "player", "match", "stadium", "racket",
                 "referee", "runner", "bat", "net"),
        "verb": ("kicked", "threw", "scored", "ran", "won", "lost", "raced", "trained"),
        "adj": ("fast", "strong", "athletic", "tired", "eager", "skilled"),
    },
    "city": {
        "noun": ("street", "car", "bus", "tower", "bridge", "market", "office", "train", "taxi",
                 "shop", "park", "crowd"),
        "verb": ("drove", "parked", "shopped", "walked", "built", "rode", "commuted", "honked"),
        "adj": ("busy", "crowded", "urban", "noisy", "modern", "tall"),
    },
    "forest": {
        "noun": ("tree", "leaf", "branch", "moss", "mushroom", "owl", "path", "river", "fern",
                 "log", "pine", "stone"),
        "verb": ("grew", "climbed", "wandered", "rustled", "fell", "bloomed", "gathered", "hiked"),
        "adj": ("green", "shady", "mossy", "ancient", "leafy", "damp"),
    },
}

CONTENT_CLASSES: tuple[str, ...] = ("noun", "verb", "adj")


def vocabulary(n_topics: int) -> tuple[list[str], dict[str, list[int]], list[int]]:
    """The word list for the first `n_topics` topics.

    Returns (words, class_ids, topic_of):
      words      list of V words; the token id of a word is its index
      class_ids  word class -> ids of that class (content classes span all chosen topics)
      topic_of   per id: the topic index of a content word, -1 for a function word
    """
    if not 1 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be in 1..{len(TOPICS)}, got {n_topics}")
    words: list[str] = []
    class_ids: dict[str, list[int]] = {}
    topic_of: list[int] = []
    for cls, group in FUNCTION_WORDS.items():
        class_ids[cls] = list(range(len(words), len(words) + len(group)))
        words.extend(group)
        topic_of.extend([-1] * len(group))
    for cls in CONTENT_CLASSES:
        class_ids[cls] = []
    for k, topic in enumerate(list(TOPICS.values())[:n_topics]):
        for cls in CONTENT_CLASSES:
            class_ids[cls].extend(range(len(words), len(words) + len(topic[cls])))
            words.extend(topic[cls])
            topic_of.extend([k] * len(topic[cls]))
    if len(set(words)) != len(words):
        dup = sorted({w for w in words if words.count(w) > 1})
        raise ValueError(f"word list repeats {dup}")
    return words, class_ids, topic_of
