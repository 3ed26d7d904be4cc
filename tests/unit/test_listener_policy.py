"""The session policy's decisions, in-process: what differs, what is sent back, what is archived,
and when the call is hung up. (Through the host, the emulator and a data-channel client:
tests/security/test_adversary.py.)"""

from __future__ import annotations

from realtime_gateway.listener.policy import PolicyGuard

POLICY = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "Be brief.",
    "audio": {"output": {"voice": "marin"}},
    "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
}


def guard(max_violations: int = 3):
    sent, marks, hangups = [], [], []

    def send(message):
        sent.append(message)
        return True

    g = PolicyGuard(POLICY, send, lambda kind, payload: marks.append((kind, payload)), hangups.append, max_violations)
    return g, sent, marks, hangups


def session(**changes):
    return {**POLICY, "object": "realtime.session", **changes}


def test_the_policys_own_session_is_left_alone():
    g, sent, marks, _ = guard()
    g.on_event("session.created", {"session": session(tool_choice="auto", output_modalities=["audio"])})
    g.on_event("response.created", {"response": {"id": "resp_1", "audio": {"output": {"voice": "marin"}}}})
    assert sent == [] and marks == []


def test_a_changed_session_is_restored_with_the_policy_and_archived():
    g, sent, marks, hangups = guard()
    pirate = {"name": "shell", "type": "function", "parameters": {}}
    g.on_event("session.updated", {"session": session(instructions="Talk like a pirate.", tools=[pirate], model="x")})
    assert sent == [
        {
            "type": "session.update",
            "session": {
                "tools": POLICY["tools"],
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {"output": {"voice": "marin"}},
            },
        }
    ]
    assert marks == [
        (
            "listener.policy",
            {
                "event": "session.updated",
                "fields": ["instructions", "tools", "model"],
                "action": "restored",
                "sent": True,
                "violations": 1,
            },
        )
    ]
    assert hangups == []


def test_tools_the_policy_has_none_of_are_cleared_not_left_out():
    g = PolicyGuard({"instructions": "x"}, lambda m: True, lambda *a: None, lambda why: None, 0)
    assert g.restore_message()["session"]["tools"] == []
    assert g.session_differences({"instructions": "x", "tools": [{"name": "shell"}]}) == ["tools"]


def test_responses_during_a_restore_and_responses_with_their_own_settings_are_cancelled():
    g, sent, marks, _ = guard()
    g.on_event("session.updated", {"session": session(instructions="Other.")})
    g.on_event("response.created", {"response": {"id": "resp_1"}})  # began before the restore landed
    g.on_event("session.updated", {"session": session()})  # the restore landed
    g.on_event("response.created", {"response": {"id": "resp_2"}})  # fine again
    g.on_event("response.created", {"response": {"id": "resp_3", "instructions": "Talk like a pirate."}})
    g.on_event("response.created", {"response": {"id": "resp_4", "audio": {"output": {"voice": "alloy"}}}})
    cancels = [m["response_id"] for m in sent if m["type"] == "response.cancel"]
    assert cancels == ["resp_1", "resp_3", "resp_4"]
    assert [(p["action"], p["fields"], p["violations"]) for _, p in marks] == [
        ("restored", ["instructions"], 1),
        ("cancelled", ["session"], 1),  # the same violation: not counted twice
        ("cancelled", ["instructions"], 2),
        ("cancelled+hangup", ["voice"], 3),
    ]


def test_the_call_is_hung_up_once_at_the_limit_and_never_with_zero():
    g, _, _, hangups = guard(max_violations=2)
    for _ in range(4):
        g.on_event("session.updated", {"session": session(instructions="Other.")})
    assert hangups == ["session policy: 2 violations"]
    g, _, _, hangups = guard(max_violations=0)
    for _ in range(4):
        g.on_event("session.updated", {"session": session(instructions="Other.")})
    assert hangups == []


def test_a_response_may_not_ask_for_more_tokens_than_the_policy():
    g = PolicyGuard({**POLICY, "max_output_tokens": 200}, lambda m: True, lambda *a: None, lambda why: None, 0)
    assert g.response_differences({"max_output_tokens": 100}) == []
    assert g.response_differences({"max_output_tokens": 4096}) == ["max_output_tokens"]
    assert g.response_differences({"max_output_tokens": "inf"}) == ["max_output_tokens"]


def test_the_session_as_minted_stands_until_the_listeners_own_update_is_applied_and_not_after():
    """LISTENER_SESSION_UPDATE is part of the policy, but session.created comes before the service
    applied it: the minted session is no violation then, and is one once the whole policy was seen."""
    own = {**POLICY, "output_modalities": ["text"]}  # the policy with the listener's own update merged
    sent, marks = [], []
    g = PolicyGuard(own, lambda m: sent.append(m) or True, lambda k, p: marks.append(p), lambda why: None, 3, POLICY)
    g.on_event("session.created", {"session": session(output_modalities=["audio"])})
    assert sent == [] and marks == []
    # meanwhile, anything beyond the minted session is restored as ever
    g.on_event("session.updated", {"session": session(output_modalities=["audio"], instructions="Talk like a pirate.")})
    assert [m["fields"] for m in marks] == [["instructions", "output_modalities"]] and len(sent) == 1
    g.on_event("session.updated", {"session": session(output_modalities=["text"])})  # the policy, whole
    assert len(marks) == 1
    g.on_event("session.updated", {"session": session(output_modalities=["audio"])})  # the minted one, now a change
    assert marks[-1]["fields"] == ["output_modalities"] and len(marks) == len(sent) == 2
