"""Print the README's benchmark section from benchmarks/results/*.json, so quoted figures match a run.

    python benchmarks/readme_tables.py > /tmp/section.md   # then paste over "## Benchmarks" in README.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
STREAMS = [("digits_perm", "B1 digits perm."), ("rbf_abrupt", "RBF abrupt"), ("rbf_gradual", "RBF gradual"),
           ("led_abrupt", "LED abrupt"), ("led_gradual", "LED gradual")]
MODELS = [("streamlearn", "**streamlearn**"), ("softmax", "river SoftmaxRegression"),
          ("knn-w1000", "river KNN (window 1000)"), ("arf", "river ARF"), ("hat", "river HAT"),
          ("online-mlp", "online MLP, per sample"), ("fine-tune", "same encoder, plain fine-tuning"),
          ("reset-on-drift", "fine-tuning, reset on drift")]
RIVER = ("softmax", "knn-w1000", "arf", "hat")
FEWSHOT = [("streamlearn (Learner.embed)", "**streamlearn** (`Learner.embed`)"),
           ("fine-tune encoder (plain online SGD)", "same encoder, plain online SGD"),
           ("raw features, standardized", "raw features, standardised"),
           ("raw features, unscaled", "raw features, unscaled"), ("random encoder (untrained)", "random encoder")]


def _pct(score: dict) -> str:
    return f"{100 * score['mean']:.1f} ± {100 * score['ci95']:.1f}"


def quality(q: dict) -> list[str]:
    out = ["| model | " + " | ".join(t for _, t in STREAMS) + " |", "|---" * (len(STREAMS) + 1) + "|"]
    for key, name in MODELS:
        cells = []
        for stream, _ in STREAMS:
            m = q["streams"][stream]["models"][key]
            cells.append(f"{m['accuracy']:.3f} / {m['post_switch_accuracy']:.3f}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def fewshot(q: dict) -> list[str]:
    out = ["| embedding | digits 0-4 → 5-9, 1-shot | 5-shot | synthetic 40 → 20 classes, 1-shot | 5-shot |",
           "|---|---|---|---|---|"]
    for key, name in FEWSHOT:
        d, s = q["fewshot"]["digits"]["scores"][key], q["fewshot"]["synthetic"]["scores"][key]
        out.append(f"| {name} | {_pct(d['1-shot'])} | {_pct(d['5-shot'])} | {_pct(s['1-shot'])} | {_pct(s['5-shot'])} |")
    return out


def targets(q: dict) -> list[str]:
    s = q["streams"]
    b1 = s["digits_perm"]["models"]
    others = {k: v for k, v in b1.items() if k != "streamlearn"}
    best = max(others, key=lambda k: others[k]["accuracy"])
    best_post = max(others, key=lambda k: others[k]["post_switch_accuracy"])
    pre = 100 * (b1["streamlearn"]["accuracy"] - others[best]["accuracy"])
    post = 100 * (b1["streamlearn"]["post_switch_accuracy"] - others[best_post]["post_switch_accuracy"])
    fs = q["fewshot"]

    def gap(split: str, other: str, shot: str) -> float:
        sc = fs[split]["scores"]
        return 100 * (sc["streamlearn (Learner.embed)"][shot]["mean"] - sc[other][shot]["mean"])

    raw = {split: max(("raw features, standardized", "raw features, unscaled"),
                      key=lambda r: fs[split]["scores"][r]["5-shot"]["mean"]) for split in fs}
    b3 = []
    for stream in ("rbf_abrupt", "rbf_gradual", "led_abrupt", "led_gradual"):
        m = s[stream]["models"]
        river = max(RIVER, key=lambda k: m[k]["accuracy"])
        b3.append((stream, m["streamlearn"]["accuracy"], river, m[river]["accuracy"]))
    rs = {r["model"].split(" ")[0]: r for r in q["replay_speed"]}
    ratio = rs["streamlearn"]["samples_per_s"] / rs["online-mlp"]["samples_per_s"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        ("B1 prequential ≥ best baseline + 5 points", f"+{pre:.1f} (vs {best})", verdict(pre >= 5)),
        ("B1 first 100 after a switch ≥ best baseline + 10", f"+{post:.1f} (vs {best_post})", verdict(post >= 10)),
    ]
    for split in ("synthetic", "digits"):
        g = [gap(split, raw[split], shot) for shot in ("1-shot", "5-shot")]
        rows.append((f"B2 {split} ≥ raw nearest-mean ({raw[split].split(', ')[1]}) + 5, 1 / 5 shots",
                     f"{g[0]:+.1f} / {g[1]:+.1f}", verdict(min(g) >= 5)))
        g = [gap(split, "fine-tune encoder (plain online SGD)", shot) for shot in ("1-shot", "5-shot")]
        rows.append((f"B2 {split} above plain online SGD", f"{g[0]:+.1f} / {g[1]:+.1f}", verdict(min(g) > 0)))
    for stream, ours, river, theirs in b3:
        rows.append((f"B3 {stream} ≥ best river baseline", f"{ours:.3f} vs {theirs:.3f} ({river})",
                     verdict(ours >= theirs)))
    rows.append(("replay ≥ 5,000 samples/s (64-d)", f"{rs['streamlearn']['samples_per_s']:,.0f}",
                 verdict(rs["streamlearn"]["samples_per_s"] >= 5000)))
    rows.append(("replay ≥ 10x the per-sample online MLP, equal or better accuracy",
                 f"{ratio:.1f}x at {rs['streamlearn']['accuracy']:.3f} vs {rs['online-mlp']['accuracy']:.3f}",
                 verdict(ratio >= 10 and rs["streamlearn"]["accuracy"] >= rs["online-mlp"]["accuracy"])))
    return ["| target | measured | |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]


def throughput(t: dict) -> list[str]:
    lat, d = t["latency"], t["daemon"]
    rss = d["rss"]
    return [
        f"One partition, {t['samples']:,} pre-produced 64-d demo samples, local broker ({t['environment']['date']}):",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| raw ceiling: kafka-python consume + republish, no learning | {t['raw']['samples_per_s']:,.0f} samples/s | |",
        f"| the learner alone (`Learner.process`, no Kafka) | {t['parts']['learner_alone_samples_per_s']:,.0f} samples/s | |",
        f"| daemon (`streamlearn run`) | {d['samples_per_s']:,.0f} samples/s | ≥ 5,000: "
        f"{'met' if d['samples_per_s'] >= 5000 else '**missed**'} |",
        f"| daemon / raw | {100 * t['ratio']:.1f}% | ≥ 50%: {'met' if t['ratio'] >= 0.5 else '**missed**'} |",
        f"| end-to-end latency at {lat['offered_rate']:,.0f} samples/s, p50 / p99 | {1000 * lat['p50_s']:.1f} / "
        f"{1000 * lat['p99_s']:.1f} ms | p99 < 100 ms: {'met' if lat['p99_s'] < 0.1 else '**missed**'} |",
        f"| resident memory after warm-up ({rss[1]['samples']:,} → {rss[-1]['samples']:,} samples) | "
        f"{rss[1]['rss_mb']:.1f} → {rss[-1]['rss_mb']:.1f} MB | flat: "
        f"{'met' if abs(t['rss_last_minus_first_mb_after_warmup']) < 10 else '**missed**'} |",
    ]


def main() -> int:
    q = json.loads((RESULTS / "quality.json").read_text())
    t = json.loads((RESULTS / "throughput.json").read_text())
    for block in (quality(q), [""], fewshot(q), [""], targets(q), [""], throughput(t)):
        sys.stdout.write("\n".join(block) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
