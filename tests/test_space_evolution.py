"""Search-space evolution moves the rank-ratio and patch window towards higher scores."""
import random

from mcuformer_tf.nas.search_space import SearchSpace
from tuner.budget import Budget, resolve_target
from tuner.space_evolution import Window, evolve_space, score_space, sub_space


def test_window_moves_towards_high_rank_and_small_patches():
    space = SearchSpace.load("deit-tiny-mcu")  # 12 rank ratios, 5 patch sizes
    budget = Budget(resolve_target("stm32f746-disco", sram="8MiB"))

    def scorer(config):  # a landscape that rewards rank and fine patches
        return config.rank_ratio - config.patch_size / 100

    evolved, history = evolve_space(space, budget, scorer, steps=20, samples=4, top_k=2,
                                    log=lambda *_: None)
    assert evolved.rank_ratio == space.rank_ratio[-len(evolved.rank_ratio):]
    assert evolved.patch_size == space.patch_size[:len(evolved.patch_size)]
    assert len(evolved.rank_ratio) == len(space.rank_ratio) // 2
    assert all(step.move[0] >= 0 and step.move[1] <= 0 for step in history)
    assert history[-1].move == (0, 0)
    scores = [step.scores[0, 0] for step in history]
    assert scores == sorted(scores)


def test_window_stays_where_the_landscape_is_flat(digits_space):
    evolved, history = evolve_space(digits_space, Budget(resolve_target("stm32f746")),
                                    lambda config: 0.5, steps=5, log=lambda *_: None)
    assert len(history) == 1 and history[0].move == (0, 0)
    assert evolved.rank_ratio == digits_space.rank_ratio[1:4]


def test_a_sub_space_scores_only_feasible_subnets(digits_space):
    rank, patch = Window(0, 3), Window(0, 1)
    narrowed = sub_space(digits_space, rank, patch)
    assert narrowed.rank_ratio == (0.5, 0.6, 0.7) and narrowed.patch_size == (4,)
    seen = []

    def scorer(config):
        seen.append(config)
        return config.embed_dim / 100

    tight = Budget(resolve_target("custom", "100KiB", "1MiB"))
    score = score_space(narrowed, tight, scorer, random.Random(0), samples=6, top_k=2)
    assert len(seen) == 6 and all(tight.check(c).fits and narrowed.contains(c) for c in seen)
    assert score == sum(sorted((c.embed_dim / 100 for c in seen), reverse=True)[:2]) / 2
    assert score_space(narrowed, Budget(resolve_target("custom", "40KiB", "1MiB")), scorer,
                       random.Random(0), samples=6, top_k=2, draws=50) is None
