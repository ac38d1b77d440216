import math

import numpy as np
import pytest

from data.stats import unigram_perplexity


def test_unigram_perplexity_hand_example():
    # counts + 1: token0 -> 4, token1 -> 2, token2 -> 1, token3 -> 1; total 8
    train = np.array([0, 0, 0, 1])
    ppl = unigram_perplexity(train, np.array([0, 1]), vocab_size=4)
    assert ppl == pytest.approx(math.exp(-(math.log(4 / 8) + math.log(2 / 8)) / 2))


def test_uniform_text_gives_vocab_size():
    ids = np.arange(10).repeat(5)
    assert unigram_perplexity(ids, ids, vocab_size=10) == pytest.approx(10.0)
