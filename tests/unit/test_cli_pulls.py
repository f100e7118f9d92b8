"""`podhost apply` on a terminal follows the pod manager's pull events until every container has its image."""

import io

from podhost.cli.pulls import PullTracker, follow


def ev(obj: str, reason: str, message: str, t: float, type_: str = "Normal") -> dict:
    return {
        "namespace": "default",
        "object": obj,
        "type": type_,
        "reason": reason,
        "message": message,
        "first_timestamp": t,
        "last_timestamp": t,
        "count": 1,
    }


def test_pulls_are_pending_until_pulled_or_failed() -> None:
    t = PullTracker({"default/pod/web/a", "default/pod/web/b"}, since=100.0)
    assert t.update([ev("pod/web/a", "Pulling", 'Pulling image "x"', 101.0)]) == []
    assert list(t.pending) == ["default/pod/web/a"] and not t.done
    lines = t.update([
        ev("pod/web/a", "Pulling", 'Pulling image "x"', 101.0),
        ev("pod/web/a", "Pulled", 'Successfully pulled image "x"', 103.5),
        ev("pod/web/b", "Failed", 'Failed to pull image "y": no such image', 104.0, "Warning"),
    ])  # fmt: skip
    assert lines == [
        'pod/web/a: Successfully pulled image "x" (2.5 s)',
        'pod/web/b: Failed to pull image "y": no such image',
    ]
    assert t.done and not t.pending


def test_present_images_settle_at_once_and_old_events_are_ignored() -> None:
    t = PullTracker({"default/pod/web/a"}, since=100.0)
    assert t.update([ev("pod/web/a", "Pulled", "old", 50.0), ev("pod/other/a", "Pulled", "x", 101.0)]) == []
    assert not t.done
    assert t.update([ev("pod/web/a", "Pulled", 'Container image "x" already present on machine', 101.0)])
    assert t.done


def test_follow_draws_a_status_line_while_pending_and_returns_when_settled() -> None:
    t = PullTracker({"default/pod/web/a"}, since=0.0)
    feeds = iter(
        [
            [ev("pod/web/a", "Pulling", 'Pulling image "x"', 1.0)],
            [ev("pod/web/a", "Pulled", 'Successfully pulled image "x"', 2.0)],
        ]
    )
    out = io.StringIO()
    follow(t, lambda: next(feeds), lambda: 100, out)
    text = out.getvalue()
    assert 'pod/web/a: Pulling image "x"' in text and 'Successfully pulled image "x" (1.0 s)\n' in text
