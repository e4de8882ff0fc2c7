"""The report as one self-contained HTML page: inline CSS, figures and images as data URIs, no script."""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
from pathlib import Path

from PIL import Image

from aim_cli.certificates import Certificate, short
from aim_cli.io import atomic_open
from aim_cli.report.figures import curve_figure, recall_figure, tier_colour
from aim_cli.report.model import METRIC_NAMES, Cell, ReportData, TierResult

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; background: #f6f7f9;
       color: #1d2330; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
header { background: #1d2330; color: #fff; padding: 20px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c5cad6; font-size: 14px; }
section { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 16px 20px; margin-top: 20px; }
h2 { font-size: 17px; margin: 0 0 10px; }
p.method, p.note { color: #596173; font-size: 13px; margin: 6px 0 0; }
table { border-collapse: collapse; font-size: 13px; }
table.tiers { width: 100%; }
table.tiers td:first-child { white-space: nowrap; }
table.tiers td:last-child { min-width: 170px; }
th, td { padding: 6px 10px; border-bottom: 1px solid #eceef2; text-align: left; vertical-align: top; }
th { background: #f1f3f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
          vertical-align: -1px; }
.figure { width: 100%; height: auto; display: block; }
.grid table { width: 100%; table-layout: fixed; }
.grid td, .grid th { text-align: center; border-bottom: none; padding: 5px 4px; overflow-wrap: anywhere; }
.grid img { width: 100%; max-width: 128px; height: auto; image-rendering: pixelated; border-radius: 4px; display: block;
            margin: 0 auto; }
.caption { font-size: 12px; margin-top: 3px; }
.ok { color: #1a7f37; } .wrong { color: #c62828; font-weight: 600; } .na { color: #8a91a1; }
.problem { color: #b35c00; }
.answer { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 14px; }
td.prompt { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; text-align: left; white-space: pre-wrap; }
.legend span { margin-right: 14px; font-size: 12px; white-space: nowrap; }
"""


def image_uri(image: Image.Image) -> str:
    """A PNG data URI of an image."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _e(text: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(text), quote=True)


def _value(value: float | None) -> str:
    """A metric as a fixed-width fraction, or a dash."""
    return "&ndash;" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _focus_text(result: TierResult) -> str:
    """The tier's focus as the model names it, with its sigma."""
    profile = result.tier.profile
    if not profile.focus:
        return "&ndash;"
    names = result.focus_labels or [str(request) for request in profile.focus]
    return f"{_e(', '.join(names))} (sigma {profile.effective_focus_sigma:g})"


def _model_match(certificate: Certificate, fingerprint: str | None) -> str:
    """Whether the certificate was made on the model of this report (content fingerprints compared)."""
    if certificate.model_fingerprint == fingerprint:
        return "<span class='ok'>certified on this model</span>"
    title = f"certified on {certificate.model_spec} ({short(certificate.model_fingerprint)}); " + (
        f"this model is {short(fingerprint)}" if fingerprint else "this model has no fingerprint"
    )
    return f"<span class='problem' title=\"{_e(title)}\">certified on another model</span>"


def _certificate_text(result: TierResult, fingerprint: str | None) -> str:
    """The certificate's promise in one cell, and whether it holds here; or 'none'."""
    certificate = result.tier.certificate
    if certificate is None:
        return '<span class="na">none</span>'
    problem = result.tier.certificate_problem
    if problem is not None:  # the promise is not this tier's: say so rather than show it
        return f"<span class='problem' title=\"{_e(problem)}\">edited after certification: certificate void</span>"
    metric = METRIC_NAMES.get(certificate.metric, certificate.metric)
    if certificate.focus_class is not None:
        metric += f" of {certificate.focus_class}"
    interval = certificate.interval
    parts = [
        f"{_e(metric)} {certificate.predicted:.3f}",
        f"interval {interval.low:.3f}&ndash;{interval.high:.3f} at {interval.confidence:.0%}",
        f"{_e(certificate.method)}, {interval.sample_size} {_e(certificate.units)}",
        _model_match(certificate, fingerprint),
    ]
    title = f' title="{_e(interval.meaning)}"' if interval.meaning else ""
    return f"<span{title}>{'<br>'.join(parts)}</span>"


def _tiers_table(data: ReportData) -> str:
    """One row per tier: settings, the metrics on this data, its certificate."""
    metrics = list(data.curves)
    head = "".join(f"<th>{_e(METRIC_NAMES.get(m, m))}</th>" for m in metrics)
    rows = [
        "<tr><td><span class='swatch' style='background:#555555'></span>clean</td><td class='num'>0</td>"
        "<td>&ndash;</td>"
        + "".join(f"<td class='num'>{_value(data.clean[m])}</td>" for m in metrics)
        + "<td>exact</td><td>&ndash;</td><td><span class='na'>&ndash;</span></td></tr>"
    ]
    for index, result in enumerate(data.tiers):
        profile = result.tier.profile
        swatch = f"<span class='swatch' style='background:{tier_colour(index)}'></span>"
        if result.problem is not None:
            cells = f"<td colspan='{len(metrics) + 2}' class='problem'>not applicable: {_e(result.problem)}</td>"
        else:
            cells = "".join(f"<td class='num'>{_value(result.metrics.get(m))}</td>" for m in metrics)
            cells += f"<td>{'exact' if result.exact else 'measured'}</td><td>{_e(result.noise)}</td>"
        rows.append(
            f"<tr><td>{swatch}{_e(result.tier.name)}</td><td class='num'>{profile.sigma:g}</td>"
            f"<td>{_focus_text(result)}</td>{cells}<td>{_certificate_text(result, data.model_fingerprint)}</td></tr>"
        )
    return (
        "<table class='tiers'><thead><tr><th>tier</th><th>utility sigma</th><th>focus</th>"
        f"{head}<th>how</th><th>examples' noise</th><th>certificate</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _cell(cell: Cell) -> str:
    """One example under one column: the image and its caption."""
    style = {True: "ok", False: "wrong", None: ""}[cell.correct]
    if cell.image is None:  # text: the answer itself
        return f"<td><div class='answer {style}'>{_e(cell.caption)}</div></td>"
    return (
        f"<td><img src='{image_uri(cell.image)}' alt='{_e(cell.caption)}'>"
        f"<div class='caption {style}'>{_e(cell.caption)}</div></td>"
    )


def _examples(data: ReportData) -> str:
    """The same inputs side by side: clean, then every tier."""
    if not data.examples:
        return "<p class='note'>No example could be shown.</p>"
    reference = [title for title, _ in data.examples[0].reference]
    head = "".join(f"<th>{_e(t)}</th>" for t in reference)
    shown = [r for r in data.tiers if r.problem is None]
    head += "<th>clean</th>" + "".join(f"<th>{_e(r.tier.name)}</th>" for r in shown)
    lead = {"classify": ["true class"], "generate": ["prompt", "right answer"]}.get(data.task, [])
    rows = []
    for example in data.examples:
        first = {
            "classify": f"<td class='caption'>{_e(example.truth)}</td>",
            "generate": f"<td class='prompt'>{_e(example.name)}</td><td class='answer'>{_e(example.truth)}</td>",
        }.get(data.task, "")
        refs = "".join(
            f"<td><img src='{image_uri(image)}' alt='{_e(title)}'></td>" for title, image in example.reference
        )
        rows.append(f"<tr>{first}{refs}{''.join(_cell(c) for c in example.cells)}</tr>")
    lead_head = "".join(f"<th>{_e(name)}</th>" for name in lead)
    body = "".join(rows)
    return f"<div class='grid'><table><thead><tr>{lead_head}{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _legend(data: ReportData) -> str:
    """Segmentation colours, one swatch per class."""
    if not data.colours:
        return ""
    spans = "".join(
        f"<span><span class='swatch' style='background:rgb{tuple(colour)}'></span>{_e(label)}</span>"
        for label, colour in zip(data.labels, data.colours)
    )
    return f"<p class='legend'>{spans}</p>"


def render(data: ReportData, version: str) -> str:
    """The whole page (`version`: aim's, named in the header)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    curve = curve_figure(data)
    recall = recall_figure(data)
    unit = "images" if data.task in ("classify", "segment") else "prompts"
    focus_section = (
        f"<img class='figure' src='{recall}' alt='per-class recall, clean and under each focus tier'>"
        "<p class='method'>Recall of every class on this data, clean and under each focus tier "
        "(focus classes in bold). A focus tier trades other classes' recall for its targets'.</p>"
        if recall
        else "<p class='note'>No tier of this folder shifts focus.</p>"
        if data.task != "generate"
        else "<p class='note'>Per-class effects are drawn for image tiers; a text tier's accuracy is in the table.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aim report: {_e(data.model)}</title>
<style>{STYLE}</style></head>
<body>
<header><h1>aim report: {_e(data.model)}</h1>
<p>{_e(data.task)} | {_e(data.data)} | {data.items} {unit} scored | {len(data.tiers)} tier(s) |
aim {_e(version)} | {when}</p>
</header>
<main>
<section><h2>Tiers</h2>{_tiers_table(data)}
<p class="method">Metrics are on this data: exact where the formula applies (one clean pass), measured under the
tier's noise otherwise. A certificate's interval (diamond with bars in the figure) is what its profile promises.</p>
</section>
<section><h2>Quality against noise</h2>
<img class="figure" src="{curve}" alt="metric against utility sigma, with each tier">
<p class="method">Curve: {_e(data.curve_method)}. Dotted line: the clean model. Circles: exact at the tier;
squares: measured; a tier without utility noise sits at the left edge.</p></section>
<section><h2>Per-class effects of focus tiers</h2>{focus_section}</section>
<section><h2>Examples under every tier</h2>{_legend(data)}{_examples(data)}
<p class="method">The same inputs, clean and under each tier's noise (one draw, as the tier serves it).</p></section>
{"".join(f"<p class='note'>{_e(n)}</p>" for n in data.notes)}
</main></body></html>
"""


def write_html_report(data: ReportData, path: Path, version: str) -> None:
    """Render and write the page atomically (temp file + rename)."""
    text = render(data, version)
    with atomic_open(path, "w") as handle:
        handle.write(text)
