"""The fault soak's report (`switchboard bench faults --json`): what it counts, from the
records of a run (the soak itself needs two Asterisks and minutes: a README line says how
to run it)."""

from __future__ import annotations

from collections import Counter

from web.bench.fault_soak import FAULT_KINDS, CallRecord, FaultRecord, report
from web.cli import build_parser


def test_the_report_counts_calls_outcomes_silences_leaks_and_recovery_per_fault_kind() -> None:
    calls = [CallRecord("+1", 1.0, 2.0, "connected"), CallRecord("+2", 3.0, 4.0),
             CallRecord("+3", 5.0, None, "", "never heard the AI: 503"),
             CallRecord("", 6.0, None, "", "originate refused")]  # never placed
    faults = [FaultRecord("asterisk_restart", 10.0, 14.0, 3.5),
              FaultRecord("asterisk_restart", 40.0, 43.0, 2.5),
              FaultRecord("controller_kill", 70.0, 70.5, None, "RuntimeError: x")]
    out = report(1.5, calls, faults, outcomes=Counter({"completed_by_ai": 1,
                                                       "pbx_restart": 1}),
                 open_rows=[], no_row=["+3"], silent=(1, 1),
                 leaks={"pbx": [], "carrier": ["PJSIP/switchboard-0001"], "process": []})
    assert (out["calls_placed"], out["calls_not_placed"]) == (3, 1)
    assert out["calls_with_outcome"] == 2
    assert out["calls_refused_while_pbx_restarted"] == 1
    assert out["calls_never_heard_ai"] == 1
    assert out["handoffs"] == {"connected": 1}
    assert (out["calls_heard_silence_over_2s"], out["of_which_overlapping_a_fault"]) == (1, 1)
    assert out["leaks"]["carrier"] == ["PJSIP/switchboard-0001"]
    assert set(out["faults"]) == set(FAULT_KINDS)
    restart = out["faults"]["asterisk_restart"]
    assert restart["count"] == 2 and restart["recovery_s"]["max"] == 3.5
    kill = out["faults"]["controller_kill"]
    assert (kill["count"], kill["not_recovered"], kill["errors"]) == (1, 1, ["RuntimeError: x"])
    assert out["faults"]["asterisk_pause"]["count"] == 0


def test_the_command_takes_minutes_a_seed_and_json() -> None:
    args = build_parser().parse_args(["bench", "faults", "--minutes", "2", "--seed", "5",
                                      "--json"])
    assert (args.bench_command, args.minutes, args.seed, args.json) == ("faults", 2.0, 5, True)
    assert build_parser().parse_args(["bench", "faults"]).minutes == 10.0
