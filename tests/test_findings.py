"""The report states findings: each stage's verdict is computed from the numbers it measured, by a rule with
a named bar (both verdicts reachable, the bar itself on the reproduced side), and "not measurable here" when
the number the rule needs is undefined; the quick demo gives every section a finding."""
import dataclasses
import json
import math
import os

import numpy as np
import pytest

from lucent_inhibit.findings import atlas, causal, combinations, completeness, scanning, synthesis, toy
from lucent_inhibit.findings.verdicts import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, VERDICTS, Finding

NAN = float("nan")


def _verdicts(findings):
    return [f.verdict for f in findings]


def test_finding_refuses_a_verdict_it_does_not_know():
    with pytest.raises(ValueError, match="'maybe'"):
        Finding("claim", "1.0", "maybe")
    assert Finding.judge("c", "m", True, "w").verdict == REPRODUCED
    assert Finding.judge("c", "m", False, "w").verdict == NOT_REPRODUCED
    assert Finding.judge("c", "m", None, "w").verdict == NOT_MEASURABLE


def test_completeness_verdict_needs_high_r_and_a_sum_that_adds_up():
    bar = completeness.MIN_R
    assert _verdicts([completeness.completeness_finding("l", bar, 1.0, 1.0),
                      completeness.completeness_finding("l", bar - 1e-3, 1.0, 1.0),
                      completeness.completeness_finding("l", 0.99, 0.2, 1.0),  # slope outside the sum check's range
                      completeness.completeness_finding("l", 0.99, 1.0, 0.01),  # E is a sliver of f
                      completeness.completeness_finding("l", NAN, NAN, NAN)]) == [
        REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE]
    f = completeness.completeness_finding("blocks_4_0_bn2_act", 0.5, 1.0, 1.0)
    assert "0.500" in f.measured and "blocks_4_0_bn2_act" in f.measured and str(bar) in f.why


def test_mti_verdict_needs_both_percentiles_high_and_activation_near_typical():
    edge = scanning.MTI_MIN_PERCENTILE
    near = scanning.MTI_NEAR_TYPICAL * 20.0  # MII-MEI range is 20 below
    good = dict(p_median=edge, n_median=edge, mti_mean=near, mei_mean=10.0, mii_mean=-10.0, typical=0.0, k=10)
    cases = [good, {**good, "n_median": edge - 0.5}, {**good, "p_median": 50.0},
             {**good, "mti_mean": near + 0.5}, {**good, "typical": -9.0, "mti_mean": -10.5},  # below the MIIs
             {**good, "p_median": NAN, "n_median": NAN}, {**good, "mei_mean": -10.0}]
    assert _verdicts([scanning.mti_finding(**c) for c in cases]) == [
        REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE, NOT_MEASURABLE]
    assert "10 images" in scanning.mti_finding(**cases[5]).why


def _disinhibition(mti_f, mti_dis, matched_f, mti_direction=(1.0, 0.0)):
    """A Disinhibition of 4 images per group: MEIs excited along channel 0, random images half along it."""
    from lucent_inhibit.causal.disinhibition import Disinhibition
    from lucent_inhibit.core.features import Feature

    f = {"meis": np.full(4, 10.0), "miis": np.full(4, -5.0), "mtis": np.asarray(mti_f, dtype=float),
         "random": np.asarray([0.0, 1.0, -1.0, 0.5]), "matched": np.asarray(matched_f, dtype=float)}
    dis = {**f, "mtis": np.asarray(mti_dis, dtype=float)}
    wobble = np.array([[0.0, 0.1], [0.05, 0.0], [0.0, 0.02], [0.1, 0.05]])
    exc = {"meis": np.tile([1.0, 0.0], (4, 1)), "random": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]]),
           "mtis": np.tile(mti_direction, (4, 1)) + wobble, "miis": np.zeros((4, 2)), "matched": np.tile([1.0, 0.0], (4, 1))}
    idx = {g: np.arange(v.size) for g, v in f.items()}
    return Disinhibition(Feature("l", unit=0), "a", "zero", idx, f, dis, dis, fraction=0.5,
                         completeness={"complete": True}, excitation=exc)


def test_disinhibition_finding_is_the_results_own_verdict_against_its_matched_control():
    held = [0.0, 0.5, -0.5, 0.2]
    fires = _disinhibition(held, [9.0, 10.0, 11.0, 10.0], matched_f=[10.0, 9.0, 11.0, 10.5])
    quiet = _disinhibition(held, [1.0, 2.0, 1.5, 1.0], matched_f=[10.0, 9.0, 11.0, 10.5])
    foreign = _disinhibition(held, [9.0, 10.0, 11.0, 10.0], matched_f=[10.0, 9.0, 11.0, 10.5],
                             mti_direction=(0.0, 1.0))
    undefined = _disinhibition(held, [1.0, 2.0, 1.5, 1.0], matched_f=[-1.0, -2.0, -1.0, -1.5])
    found = [causal.disinhibition_finding(d) for d in (fires, quiet, foreign, undefined)]
    assert _verdicts(found) == [fires.verdict, quiet.verdict, foreign.verdict, NOT_MEASURABLE] == [
        REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE]
    assert quiet.checks() == {"held_down": True, "released": False, "evidence": True}
    assert foreign.checks() == {"held_down": True, "released": True, "evidence": False}
    assert "bar 0.5" in found[1].why and not found[1].why.startswith(NOT_REPRODUCED)


def test_removal_verdict_needs_the_top_channels_above_every_random_draw():
    assert _verdicts([causal.removal_finding(1.0, [0.2, 0.9], 5), causal.removal_finding(0.9, [0.2, 0.9], 5),
                      causal.removal_finding(-0.1, [-0.5, -0.3], 5), causal.removal_finding(1.0, [], 5),
                      causal.removal_finding(NAN, [0.1], 5)]) == [
        REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE, NOT_MEASURABLE]


def test_inversion_verdict_counts_pairs_that_separate_by_sign():
    sep, flat = (0.0, 2.0, -2.0), (0.0, -1.0, -2.0)  # (image, excitatory, inhibitory)
    n_ok = math.ceil(synthesis.MIN_SEPARATED_SHARE * 4)
    at_bar = [sep] * n_ok + [flat] * (4 - n_ok)
    below = [sep] * (n_ok - 1) + [flat] * (5 - n_ok)
    found = [synthesis.separation_finding(r) for r in (at_bar, below, [], [(0.0, NAN, 1.0)])]
    assert _verdicts(found) == [REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE, NOT_MEASURABLE]
    assert f"{n_ok} of 4" in found[0].measured


def test_tense_verdict_needs_the_tension_raised_by_the_bar():
    g = synthesis.MIN_TENSION_GAIN
    assert _verdicts([synthesis.tension_finding(2.0, 2.0 * g), synthesis.tension_finding(2.0, 2.0 * g - 0.01),
                      synthesis.tension_finding(0.0, 0.0), synthesis.tension_finding(NAN, 1.0)]) == [
        REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE]
    assert "min(P, N)" in synthesis.tension_finding(1.0, 2.0).claim


def test_atlas_verdict_needs_icons_that_reach_their_targets_beyond_their_spread():
    bar = atlas.MIN_ICON_COSINE
    tight = lambda centre: centre + np.linspace(-0.01, 0.01, 21)  # noqa: E731 (21 icons, a narrow spread)
    assert _verdicts([atlas.icon_finding(tight(bar + 0.011)), atlas.icon_finding(tight(bar - 0.02)),
                      atlas.icon_finding([NAN] * 5), atlas.icon_finding([])]) == [
        REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE, NOT_MEASURABLE]
    wide = bar + np.linspace(-0.3, 0.35, 21)  # median above the bar, but its interval straddles it
    found = atlas.icon_finding(wide)
    assert found.verdict == NOT_MEASURABLE and "inside the interval" in found.why and "bootstrap" in found.measured
    controlled = atlas.icon_finding(tight(bar + 0.011), members=[0.3, 0.32, np.nan, 0.34])
    assert controlled.verdict == REPRODUCED and "control: the cells' own images reach 0.320 (median over 3 cells" in \
        controlled.measured and "control" not in atlas.icon_finding(tight(bar + 0.011)).measured


def test_combination_verdict_needs_a_collapsed_quadrant():
    c = combinations.COLLAPSE_FRACTION
    q = lambda worst: {"++": 1.0, "-+": 0.9, "--": worst, "+-": 0.95}  # noqa: E731
    found = [combinations.combination_finding(x) for x in (q(c), q(c + 0.01), q(-0.3),
                                                     {"++": -0.1, "-+": -0.2, "--": -0.3, "+-": 0.0},
                                                     {"++": 1.0, "-+": NAN, "--": NAN, "+-": NAN})]
    assert _verdicts(found) == [REPRODUCED, NOT_REPRODUCED, REPRODUCED, NOT_MEASURABLE, NOT_MEASURABLE]
    assert "quadrant --" in found[0].why
    # the most anti-correlated pair must collapse where the paper finds it: ++, not any quadrant
    named = [combinations.combination_finding(x, expect="++") for x in (
        {"++": 0.2, "-+": 0.9, "--": 1.0, "+-": 0.95}, {"++": 0.9, "-+": 0.9, "--": 0.2, "+-": 1.0},
        {"++": 0.6, "-+": 0.9, "--": 1.0, "+-": 0.95})]
    assert _verdicts(named) == [REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED]
    assert "quadrant ++, where the paper finds the collapse, reaches 0.90 of quadrant +-'s C; the weakest is -- " \
        "(0.20 of +-'s)" in named[1].why
    best = combinations.combination_finding({"++": 1.0, "-+": 0.9, "--": 0.2, "+-": 0.8}, expect="++")
    assert "++, where the paper finds the collapse, is the best reached here" in best.why
    assert combinations.NAMED_COLLAPSE == {"anticorrelated": "++"}


def test_interference_verdict_needs_superposition_tenser_two_feature_inputs_and_a_quiet_control():
    r, c = toy.MIN_TENSION_RATIO, toy.MAX_CONTROL_FRACTION
    ctl = lambda t, shared=0: {"m": 12, "shared_units": shared, "mean_tension_one": 0.0, "mean_tension_two": t}  # noqa: E731
    found = [toy.interference_finding(5, 8, 0.1, 0.1 * r + 0.001, ctl(0.0)),
             toy.interference_finding(4, 8, 0.1, 1.0, ctl(0.0)), toy.interference_finding(6, 8, 0.1, 0.1 * r, ctl(0.0)),
             toy.interference_finding(6, 8, 0.0, 0.0, ctl(0.0)), toy.interference_finding(6, 8, NAN, 0.3, ctl(0.0)),
             toy.interference_finding(6, 8, 0.1, 0.4, ctl(c * 0.4)),
             toy.interference_finding(6, 8, 0.1, 0.4, ctl(c * 0.4 + 0.001)),
             toy.interference_finding(6, 8, 0.1, 0.4, ctl(0.0, shared=1)),
             toy.interference_finding(6, 8, 0.1, 0.4, None)]
    assert _verdicts(found) == [REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE,
                                REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE]
    assert "no superposition" in found[1].why
    assert "does not need shared units" in found[6].why and "not free of superposition" in found[7].why
    assert "control (12 units, 0 shared)" in found[5].measured


@pytest.mark.slow
def test_quick_demo_states_a_finding_in_every_section(tmp_path, one_thread):
    from lucent_inhibit.app.stages.demo import DemoConfig, run_demo

    small = dataclasses.replace(DemoConfig.quick(), n_images=16, size=96, batch_size=8, completeness_images=8,
                                atlas_select=16, combo_images=12, toy_steps=60)
    report = run_demo(out=str(tmp_path / "report"), config=small, progress=False)
    assert len(report.sections) == 9 and all(s.findings for s in report.sections)
    assert all(f.verdict in VERDICTS and f.measured and f.why for _, f in report.findings)
    with open(tmp_path / "report" / "findings.json") as fh:
        written = json.load(fh)
    assert [(w["section"], w["verdict"]) for w in written] == [(t, f.verdict) for t, f in report.findings]
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.index('id="findings"') < page.index('id="s0"')
    assert os.path.exists(tmp_path / "report" / "numbers.json")
    # a notebook gets the report's verdicts from the saved results alone (a fresh process: nothing else imported)
    code = ("import json, sys, lucent_inhibit as li\n"
            "out = sys.argv[1]\n"
            "found = [f.to_dict() for name in ('completeness/completeness', 'scan/scan', 'tense/tense', 'atlas/atlas')\n"
            "         for f in li.findings.judge(li.load_result(f'{out}/{name}.npz'))]\n"
            "print(json.dumps(found))")
    import subprocess
    import sys

    printed = subprocess.run([sys.executable, "-c", code, str(tmp_path / "report")], capture_output=True, text=True,
                             check=True).stdout
    from_files = [(f["claim"], f["verdict"], f["measured"]) for f in json.loads(printed)]
    in_report = [(f.claim, f.verdict, f.measured) for _, f in report.findings]
    assert from_files and set(from_files) <= set(in_report)


def test_judge_names_the_results_it_has_findings_for():
    from lucent_inhibit.findings import judge

    with pytest.raises(ValueError, match="no finding is defined for a dict; findings exist for .*ScanResult"):
        judge({})
