"""The words a text prediction rests on (``tasks/text/evidence.py``): leave-one-word-out weights in log-odds.

The rule is checked on scorers whose answer is known; the real model's check (taking out the words found lowers the
class's probability far more than taking out as many words at random) is in ``test_text.py``'s default SMS run.
"""

from __future__ import annotations

import math

import pytest
import torch

from headstart.tasks.text import PART_SEP
from headstart.tasks.text.evidence import MAX_WORDS, log_odds, weigh, without_each_word


def _spam_scorer(texts: list[str]) -> torch.Tensor:
    """Log-odds of (ham, spam): +3 per 'FREE', +1 per 'call', -2 per 'lunch'; other words weigh nothing."""
    spam = torch.tensor([3.0 * t.split().count("FREE") + t.split().count("call") - 2.0 * t.split().count("lunch")
                         for t in texts])
    return torch.stack([-spam, spam], dim=1)


def test_the_words_that_carry_the_score_come_first_with_their_weight():
    texts = ["call now for a FREE phone", "see you at lunch then", "nothing to see"]
    found = weigh(texts, [1, 0, 1], _spam_scorer)
    assert found[0] == [("FREE", 3.0), ("call", 1.0)]  # the words that do not count are not listed
    assert found[1] == [("lunch", 2.0)]  # for ham, 'lunch' lowers the spam log-odds: its support
    assert found[2] == []
    assert weigh(["FREE FREE call", "a"], [1, 1], _spam_scorer, shown=1) == [[("FREE", 3.0)], []]


def test_a_text_of_several_columns_keeps_its_separator_and_long_texts_are_capped():
    words, texts = without_each_word(f"Great phone{PART_SEP}broke after a week")
    assert words == ["Great", "phone", "broke", "after", "a", "week"]
    assert all(t.count(PART_SEP) == 1 for t in texts) and texts[1] == f"Great {PART_SEP}broke after a week"
    words, texts = without_each_word(" ".join(f"w{i}" for i in range(MAX_WORDS + 50)))
    assert len(words) == len(texts) == MAX_WORDS
    assert without_each_word("aa bb cc", within=5)[0] == ["aa", "bb"]  # a report weighs the words it shows
    assert weigh(["call FREE now"], [1], _spam_scorer, within=4) == [[("call", 1.0)]]


def test_log_odds_do_not_round_a_confident_probability_to_one():
    logits = torch.tensor([[2.0, -1.0, 0.5], [40.0, 0.0, 0.0]])
    odds = log_odds(logits)
    p = torch.softmax(logits.double(), dim=1)
    assert odds[0].tolist() == pytest.approx(torch.log(p[0] / (1 - p[0])).tolist(), abs=1e-5)
    assert torch.softmax(logits, 1)[1, 0] == 1.0  # float32: the probability alone cannot tell 40 from 50
    assert float(odds[1, 0]) == pytest.approx(40.0 - math.log(2.0), abs=1e-4)
    assert torch.equal(log_odds(logits, sigmoid=True), logits)  # multi-label: a sigmoid's log-odds is its logit
