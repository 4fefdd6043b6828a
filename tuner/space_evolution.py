"""Search-space evolution (MCUFormer): move the space over rank ratio and patch size.

MCUFormer's observation is that the best subnets under a memory budget sit in
a part of the space set by the rank ratio and the patch size (low rank buys
tokens, big patches buy width), and that part is found by scoring whole
sub-spaces rather than single subnets. Here a sub-space is the full space with
its rank ratios narrowed to a window of consecutive choices and its patch sizes
likewise. Each step scores the current window and its neighbours (one choice
up or down in rank, in patch, or both): a sub-space's score is the mean
accuracy of the `top_k` best of `samples` random subnets of it that fit the
budget (inherited weights, as the tuner scores them). A plane fitted by least
squares to the scores over the window offsets gives the tendency; the window
moves one choice along each axis whose slope is positive and worth more than
`tolerance` (along one axis only where the window is at the end of the
other). The evolution stops when the window no longer moves, would return to
a window it has scored, or after `steps` steps; the evolved space is the
best-scored window it visited. The evolved space is then searched as usual.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable

import numpy as np

from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig
from tuner.budget import Budget


@dataclasses.dataclass(frozen=True)
class Window:
    """Consecutive choices [start, start + width) of a sorted tuple."""

    start: int
    width: int

    def shifted(self, offset: int, size: int) -> "Window | None":
        start = self.start + offset
        return Window(start, self.width) if 0 <= start <= size - self.width else None

    def pick(self, choices: tuple) -> tuple:
        return tuple(choices[self.start:self.start + self.width])


@dataclasses.dataclass
class EvolutionStep:
    rank_ratio: tuple
    patch_size: tuple
    scores: dict  # (rank offset, patch offset) -> score or None (nothing feasible)
    move: tuple  # (rank offset, patch offset) taken


def sub_space(space: SearchSpace, rank: Window, patch: Window) -> SearchSpace | None:
    """`space` with rank ratio and patch size narrowed to the windows (None: no image fits)."""
    patches = patch.pick(space.patch_size)
    if not any(i % p == 0 for i in space.image_size for p in patches):
        return None
    return dataclasses.replace(space, rank_ratio=rank.pick(space.rank_ratio), patch_size=patches)


def score_space(space: SearchSpace, budget: Budget, scorer: Callable[[SubnetConfig], float],
                rng: random.Random, samples: int, top_k: int, draws: int = 2000) -> float | None:
    """Mean accuracy of the top_k of `samples` feasible random subnets (None: none found)."""
    found = []
    for _ in range(draws):
        config = space.sample(rng)
        if config not in found and budget.check(config).fits:
            found.append(config)
            if len(found) == samples:
                break
    if not found:
        return None
    accuracies = sorted((scorer(c) for c in found), reverse=True)
    return float(np.mean(accuracies[:top_k]))


def evolve_space(space: SearchSpace, budget: Budget, scorer: Callable[[SubnetConfig], float],
                 steps: int = 3, samples: int = 8, top_k: int = 3, tolerance: float = 0.002,
                 seed: int = 0, log=print) -> tuple[SearchSpace, list[EvolutionStep]]:
    """The evolved space and the record of each step (see the module docstring)."""
    n_rank, n_patch = len(space.rank_ratio), len(space.patch_size)
    rank = Window((n_rank - max(1, n_rank // 2)) // 2, max(1, n_rank // 2))
    patch = Window((n_patch - max(1, n_patch // 2)) // 2, max(1, n_patch // 2))
    history, visited = [], {}  # (rank window, patch window) -> its score
    for step in range(steps):
        scores = {}
        for dr in (-1, 0, 1):
            for dp in (-1, 0, 1):
                r, p = rank.shifted(dr, n_rank), patch.shifted(dp, n_patch)
                candidate = r and p and sub_space(space, r, p)
                if candidate:
                    rng = random.Random(f"{seed}:{step}:{r.start}:{p.start}")
                    scores[dr, dp] = score_space(candidate, budget, scorer, rng, samples, top_k)
        scored = [(k, v) for k, v in scores.items() if v is not None]
        move = (0, 0)
        if len(scored) >= 3:
            x = np.array([[1.0, dr, dp] for (dr, dp), _ in scored])
            y = np.array([v for _, v in scored])
            _, slope_rank, slope_patch = np.linalg.lstsq(x, y, rcond=None)[0]
            dr, dp = (int(np.sign(s)) if abs(s) > tolerance else 0
                      for s in (slope_rank, slope_patch))
            # Along both axes where the window can go both ways, else along the one it can.
            move = next((m for m in ((dr, dp), (dr, 0), (0, dp))
                         if m != (0, 0) and scores.get(m) is not None), (0, 0))
        current = sub_space(space, rank, patch)
        history.append(EvolutionStep(current.rank_ratio, current.patch_size, scores, move))
        log(f"space evolution step {step + 1}: rank ratio {list(current.rank_ratio)}, patch "
            f"{list(current.patch_size)}: score {scores.get((0, 0)) or 0:.2%}; move rank "
            f"{move[0]:+d}, patch {move[1]:+d}")
        visited[rank, patch] = scores.get((0, 0))
        nxt = rank.shifted(move[0], n_rank), patch.shifted(move[1], n_patch)
        if move == (0, 0) or nxt in visited:
            break
        rank, patch = nxt
    best = max(visited, key=lambda w: -1.0 if visited[w] is None else visited[w])
    return sub_space(space, *best), history
