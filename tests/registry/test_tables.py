"""``cifar10 registry list/show`` for people: nothing is cut at 80 columns."""

from __future__ import annotations

from rich.console import Console

from registry.tables import print_list, print_show


def _row(version: int, aliases: list[str]) -> dict:
    return {
        "version": version, "aliases": aliases, "precision": "int8", "test_accuracy": "0.9322",
        "test_images": 5000, "parity_passed": True, "parity_agreement": "0.9990",
        "parity_max_abs_logit": "1.234e-01", "created": "2026-12-06 08:00:00",
        "source": {"kind": "training run", "run_id": "0123456789abcdef0123"},
        "alias_periods": [{"alias": "production", "from": "2026-12-06T08:00:00+00:00", "by": "promote",
                           "until": None, "ended_by": None}],
    }  # fmt: skip


MODEL = {
    "name": "cifar10-wrn-production-candidate-int8",
    "versions": [_row(1, []), _row(2, ["production", "staging"])],
    "history": {"production": [1, 2]},
    "aliases": {"production": 2},
}


def _text(width: int, show: bool) -> str:
    console = Console(width=width, record=True, force_terminal=False)
    print_show(MODEL, console) if show else print_list([MODEL], console)
    return console.export_text()


def test_every_fact_is_whole_at_80_columns():
    for show in (False, True):
        text = _text(80, show)
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
        for fact in (MODEL["name"], "93.22 % of 5,000", "production, staging", "training run 0123456789ab"):
            assert fact in text, (show, fact)


def test_a_wide_terminal_still_gets_the_table():
    text = _text(250, show=False)
    assert "test accuracy" in text and "…" not in text
