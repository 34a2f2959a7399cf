"""Ask an LLM, validate the replies, follow up on the failing ones: the one loop behind every validated LLM call.

Why: the Stage I teacher (format-fix follow-ups), the Stage III repair teacher (format / "be safer" follow-ups, the
candidates of a round scored together) and the Stage II judge (JSON-fix follow-ups) all do the same thing: send one
conversation per item, check each reply, and for the items whose reply failed send the conversation so far plus a
follow-up, for a bounded number of rounds. One loop means one place where the batches are built, so every caller
sends the same requests in the same order (the LLM response cache is keyed by the request).

The loop is generic (messages in, replies out): what a valid reply is and what the follow-up says belong to the
caller.

* Round 0 sends `first_messages[i]` for every item, in one `client.chat_many(batch, desc=f"{desc} round 0",
  **overrides)` call. Round r > 0 sends `follow_up(conversation)` for every item still failing, in item order.
* `check(turns)` sees a whole round at once (a list of `Turn`: item index, round, reply and the conversation before
  this reply) and returns one `(value, info)` per turn: `value` is the accepted value, or None when the reply fails;
  `info` (a dict) is kept with the attempt (reasons, errors, scores).
* An item that has no accepted value after `rounds` rounds is a failure: counted (`failures`), kept with every
  attempt, never dropped silently. Transport errors from the client propagate (a rerun resumes from the cache).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Attempt:
    """One reply to one item: the round it came in, the client's reply object (`.text`, `.cache_key`, ...) and what
    `check` said about it (`info`)."""
    round: int
    reply: Any
    info: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.reply.text

    @property
    def cache_key(self) -> str:
        return self.reply.cache_key


@dataclass
class Conversation:
    """Everything asked and answered for one item: the first request, every attempt (in round order) and the
    accepted value (None while no reply was accepted)."""
    messages: list[dict]
    attempts: list[Attempt] = field(default_factory=list)
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.value is not None

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def rounds_used(self) -> int:
        """Follow-ups sent (0 when the first reply was accepted)."""
        return len(self.attempts) - 1


@dataclass(frozen=True)
class Turn:
    """One reply to check: item index, round, the reply, and the conversation BEFORE this reply is recorded
    (`conversation.attempts` holds the earlier attempts only)."""
    index: int
    round: int
    reply: Any
    conversation: Conversation


Check = Callable[[list[Turn]], Sequence[tuple[Any, dict]]]
FollowUp = Callable[[int, Conversation], list[dict]]


def ask_until_valid(client, first_messages: Sequence[list[dict]], check: Check, follow_up: FollowUp, rounds: int,
                    desc: str, **overrides) -> list[Conversation]:
    """One `Conversation` per item (input order) after at most `rounds` rounds (1 + the follow-ups allowed).

    `client.chat_many(list_of_messages, desc=..., **overrides)` must return one reply per conversation, in order.
    `follow_up(index, conversation)` builds the next request of a failing item from its conversation (its last
    attempt is the failed reply). `check` and the rest: module docstring."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1 (the first request plus the follow-ups), got {rounds}")
    conversations = [Conversation(list(m)) for m in first_messages]
    pending = list(range(len(conversations)))
    for round_no in range(rounds):
        if not pending:
            break
        batch = [conversations[i].messages if round_no == 0 else follow_up(i, conversations[i]) for i in pending]
        replies = client.chat_many(batch, desc=f"{desc} round {round_no}", **overrides)
        replies = list(replies)
        if len(replies) != len(pending):
            raise ValueError(f"{desc} round {round_no}: the client returned {len(replies)} replies for "
                             f"{len(pending)} requests")
        turns = [Turn(i, round_no, reply, conversations[i]) for i, reply in zip(pending, replies)]
        verdicts = list(check(turns))
        if len(verdicts) != len(turns):
            raise ValueError(f"{desc} round {round_no}: check returned {len(verdicts)} results for "
                             f"{len(turns)} replies")
        still = []
        for turn, (value, info) in zip(turns, verdicts):
            conv = conversations[turn.index]
            conv.attempts.append(Attempt(round_no, turn.reply, dict(info or {})))
            if value is None:
                still.append(turn.index)
            else:
                conv.value = value
        pending = still
    return conversations


def failures(conversations: Sequence[Conversation]) -> int:
    """Items without an accepted value."""
    return sum(not c.ok for c in conversations)


def each(check_one: Callable[[Turn], tuple[Any, dict]]) -> Check:
    """A `check` that looks at one reply at a time."""
    return lambda turns: [check_one(t) for t in turns]
