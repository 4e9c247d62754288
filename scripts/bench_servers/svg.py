"""PSS-over-time plot as a hand-written SVG (no plotting library): one panel per server, one
line per configuration; by default time is relative to the moment the load ended (0 = going
idle)."""
from xml.sax.saxutils import escape

STYLE = {
    "glibc": ("#555555", "", 1.6),
    "arena2": ("#1f77b4", "", 1.6),
    "jemalloc": ("#ff7f0e", "", 1.6),
    "trim-ref": ("#2ca02c", "6,4", 2.0),
    "memtrim": ("#d62728", "", 2.6),
    "memtrim-passive": ("#d62728", "1,3", 1.8),
    "memtrim-1m": ("#9467bd", "2,2", 1.8),
    "memtrim-nopy": ("#9467bd", "5,3", 2.0),
    "jemalloc-bg": ("#ff7f0e", "2,2", 1.8),
}
W, PANEL_H, ML, MR, MT, MB = 920, 330, 70, 170, 40, 46


def _nice_step(span, target=6):
    raw = span / target
    for e in range(-2, 7):
        for m in (1, 2, 2.5, 5):
            step = m * 10 ** e
            if step >= raw:
                return step
    return raw


def _ticks(lo, hi, target=6):
    step = _nice_step(hi - lo, target)
    t = (lo // step) * step
    out = []
    while t <= hi + 1e-9:
        if t >= lo - 1e-9:
            out.append(round(t, 6))
        t += step
    return out


def render(panels, title, goal_s=10, xlabel="seconds since the load ended (negative: under load)", vlines=None):
    """panels: list of (panel title, {config: [(t_rel_s, pss_mib), ...]}) or (panel title,
    series, {config: (t_rel_s, label)}): a moment marked on that configuration's line. vlines:
    [(x, label)] drawn across every panel (default: going idle at 0 and the goal at +goal_s)."""
    if vlines is None:
        vlines = ((0, "idle"), (goal_s, f"+{goal_s} s"))
    h = MT + len(panels) * PANEL_H + 10
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" '
         f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{h}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>']
    for k, (ptitle, series, *rest) in enumerate(panels):
        marks = rest[0] if rest else {}
        top = MT + k * PANEL_H + 24
        bottom = MT + (k + 1) * PANEL_H - MB
        left, right = ML, W - MR
        pts = [p for s in series.values() for p in s]
        if not pts:
            continue
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y1 = max(p[1] for p in pts) * 1.08
        y0 = 0.0
        sx = lambda x: left + (x - x0) / ((x1 - x0) or 1) * (right - left)  # noqa: E731
        sy = lambda y: bottom - (y - y0) / ((y1 - y0) or 1) * (bottom - top)  # noqa: E731
        o.append(f'<text x="{left}" y="{top - 8}" font-size="13" font-weight="bold">{escape(ptitle)}</text>')
        for yt in _ticks(y0, y1, 8):
            y = sy(yt)
            o.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
            o.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{yt:g}</text>')
        for xt in _ticks(x0, x1, 10):
            x = sx(xt)
            o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#333"/>')
            o.append(f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle">{xt:g}</text>')
        o.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#333"/>')
        o.append(f'<text x="{(left + right) / 2}" y="{bottom + 34}" text-anchor="middle">'
                 f'{escape(xlabel)}</text>')
        o.append(f'<text transform="translate({left - 48},{(top + bottom) / 2}) rotate(-90)" text-anchor="middle">'
                 f'summed worker PSS (MiB)</text>')
        for xv, label in vlines:
            if x0 <= xv <= x1:
                x = sx(xv)
                o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="#999" stroke-dasharray="3,3"/>')
                o.append(f'<text x="{x + 3:.1f}" y="{top + 12}" fill="#777">{label}</text>')
        ly = top + 6
        for name, s in series.items():
            color, dash, width = STYLE.get(name, ("#8c564b", "", 1.6))
            d = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in s)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            o.append(f'<polyline fill="none" stroke="{color}" stroke-width="{width}"{dash_attr} '
                     f'stroke-linejoin="round" points="{d}"/>')
            o.append(f'<line x1="{right + 14}" x2="{right + 40}" y1="{ly + 10}" y2="{ly + 10}" stroke="{color}" '
                     f'stroke-width="{width}"{dash_attr}/>')
            last = f" {s[-1][1]:.0f}" if s else ""
            o.append(f'<text x="{right + 46}" y="{ly + 14}">{escape(name)}{last}</text>')
            ly += 20
            if name in marks and marks[name][0] is not None and s:
                tm, label = marks[name]
                vm = min(s, key=lambda p: abs(p[0] - tm))[1]
                x, y = sx(tm), sy(vm)
                o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="{color}" stroke-width="1" '
                         f'stroke-dasharray="1,3"/>')
                o.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="white" stroke="{color}" stroke-width="2"/>')
                o.append(f'<text x="{x + 6:.1f}" y="{bottom - 8}" fill="{color}">{escape(label)}</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"
