"""The report as one value (`Report`) and its two renderings: ``report.md`` (figures linked from
``figures/``) and a self-contained ``report.html`` (figures as base64 data URIs, inline CSS, no
external resources; a small inline script records on ``<html>`` whether every image loaded and
any error, which the headless-browser test reads)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from reports.figures import Skipped
from reports.table_format import Table, inline_html, to_html, to_markdown

MAX_FAILED = 50  # trials listed in the report; all of them are in tables/failed.csv


@dataclass(frozen=True)
class FigureRef:
    name: str
    caption: str
    png: bytes = field(repr=False)
    pdf: bytes = field(repr=False)


@dataclass(frozen=True)
class Report:
    experiment: str
    facts: tuple[str, ...]  # bullet lines under the title
    tables: tuple[Table, ...]
    figures: tuple[FigureRef, ...]
    skipped: tuple[Skipped, ...]
    failed: tuple[dict, ...]
    conclusions: tuple[str, ...] = ()  # what the paired intervals show (`reports.conclusions`)


CONCLUSIONS = "What the intervals show"


def render_markdown(report: Report) -> str:
    out = [f"# Report: {report.experiment}", "", *(f"- {f}" for f in report.facts), ""]
    for t in report.tables:
        out += [f"## {t.title}", "", f"`tables/{t.name}.{{md,tex,csv}}`", "", to_markdown(t), ""]
    out += ["## Figures", ""]
    for f in report.figures:
        out += [
            f"### {f.name}",
            "",
            f"![{f.caption}](figures/{f.name}.png)",
            "",
            f"*{f.caption}* ([PDF](figures/{f.name}.pdf))",
            "",
        ]
    if not report.figures:
        out += ["No figure could be drawn from these runs.", ""]
    if report.skipped:
        out += ["## Skipped figures", ""]
        out += [f"- `{s.name}`: {s.reason}" for s in report.skipped]
        out.append("")
    if report.failed:
        out += [f"## Trials that did not finish ({len(report.failed)})", ""]
        out += ["| trial | label | state | error |", "|:--|:--|:--|:--|"]
        for r in report.failed[:MAX_FAILED]:
            cells = [r["trial_id"], r["label"], r["state"], r["error"]]
            out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        if len(report.failed) > MAX_FAILED:
            out += ["", f"... and {len(report.failed) - MAX_FAILED} more in `tables/failed.csv`."]
        out.append("")
    if report.conclusions:
        out += [f"## {CONCLUSIONS}", "", *(f"- {c}" for c in report.conclusions), ""]
    return "\n".join(out)


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #e4e4e4; text-align: right;
         white-space: nowrap; }
th { border-bottom: 2px solid #999; text-align: center; }
td.key { text-align: left; }
td.failed, td.unsupported, td.killed { color: #b00020; font-style: italic; }
td.missing, td.none, td.running { color: #888; font-style: italic; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption, p.note { color: #555; font-size: 0.9rem; margin: 0.2rem 0; }
.wide { overflow-x: auto; max-width: 100%; }
code { font: 0.92em ui-monospace, "DejaVu Sans Mono", monospace; background: #f3f3f3;
       padding: 0 0.2em; border-radius: 3px; }
"""

# Records on <html> how many images loaded and every error (uncaught, resource, console.error).
CHECK_SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(e.message || (t && t.tagName ? "failed to load " + t.tagName : "error"));
  }, true);
  var consoleError = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
    var root = document.documentElement;
    root.setAttribute("data-images", String(images.length));
    root.setAttribute("data-images-loaded", String(loaded.length));
    root.setAttribute("data-errors", errors.join(" | "));
    root.setAttribute("data-check", "done");
  });
})();
"""


def render_html(report: Report) -> str:
    esc = html.escape
    body = [f"<h1>Report: {esc(report.experiment)}</h1>", "<ul>"]
    body += [f"<li>{inline_html(f)}</li>" for f in report.facts]
    body.append("</ul>")
    for t in report.tables:
        body += [
            f'<h2 id="{esc(t.name)}">{esc(t.title)}</h2>',
            f'<div class="wide">{to_html(t)}</div>',
        ]
    body.append("<h2>Figures</h2>")
    for f in report.figures:
        data = base64.b64encode(f.png).decode("ascii")
        body.append(
            f'<figure id="{esc(f.name)}"><img alt="{esc(f.caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption><b>{esc(f.name)}</b>: '
            f"{inline_html(f.caption)}</figcaption></figure>"
        )
    if not report.figures:
        body.append("<p>No figure could be drawn from these runs.</p>")
    if report.skipped:
        body.append("<h2>Skipped figures</h2><ul>")
        body += [
            f"<li><code>{esc(s.name)}</code>: {inline_html(s.reason)}</li>" for s in report.skipped
        ]
        body.append("</ul>")
    if report.failed:
        body.append(f"<h2>Trials that did not finish ({len(report.failed)})</h2>")
        rows = "".join(
            "<tr>" + "".join(f'<td class="key">{esc(str(r[k]))}</td>' for k in r) + "</tr>"
            for r in report.failed[:MAX_FAILED]
        )
        head = "".join(f"<th>{k}</th>" for k in ("trial", "label", "state", "error"))
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        if len(report.failed) > MAX_FAILED:
            more = len(report.failed) - MAX_FAILED
            body.append(f"<p class='note'>... and {more} more in tables/failed.csv.</p>")
    if report.conclusions:
        body.append(f'<h2 id="conclusions">{CONCLUSIONS}</h2><ul>')
        body += [f"<li>{inline_html(c)}</li>" for c in report.conclusions]
        body.append("</ul>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Report: {esc(report.experiment)}</title>"
        f"<style>{CSS}</style><script>{CHECK_SCRIPT}</script></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
