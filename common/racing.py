"""Racing: pick the best member of a family of policies without playing every member on every seed.

Every member plays the same seeded episodes, so members are compared episode by episode (paired).
The episodes are played in rounds: after each round, a member is dropped when its paired 95 %
Student-t interval against the round's leader (the member with the highest mean so far) lies
entirely below 0 — it is behind on these very episodes by more than their noise explains. The
others play the next round. After the last round every survivor has played all `n` episodes and
the one with the highest mean is chosen: the full grid's choice whenever the grid's best member
was never clearly behind, which a member within noise of the leader never is (docs/rl.md,
"Controls").

The rule is one-sided at 2.5 % per comparison: a member exactly as good as the leader is dropped
in a given round with probability at most about 2.5 % (less when it is itself near the top).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .stats import summarize

MIN_ROUND = 5  # episodes: fewer give a t-interval too wide (t975(3) = 3.2) to drop anyone


def race_rounds(n: int, rounds: int = 6) -> tuple:
    """The cumulative episode counts after each round: `rounds` equal slices of `n` (the last
    ends at `n`), fewer when a slice would have fewer than MIN_ROUND episodes. Six rounds (of 5
    episodes at n = 30) played 41 % of `demo-lr`'s grid where three played 50 %, choosing the same
    members (bench/README.md, "Spending decisions")."""
    if n < 1:
        raise ValueError("a race needs at least one episode")
    k = max(1, min(rounds, n // MIN_ROUND))
    return tuple(round(n * (i + 1) / k) for i in range(k))


@dataclass
class Race:
    """What a race decided: the chosen member, every member's returns as far as it played, and
    after how many episodes each dropped member left."""
    chosen: str
    returns: dict
    dropped: dict = field(default_factory=dict)  # member -> episodes it had played when dropped

    @property
    def episodes(self) -> int:
        """Episodes played, all members together."""
        return sum(len(r) for r in self.returns.values())

    def full_grid(self) -> int:
        """Episodes the full grid would have played: every member on every episode."""
        return len(self.returns) * len(self.returns[self.chosen])


def behind(member: Sequence[float], leader: Sequence[float]) -> bool:
    """Whether `member` is clearly behind `leader` on the same episodes: the paired 95 % interval of
    member - leader lies below 0."""
    if len(member) != len(leader) or len(member) < 2:
        return False
    return summarize([m - x for m, x in zip(member, leader)])["ci95_high"] < 0


def race(members: Sequence[str], play: Callable[[str, int, int], list], n: int,
         rounds: Sequence[int] | None = None) -> Race:
    """Race `members` on episodes 0..n-1. `play(member, start, count)` -> the member's returns on
    episodes start..start+count-1 (each episode the same for every member: a seeded episode).
    `rounds`: cumulative episode counts, increasing, the last = n (default `race_rounds(n)`)."""
    rounds = tuple(rounds or race_rounds(n))
    if not members:
        raise ValueError("a race needs at least one member")
    if list(rounds) != sorted(set(rounds)) or rounds[0] < 1 or rounds[-1] != n:
        raise ValueError(f"rounds must increase from >= 1 to n={n}, got {rounds}")
    returns = {m: [] for m in members}
    alive, dropped = list(members), {}
    for end in rounds:
        for m in alive:
            got = list(play(m, len(returns[m]), end - len(returns[m])))
            if len(got) != end - len(returns[m]):
                raise ValueError(f"play({m!r}) returned {len(got)} returns, expected {end - len(returns[m])}")
            returns[m] += got
        leader = max(alive, key=lambda m: _mean(returns[m]))
        if end < n:  # after the last round the highest mean is chosen; nobody needs dropping
            for m in [m for m in alive if m != leader and behind(returns[m], returns[leader])]:
                alive.remove(m)
                dropped[m] = end
    return Race(max(alive, key=lambda m: _mean(returns[m])), returns, dropped)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


__all__ = ["MIN_ROUND", "Race", "behind", "race", "race_rounds"]
