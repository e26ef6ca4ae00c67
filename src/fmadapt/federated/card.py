"""What a federated model's card (README.md of its directory) says of its federation and its privacy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def round_problems(row: Mapping[str, Any]) -> str:
    """What went wrong in a round (a row of history["federation"]["rounds"]): the clients whose update was
    rejected and why, those that failed, and the round's note; "" when nothing did. (The run's printout and the
    report word it alike; a row read back from JSON may hold anything, so types are checked.)"""
    rejected, failed = row.get("rejected"), row.get("failed_clients")
    bad = [f"client {c}: {why}" for c, why in (rejected.items() if isinstance(rejected, Mapping) else ())]
    bad += [f"client {c}: failed" for c in (failed if isinstance(failed, list) else ())]
    note = row.get("note")
    return "; ".join(bad) + (f" ({note})" if note else "")


def card_lines(fed: dict[str, Any]) -> list[str]:
    """The model card's "Federated training" section, from history["federation"]."""
    clients = fed.get("clients") or []
    rounds = fed.get("rounds") or []
    last = rounds[-1] if rounds else {}
    lines = ["", "## Federated training", "",
             f"- {len(clients)} clients (partition `{fed.get('partition')}`), {len(rounds)} rounds of "
             f"`{fed.get('aggregation')}`"
             + (f" after {len(fed['head']['rounds'])} rounds of the federated probe that trained the head alone"
                if isinstance(fed.get("head"), dict) and fed["head"].get("rounds") else "")
             + f"; what travelled: {fed.get('trainable')}",
             f"- held-out accuracy after the last round: {last.get('accuracy')}; {fed.get('rejected', 0)} update(s) "
             f"rejected, {fed.get('failed', 0)} client failure(s) (per round in `config.json`, \"history\")"]
    privacy = fed.get("privacy")
    if privacy:
        lines.append(f"- differential privacy: epsilon spent {privacy.get('epsilon')} at delta {privacy.get('delta')} "
                     f"(the largest over the clients; target {privacy.get('epsilon_target')}); "
                     f"{privacy.get('mechanism')}")
    else:
        lines.append("- no differential privacy: the clients' updates are exact")
    return lines
