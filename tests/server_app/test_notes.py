"""Per-node notes: each kind logged once per run, its repeats counted per round."""

from __future__ import annotations

import logging

from server_app.notes import NodeNotes


def test_a_note_is_logged_once_per_node_and_kind_then_only_counted(caplog):
    notes = NodeNotes()
    with caplog.at_level(logging.INFO, logger="flwr"):
        notes.start_round()
        notes.note(1, 7, "update clipped (x0.41)")
        notes.note(1, 8, "update clipped (x0.5)")  # another node: logged
        assert notes.repeated == 0
        notes.start_round()
        notes.note(2, 7, "update clipped (x0.37)")  # same kind, other numbers: counted
        notes.note(2, 7, "representations point away from the cloud's (cos -0.20)")
        notes.note(2, 8, "update clipped (x1e-3)")
    logged = [r.getMessage() for r in caplog.records if "node" in r.getMessage()]
    assert logged == [
        "round 1: node 7: update clipped (x0.41) (logged once per run)",
        "round 1: node 8: update clipped (x0.5) (logged once per run)",
        "round 2: node 7: representations point away from the cloud's (cos -0.20)"
        " (logged once per run)",
    ]
    assert notes.repeated == 2
