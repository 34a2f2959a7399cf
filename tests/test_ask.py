"""lm.ask.ask_until_valid: rounds, follow-ups built from the last reply, failures counted, check seeing whole rounds,
the exact batches sent (the response cache is keyed by the request)."""
import pytest

from dart_utils.lm import ask
from dart_utils.lm.llm import LLMResponse


class Scripted:
    """Answers item q's k-th request with script[q][k]; records every chat_many call (batch, desc, overrides)."""

    def __init__(self, script):
        self.script, self.calls, self.asked = script, [], {}

    def chat_many(self, batch, desc="", **overrides):
        self.calls.append((batch, desc, overrides))
        out = []
        for m in batch:
            q = m[0]["content"]
            k = self.asked[q] = self.asked.get(q, -1) + 1
            out.append(LLMResponse(self.script[q][k], "stop", cache_key=f"{q}-{k}"))
        return out


def first(q):
    return [{"role": "user", "content": q}]


def follow_up(_i, conv):
    return conv.messages + [{"role": "assistant", "content": conv.last.text},
                            {"role": "user", "content": f"fix: {conv.last.info['why']}"}]


def is_number(turn):
    t = turn.reply.text
    return (int(t), {"why": None}) if t.isdigit() else (None, {"why": f"not a number: {t}"})


SCRIPT = {"a": ["1"], "b": ["x", "2"], "c": ["x", "y", "z"], "d": ["x", "y", "3"]}


def test_rounds_follow_ups_and_failures():
    client = Scripted(SCRIPT)
    convs = ask.ask_until_valid(client, [first(q) for q in "abcd"], ask.each(is_number), follow_up, 3, "teacher",
                                max_tokens=7)
    assert [c.value for c in convs] == [1, 2, None, 3]
    assert [c.ok for c in convs] == [True, True, False, True] and ask.failures(convs) == 1
    assert [c.rounds_used for c in convs] == [0, 1, 2, 2]
    c = convs[2]
    assert [a.text for a in c.attempts] == ["x", "y", "z"] and [a.round for a in c.attempts] == [0, 1, 2]
    assert [a.cache_key for a in c.attempts] == ["c-0", "c-1", "c-2"]
    assert c.last.info == {"why": "not a number: z"} and c.messages == first("c")
    # one chat_many per round, only the failing items, in item order, with the desc and the overrides
    assert [(len(b), d, o) for b, d, o in client.calls] == [(4, "teacher round 0", {"max_tokens": 7}),
                                                            (3, "teacher round 1", {"max_tokens": 7}),
                                                            (2, "teacher round 2", {"max_tokens": 7})]
    assert client.calls[0][0] == [first(q) for q in "abcd"]
    # a follow-up is built from the conversation so far and the LAST failed reply
    assert client.calls[2][0][0] == first("c") + [{"role": "assistant", "content": "y"},
                                                 {"role": "user", "content": "fix: not a number: y"}]


def test_one_round_means_no_follow_up_and_nothing_to_ask_means_no_call():
    client = Scripted(SCRIPT)
    convs = ask.ask_until_valid(client, [first("b")], ask.each(is_number), follow_up, 1, "judge")
    assert not convs[0].ok and len(client.calls) == 1 and client.calls[0][1] == "judge round 0"
    empty = Scripted(SCRIPT)
    assert ask.ask_until_valid(empty, [], ask.each(is_number), follow_up, 3, "judge") == [] and empty.calls == []
    with pytest.raises(ValueError, match="rounds"):
        ask.ask_until_valid(client, [first("a")], ask.each(is_number), follow_up, 0, "judge")


def test_check_sees_whole_rounds_and_the_history_before_the_reply():
    seen = []

    def check(turns):
        """Accept only the round's largest reply (a decision over the whole round, as repair scores a round)."""
        seen.append([(t.index, t.round, t.reply.text, len(t.conversation.attempts)) for t in turns])
        best = max(t.reply.text for t in turns)
        return [((t.reply.text if t.reply.text == best else None), {"why": "not the best"}) for t in turns]

    script = {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"], "c": ["c0", "c1", "c2"]}
    convs = ask.ask_until_valid(Scripted(script), [first(q) for q in "abc"], check, follow_up, 3, "repair teacher")
    assert seen == [[(0, 0, "a0", 0), (1, 0, "b0", 0), (2, 0, "c0", 0)],
                    [(0, 1, "a1", 1), (1, 1, "b1", 1)],
                    [(0, 2, "a2", 2)]]
    assert [c.value for c in convs] == ["a2", "b1", "c0"] and ask.failures(convs) == 0


def test_bad_lengths_and_transport_errors_propagate():
    class Short(Scripted):
        def chat_many(self, batch, desc="", **overrides):
            return super().chat_many(batch, desc, **overrides)[:-1]

    with pytest.raises(ValueError, match="2 replies for 3 requests"):
        ask.ask_until_valid(Short(SCRIPT), [first(q) for q in "abc"], ask.each(is_number), follow_up, 2, "t")
    with pytest.raises(ValueError, match="check returned 0 results"):
        ask.ask_until_valid(Scripted(SCRIPT), [first("a")], lambda turns: [], follow_up, 2, "t")

    class Down:
        def chat_many(self, batch, desc="", **overrides):
            raise ConnectionError("server down")

    with pytest.raises(ConnectionError):
        ask.ask_until_valid(Down(), [first("a")], ask.each(is_number), follow_up, 2, "t")


def test_lm_ask_is_generic():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(ask))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not any("dart" in m for m in imported), imported
