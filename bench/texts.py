"""The benchmark's inputs: fixed sentences of the lengths the sentiment model sees (tweets to short
reviews), so every run, server and baseline gets exactly the same work."""

from __future__ import annotations

SENTENCES: tuple[str, ...] = (
    "What a wonderful day",
    "The food was cold and the staff rude",
    "meh",
    "I loved every minute of this film, the acting was superb and the score unforgettable.",
    "Delivery took three weeks and the box arrived crushed. Not buying again.",
    "@anonymous doin my best...but driving my husband crazy! LOL!",
    "The committee will meet on Tuesday to discuss the budget.",
    "Absolutely terrible customer service, nobody answered for an hour.",
    "It works. Nothing special, nothing wrong either.",
    "This is the best phone I have ever owned and the battery lasts two days.",
    "The plot drags in the middle but the ending makes up for it.",
    "Worst. Purchase. Ever.",
    "The senator's speech was measured, careful and, for once, persuasive.",
    "Great value for money, would recommend to anyone looking for a starter kit.",
    "I can't believe they cancelled the show after one season, so disappointing",
    "ok",
)
