"""The tables scripts/bench-soak writes: the main one (a row per configuration), what memtrim
did in the workers under the load, and the issue's goals for memtrim met or not, with the
reclaimable bound that says what is attainable."""

MEMTRIM_GOALS = ("memtrim", "memtrim-je")  # the configurations the goals are stated for


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def reclaimable(fig, c):
    """R: glibc's idle floor - c's (MiB), what releasing takes off at most; None without both."""
    a, b = fig.get("glibc", {}).get("floor"), fig[c]["floor"]
    return a - b if a is not None and b is not None else None


def attainable_mean(fig, c):
    """The target mean under load that R allows: glibc's mean - 0.5 R."""
    r, m = reclaimable(fig, c), fig.get("glibc", {}).get("mean")
    return m - 0.5 * r if r is not None and m is not None else None


def table(res, fig, configs, memtrim_configs):
    base = fig.get("glibc", {})
    base_cpu = res["configs"].get("glibc", {}).get("cpu_ms_per_req")
    rows = ["| config | requests done | failed | worker CPU ms/req | PSS before (MiB) | peak | mean under load | "
            "slope, 2nd half (MiB/h) | idle floor | R | mean vs glibc | peak vs glibc | CPU/req vs glibc | "
            "latency p50 / p99 (ms) | workers replaced | releases |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in configs:
        r, f = res["configs"][c], fig[c]
        rr = fmt(reclaimable(fig, c), "+.1f") if c in memtrim_configs else ""
        rows.append(
            f"| {c} | {r['ok']} | {r['failed']} | {fmt(r['cpu_ms_per_req'])} | {fmt(f['before'], '.0f')} | "
            f"{fmt(f['peak'], '.0f')} | {fmt(f['mean'], '.1f')} | {fmt(f['slope'], '+.1f')} | {fmt(f['floor'], '.1f')} | "
            f"{rr} | {fmt(ratio(f['mean'], base.get('mean')), '.3f')} | {fmt(ratio(f['peak'], base.get('peak')), '.3f')} | "
            f"{fmt(ratio(r['cpu_ms_per_req'], base_cpu), '.3f')} | {fmt(r['latency_ms_p50'], '.0f')} / "
            f"{fmt(r['latency_ms_p99'], '.0f')} | {f['restarts']} | {r.get('releases', '')} |")
    targets = [f"{c} {fmt(attainable_mean(fig, c))} (R {fmt(reclaimable(fig, c))})"
               for c in configs if c in memtrim_configs]
    if targets:
        rows += ["", "R: the reclaimable bound, glibc's idle floor - the configuration's idle floor (MiB): what "
                 "releasing retained memory takes off at most. The mean under load it makes attainable, glibc's mean "
                 f"- 0.5 R (MiB): {'; '.join(targets)}."]
    return rows


def did_table(res, configs, memtrim_configs):
    """What memtrim did, from the workers' pages at the end of the load ('-': the library does
    not publish that field)."""
    rows = ["## What memtrim did", "",
            "From the workers' stats pages as the load ended, summed over the workers (budget used: the highest "
            "worker's). Busy: releases for retained memory under load (releases_by_reason retained); idle: releases "
            "for quiet time; release CPU: release_cpu_us over the workers' CPU (utime+stime, /proc/PID/stat); "
            "budget used: budget_used_permille, the busy budget's use in its window; pages made non-resident by the "
            "releases and pages of them found resident again (released_pages, refault_pages). "
            "-: not published by this build of the library.", "",
            "| config | workers read | busy releases | idle releases | release CPU (ms) | share of worker CPU | "
            "budget used (‰) | released pages | refaulted pages |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in configs:
        if c not in memtrim_configs:
            continue
        d = res["configs"][c]["at_load_end"]
        share = ratio(d["release_cpu_ms"], d["worker_cpu_ms"])
        share = "-" if share is None else f"{share * 100:.2f} %"
        rows.append(f"| {c} | {d['workers']} | {fmt(d['busy_releases'], 'd')} | {fmt(d['idle_releases'], 'd')} | "
                    f"{fmt(d['release_cpu_ms'])} | {share} | "
                    f"{fmt(d['budget_used_permille'], 'd')} | {fmt(d['released_pages'], 'd')} | "
                    f"{fmt(d['refault_pages'], 'd')} |")
    return rows


def goals(res, fig, configs):
    """{config: [{goal, met (None: cannot be judged), figures}]} for the MEMTRIM_GOALS run."""
    def g(c, key):
        return fig.get(c, {}).get(key)

    def cpu(c):
        return res["configs"].get(c, {}).get("cpu_ms_per_req")

    out = {}
    for c in configs:
        if c not in MEMTRIM_GOALS:
            continue
        checks = [
            ("mean under load <= 0.85 x glibc", g(c, "mean"), "glibc", g("glibc", "mean"), 0.85, ".1f"),
            ("mean under load <= jemalloc-bg", g(c, "mean"), "jemalloc-bg", g("jemalloc-bg", "mean"), 1.0, ".1f"),
            ("peak <= 0.9 x glibc", g(c, "peak"), "glibc", g("glibc", "peak"), 0.9, ".0f"),
            ("slope <= glibc's", g(c, "slope"), "glibc", g("glibc", "slope"), 1.0, "+.1f"),
            ("CPU/req <= 1.02 x glibc", cpu(c), "glibc", cpu("glibc"), 1.02, ".2f"),
            ("0 failed", res["configs"][c]["failed"], None, 0, 1.0, ".0f"),
        ]
        rows = []
        for goal, v, other, base, k, spec in checks:
            if v is None or base is None:
                why = f"{other} not run" if other not in configs else "no figure"
                rows.append({"goal": goal, "met": None, "figures": why})
                continue
            bound = base * k
            met = v <= bound
            figures = f"{format(v, spec)} {'<=' if met else '>'} {format(bound, spec)}"
            rows.append({"goal": goal, "met": met, "figures": figures})
        out[c] = rows
    return out


def goals_table(by_config):
    if not by_config:
        return []
    names = [x["goal"] for x in next(iter(by_config.values()))]
    rows = ["## Goals", "",
            "Per configuration, each goal met or not, with its figures (MiB, MiB/h, ms; the bound is the glibc or "
            "jemalloc-bg figure times the factor).", "",
            "| config | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c, checks in by_config.items():
        cells = [f"{'-' if x['met'] is None else 'met' if x['met'] else 'not met'}: {x['figures']}" for x in checks]
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    return rows
