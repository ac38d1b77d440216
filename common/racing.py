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

from .stats import clearly_below as behind  # a member clearly below the leader on the same episodes

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


def race(members: Sequence[str], play: Callable[[list, int, int], dict], n: int,
         rounds: Sequence[int] | None = None) -> Race:
    """Race `members` on episodes 0..n-1. `play(members, start, count)` -> {member: its returns on
    episodes start..start+count-1} for the round's members together (each episode the same for
    every member: a seeded episode). `rounds`: cumulative episode counts, increasing, the last = n
    (default `race_rounds(n)`)."""
    return race_families({"": members}, play, n, rounds)[""]


def race_families(families: dict, play: Callable[[list, int, int], dict], n: int,
                  rounds: Sequence[int] | None = None) -> dict:
    """Race each family of `families` ({family: members}) as `race` does, the families' rounds
    played together: each round's `play` gets every family's members still in (a member two
    families share, once), so a caller can play them side by side -> {family: Race}."""
    rounds = tuple(rounds or race_rounds(n))
    if not families or not all(families.values()):
        raise ValueError("a race needs at least one member")
    if list(rounds) != sorted(set(rounds)) or rounds[0] < 1 or rounds[-1] != n:
        raise ValueError(f"rounds must increase from >= 1 to n={n}, got {rounds}")
    returns = {m: [] for members in families.values() for m in members}
    alive = {f: list(members) for f, members in families.items()}
    dropped = {f: {} for f in families}
    for end in rounds:
        todo = list(dict.fromkeys(m for members in alive.values() for m in members))
        start = len(returns[todo[0]])
        got = play(todo, start, end - start)
        for m in todo:
            if len(got.get(m, ())) != end - start:
                raise ValueError(f"play returned {len(got.get(m, ()))} returns for {m!r}, expected {end - start}")
            returns[m] += list(got[m])
        if end < n:  # after the last round the highest mean is chosen; nobody needs dropping
            for f, members in alive.items():
                leader = max(members, key=lambda m: _mean(returns[m]))
                for m in [m for m in members if m != leader and behind(returns[m], returns[leader])]:
                    members.remove(m)
                    dropped[f][m] = end
    return {f: Race(max(alive[f], key=lambda m: _mean(returns[m])),
                    {m: returns[m][:dropped[f].get(m, n)] for m in members}, dropped[f])
            for f, members in families.items()}


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


__all__ = ["MIN_ROUND", "Race", "behind", "race", "race_families", "race_rounds"]
