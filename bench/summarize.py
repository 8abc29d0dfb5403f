"""Issue 6 targets, EduGate vs ThingsBoard IoT Gateway, from one sitting's harness results.

    /tmp/bench-venv/bin/python bench/summarize.py [--results bench/results]

Reads the result JSON files that ``bench/compare_suite.sh`` left in
``bench/results/{tbgw,edugate}/`` (and, for W2, the simulator's read times
and the counter's arrival times in each run's scratch folder, if it still
exists) and prints Markdown: one row per target with both gateways and the
ratio. The harness's own tables come from its ``report.py``.

Two figures are computed here rather than taken from the harness:

* *broker back -> first backlog poll*: the first arrival **after the broker
  restart** of a poll read during the outage. The harness's
  ``first_outage_poll_arrival_after_restart_s`` takes the earliest arrival of
  any outage poll, which for a gateway that delivers within ~15 ms includes
  the polls read in the instant between the harness noting "broker stopped"
  and Mosquitto actually closing; it then comes out negative (-60 s).
* *skipped polls* (EduGate): from the gateway's final counters, logged at
  shutdown (``gateway stopped: {...}``), compared with the polls the
  simulator served and the polls the schedule asked for.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(results: Path, gateway: str) -> list[dict]:
    out = []
    for path in sorted((results / gateway).glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "kind" in data:
            data["_file"] = path.name
            out.append(data)
    return out


def w1(rows: list[dict], devices: int, poll: int, layout: str) -> list[dict]:
    return [r for r in rows if r["kind"] == "w1" and r["workload"]["devices"] == devices
            and r["workload"]["poll_ms"] == poll and r["workload"]["layout"] == layout]


def med(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def dp_per_cpu_s(runs: list[dict]) -> tuple[float | None, str]:
    per = []
    for r in runs:
        cpu = r.get("processes", {}).get("gateway", {}).get("cpu_pct")
        dps = r.get("window", {}).get("delivered_dps")
        if cpu and dps:
            per.append(dps / (cpu / 100))
    cpus = [r.get("processes", {}).get("gateway", {}).get("cpu_pct") for r in runs]
    return med(per), f"{len(runs)} run(s), CPU {', '.join(f'{c:.1f}' for c in cpus if c is not None)} %"


def lossless(r: dict) -> bool:
    e2e = r.get("e2e", {})
    rss = r.get("processes", {}).get("gateway", {}).get("rss_mb_per_min")
    return (r["sequence"]["missing_inside"] == 0 and e2e.get("delivered_fraction") == 1.0
            and (r.get("delivered_ratio") or 0) >= 0.95 and rss is not None and abs(rss) < 2)


def best_sustained(rows: list[dict]) -> tuple[float, str]:
    best, where = 0.0, "-"
    for r in rows:
        if r["kind"] == "w1" and lossless(r) and r["expected_dps"] > best:
            w = r["workload"]
            best, where = r["expected_dps"], f"{w['devices']}×{w['registers']} @ {w['poll_ms']} ms {w['layout']}"
    return best, where


def final_stats(r: dict) -> dict:
    finals = r.get("gateway_log", {}).get("final_stats") or []
    return finals[-1] if finals else {}


def first_backlog_after_restart(r: dict, device_name) -> float | None:
    phases = r.get("phases")
    run_dir = Path(r.get("run_dir", ""))
    try:
        reads = json.loads((run_dir / "sim-reads.json").read_text())
        arrivals = json.loads((run_dir / "sub-arrivals.json").read_text())
    except (OSError, ValueError):
        return None
    if not phases:
        return None
    t_down, t_up = phases["t_down"], phases["t_up"]
    best = None
    for unit, times in reads.items():
        got = dict((seq, t) for seq, t in arrivals.get(device_name(int(unit)), []))
        for index, t_read in enumerate(times):
            t_arr = got.get(index + 1)
            if t_down <= t_read < t_up and t_arr is not None and t_arr >= t_up and (best is None or t_arr < best):
                best = t_arr
    return round(best - t_up, 2) if best is not None else None


def names(gateway: str):
    if gateway == "tbgw":
        return lambda unit: f"Lab Sensor {unit:03d}"
    return lambda unit: f"lab-{unit:03d}"


def fmt(v, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}".replace(",", " ")


def ratio(a, b, digits: int = 1) -> str:
    return f"{a / b:.{digits}f}×" if a and b else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args()
    results = Path(args.results)
    tb, eg = load(results, "tbgw"), load(results, "edugate")

    print("| target (issue 6) | ThingsBoard IoT Gateway | EduGate | ratio |\n|---|---|---|---|")
    for layout in ("per-register", "block"):
        t, t_note = dp_per_cpu_s(w1(tb, 100, 1000, layout))
        e, e_note = dp_per_cpu_s(w1(eg, 100, 1000, layout))
        print(f"| datapoints per CPU-second, 100×10 @ 1 s, {layout} | {fmt(t)} ({t_note}) | {fmt(e)} ({e_note}) "
              f"| {ratio(e, t)} |")
    for layout in ("per-register", "block"):
        t, t_note = dp_per_cpu_s(w1(tb, 100, 100, layout))
        e, e_note = dp_per_cpu_s(w1(eg, 100, 100, layout))
        print(f"| datapoints per CPU-second, 10 000 dp/s asked (100×10 @ 100 ms), {layout} | {fmt(t)} ({t_note}) "
              f"| {fmt(e)} ({e_note}) | {ratio(e, t)} |")
    tb_best, tb_where = best_sustained(tb)
    eg_best, eg_where = best_sustained(eg)
    print(f"| highest W1 point with no loss, all window polls delivered, flat RSS | {fmt(tb_best)} dp/s "
          f"({tb_where}) | {fmt(eg_best)} dp/s ({eg_where}) | {ratio(eg_best, tb_best)} |")
    for layout in ("per-register", "block"):
        runs_tb, runs_eg = w1(tb, 100, 100, layout), w1(eg, 100, 100, layout)
        if not runs_tb or not runs_eg:
            continue

        def describe(runs: list[dict], edugate: bool) -> tuple[str, float | None]:
            dps = med([r["window"]["delivered_dps"] for r in runs])
            rss = med([r["processes"]["gateway"]["rss_mb_mean"] for r in runs])
            growth = max(r["processes"]["gateway"]["rss_mb_per_min"] for r in runs)
            gaps = [r["sequence"]["missing_inside"] for r in runs]
            delivered = [r["e2e"].get("delivered_fraction") for r in runs]
            text = (f"{fmt(dps)} dp/s arrive, RSS {fmt(rss)} MB (growth up to {fmt(growth, 1)} MB/min), "
                    f"polls missing (gaps) {', '.join(map(str, gaps))}, window polls delivered "
                    f"{', '.join(str(d) for d in delivered)}")
            if edugate:
                text += f", skipped polls counted {', '.join(str(final_stats(r).get('skipped_polls')) for r in runs)}"
            return text + f" ({len(runs)} run(s))", dps

        text_tb, dps_tb = describe(runs_tb, False)
        text_eg, dps_eg = describe(runs_eg, True)
        print(f"| 10 000 dp/s asked (100×10 @ 100 ms, {layout}) | {text_tb} | {text_eg} | {ratio(dps_eg, dps_tb)} |")
    over = [r for r in eg if r["kind"] == "w1" and r.get("delivered_ratio") and r["delivered_ratio"] < 0.95]
    for r in over:
        fs = final_stats(r)
        w = r["workload"]
        g = r["processes"]["gateway"]
        asked = fs.get("uptime_s", 0) * w["devices"] * 1000 / w["poll_ms"]
        served = r["sequence"]["polls_served_total"]
        print(f"| EduGate overloaded ({w['devices']}×{w['registers']} @ {w['poll_ms']} ms, {fmt(r['expected_dps'])} "
              f"dp/s asked) | – | {fmt(r['window']['delivered_dps'])} dp/s arrive, RSS "
              f"{fmt(g['rss_mb_mean'])} MB ({fmt(g['rss_mb_per_min'], 1)} MB/min); polls asked by the schedule "
              f"≈ {fmt(asked)}, served {fmt(served)} + skipped and counted "
              f"{fmt(fs.get('skipped_polls'))} = {fmt(served + (fs.get('skipped_polls') or 0))}; gaps "
              f"{r['sequence']['missing_inside']} | |")
    idle_tb = [r for r in tb if r["kind"] == "idle"]
    idle_eg = [r for r in eg if r["kind"] == "idle"]
    if idle_tb and idle_eg:
        a, b = idle_tb[0]["processes"]["gateway"], idle_eg[0]["processes"]["gateway"]
        print(f"| idle CPU % / RSS MB (0 devices, 30 s) | {a['cpu_pct']} / {fmt(a['rss_mb_mean'])} | {b['cpu_pct']} / "
              f"{fmt(b['rss_mb_mean'])} | CPU: {a['cpu_pct']} % vs {b['cpu_pct']} % (psutil, 0.01 s resolution); "
              f"RSS: EduGate {ratio(b['rss_mb_mean'], a['rss_mb_mean'], 2)} ThingsBoard's "
              f"({'smaller' if b['rss_mb_mean'] < a['rss_mb_mean'] else 'larger'}) |")

    def w2(rows, devices, storage, kill):
        return [r for r in rows if r["kind"] == "w2" and r["workload"]["devices"] == devices
                and r["workload"]["storage"] == storage and r["kill_during_outage"] == kill]

    for storage in ("memory", "sqlite"):
        for r_tb in w2(tb, 100, storage, False):
            r_eg = (w2(eg, 100, "sqlite", False) or [None])[0]
            a = first_backlog_after_restart(r_tb, names("tbgw"))
            b = first_backlog_after_restart(r_eg, names("edugate")) if r_eg else None
            print(f"| broker back → first backlog poll arrives, s (100×10 @ 1 s, TB {storage}) | {fmt(a, 2)} "
                  f"| {fmt(b, 2)} | {ratio(a, b)} faster |")
            ca, cb = r_tb.get("catch_up_s"), r_eg.get("catch_up_s") if r_eg else None
            print(f"| 60 s outage at 1000 dp/s: broker back → caught up, s (TB {storage}) | {fmt(ca, 1)} "
                  f"| {fmt(cb, 1)} | {ratio(ca, cb)} faster (harness polls every 0.5 s) |")
    for storage in ("memory", "sqlite"):
        for r_tb in w2(tb, 10, storage, True):
            r_eg = (w2(eg, 10, "sqlite", True) or [None])[0]
            s_tb, s_eg = r_tb["sequence"], r_eg["sequence"] if r_eg else None

            def lost(s):
                return s["missing_inside"] + s["missing_before_first"] if s else None
            print(f"| kill -9 30 s into a 60 s outage (10×10 @ 1 s, TB {storage}): polls lost / duplicated "
                  f"| {lost(s_tb)} / {s_tb['duplicates']} | {lost(s_eg)} / {s_eg['duplicates'] if s_eg else '–'} | |")
    notes = [f"- note: {r['gateway']} {r['_file']}: {r['sequence']['duplicates']} polls arrived twice"
             for r in tb + eg if r["kind"] == "w2" and r["sequence"]["duplicates"]]
    if notes:
        print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
