"""The unit viewer as one self-contained HTML file: the data, ``viewer.js`` and
``viewer.css`` inline, nothing fetched, so it opens from disk in any browser.

The page takes the data a task builds (``rnnkit.tasks.lm.viz``: tokens with UTF-16
offsets, each layer's signals as uint8 codes, the model's next-token predictions) and
computes what it shows from it: colours, rankings and pattern matches
(``viewer.js`` states the formulas; ``rnnkit.diagnostics.ranking`` is the same math in
Python). The data sits in a ``<script type="application/json">`` element with every
``<`` written ``\\u003c``, so no text can close the element.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
{css}</style>
</head>
<body>
<h1>{title}</h1>
<p id="about">{about}</p>
<p id="limits">{limits}</p>
<div id="controls">
  <label>layer <select id="layer"></select></label>
  <label>signal <select id="signal"></select></label>
  <label>unit <input id="unit" type="number" min="0" step="1"></label>
  <span id="unit-status"></span>
  <label>pattern /<input id="pattern" type="text" spellcheck="false"
    placeholder="e.g. &quot;[^&quot;]*&quot; or \\([^)]*\\)">/<input id="flags" type="text"
    value="" spellcheck="false" title="flags, e.g. i, m, s, u"></label>
  <span id="pattern-status"></span>
</div>
<div id="unit-summary"></div>
<div id="main">
  <div id="text"></div>
  <div id="ranks">
    <label>rank units by <select id="ranking">
      <option value="variance">variance</option>
      <option value="saturation">saturation</option>
      <option value="pattern">pattern (|r|)</option>
    </select></label>
    <div id="rank-status"></div>
    <table><thead><tr><th>unit</th><th>score</th></tr></thead>
    <tbody id="rank-table"></tbody></table>
  </div>
</div>
<div id="tip"></div>
<script id="viz-data" type="application/json">{data}</script>
<script>
{js}</script>
</body>
</html>
"""


def embedded_json(data: dict[str, Any]) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (every ``<``
    escaped; ASCII only, so the file's encoding cannot matter)."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")


def render(data: dict[str, Any], about: str, limits: str) -> str:
    """The page: ``data`` (the viewer's JSON), a line saying what it shows and one
    stating its limits, both plain text."""
    files = resources.files("rnnkit.diagnostics")
    return TEMPLATE.format(
        title=html.escape(data["title"]),
        about=html.escape(about),
        limits=html.escape(limits),
        css=files.joinpath("viewer.css").read_text(encoding="utf-8"),
        js=files.joinpath("viewer.js").read_text(encoding="utf-8"),
        data=embedded_json(data),
    )
