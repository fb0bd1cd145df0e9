"""Load books: what an assigner believes each agent (or group) is running."""

from __future__ import annotations

from collections.abc import Mapping

from aqe.coordination.tasks import TaskBoard

__all__ = ["Loads"]


class Loads:
    """Tasks an assigner counts against each slot holder until their outcome is seen.

    An assigner adds a task *before* it claims (so two of its own claims never take the
    same slot) and drops it when the claim fails or the board shows the task completed
    or abandoned. ``pick`` returns the holder with the most free slots (ties: the one
    picked least recently, so work spreads round-robin).
    """

    def __init__(self, capacities: Mapping[str, int]) -> None:
        self.capacity = dict(capacities)
        self.load = dict.fromkeys(self.capacity, 0)
        self._owner: dict[str, str] = {}
        self._turn = 0
        self._last_pick = dict.fromkeys(self.capacity, -1)

    def seed(self, board: TaskBoard, holder_of: Mapping[str, str] | None = None) -> None:
        """Count tasks the board shows claimed and unfinished (``holder_of`` maps agents)."""
        for agent, held in board.by_agent.items():
            holder = holder_of.get(agent) if holder_of is not None else agent
            if holder is None or holder not in self.capacity:
                continue
            for task_id in held:
                self.add(task_id, holder)

    def add(self, task_id: str, holder: str) -> None:
        """Count ``task_id`` against ``holder`` (once)."""
        if task_id in self._owner:
            return
        self._owner[task_id] = holder
        self.load[holder] += 1

    def done(self, task_id: str) -> None:
        """The task finished, was abandoned, or its claim failed."""
        holder = self._owner.pop(task_id, None)
        if holder is not None:
            self.load[holder] -= 1

    def holds(self, task_id: str) -> bool:
        """Whether ``task_id`` is counted."""
        return task_id in self._owner

    def free(self, holder: str) -> int:
        """Free slots of one holder."""
        return self.capacity[holder] - self.load[holder]

    def total_free(self) -> int:
        """Free slots of all holders."""
        return sum(max(0, self.free(h)) for h in self.capacity)

    def pick(self, among: frozenset[str] | None = None) -> str | None:
        """The holder with most free slots (None when all are full)."""
        best: str | None = None
        best_key: tuple[int, int] | None = None
        for holder in self.capacity:
            if among is not None and holder not in among:
                continue
            free = self.free(holder)
            if free <= 0:
                continue
            key = (free, -self._last_pick[holder])
            if best_key is None or key > best_key:
                best, best_key = holder, key
        if best is not None:
            self._turn += 1
            self._last_pick[best] = self._turn
        return best
