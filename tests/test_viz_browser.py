"""The viewer's page in a real browser: headless Chromium driven by Selenium opens the file
from disk, picks a unit and types a pattern; the colours, the pattern's tokens and the
rankings it shows must equal the values computed in Python on the same quantised codes.

Slow (a browser start); needs Debian's ``chromium`` and ``chromium-driver`` and the
``selenium`` package (the ``dev`` extra): ``.ci/run`` installs them and runs this file
as a step of its own.
"""

from __future__ import annotations

import base64
import math
import re
import shutil

import pytest

from rnnkit.data.spans import utf16_offsets
from rnnkit.diagnostics import ranking
from rnnkit.tasks.lm import viz
from viz_cases import TEXT, model, tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's; Selenium never downloads one
RED, BLUE = (214, 39, 40), (31, 119, 180)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install 'rnnkit[dev]')"
    )
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None or shutil.which(CHROMEDRIVER) is None:
        pytest.skip(
            "chromium and chromium-driver are not installed "
            "(apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(flag)  # --no-sandbox: Chromium refuses to run as root without it
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def colour(v: float, lo: float, hi: float) -> tuple[int, int, int]:
    """viewer.js's colour map, written again."""
    x = (v - lo) / (hi - lo)
    x = min(x, 1.0) if x >= 0 else 0.0
    target, s = (RED, (x - 0.5) * 2) if x >= 0.5 else (BLUE, (0.5 - x) * 2)
    return tuple(math.floor(255 + (c - 255) * s + 0.5) for c in target)  # type: ignore[return-value]


def unit_values(signal: dict, u: int, T: int) -> list[float]:
    """The dequantised values of unit u, in float64 as the page computes them."""
    q = base64.b64decode(signal["q"])
    return [signal["lo"][u] + q[u * T + t] * signal["scale"][u] for t in range(T)]


def page_state(driver) -> dict:
    return driver.execute_script(
        """
        const toks = Array.from(document.querySelectorAll('#text .tok'));
        return {
          colours: toks.map(e => getComputedStyle(e).backgroundColor),
          inside: toks.map(e => e.classList.contains('in-pattern')),
          ranks: Array.from(document.querySelectorAll('#rank-table tr'))
                      .map(r => [Number(r.dataset.unit), Number(r.dataset.score)]),
          status: document.getElementById('pattern-status').textContent,
        };"""
    )


def assert_ranks(shown: list, scores: list[float], by_magnitude: bool) -> None:
    """The page's table equals Python's order and scores (ties in score may swap units
    only where the two scores agree to rounding)."""
    import numpy as np

    order = ranking.rank(np.array(scores), by_magnitude=by_magnitude)[: len(shown)]
    assert len(shown) == min(len(scores), viz.RANK_ROWS)
    for (unit, score), expected in zip(shown, order, strict=True):
        assert score == pytest.approx(scores[unit], rel=1e-9, abs=1e-12)
        assert unit == expected or abs(abs(scores[unit]) - abs(scores[expected])) < 1e-9


def test_page_equals_python_on_the_same_codes(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    tok = tokenizer("char")
    data = viz.visualise(model("lstm", tok, hidden_size=24), tok, TEXT)
    page = viz.write(data, tmp_path / "viz.html")
    browser.get(page.resolve().as_uri())
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
    T = len(data["tokens"]["ids"])

    layer, name, unit, pattern = 1, "c", 5, r'"[^"]*"'
    Select(browser.find_element(By.ID, "layer")).select_by_value(str(layer))
    Select(browser.find_element(By.ID, "signal")).select_by_value(name)
    box = browser.find_element(By.ID, "unit")
    box.clear()
    box.send_keys(str(unit))
    browser.find_element(By.ID, "pattern").send_keys(pattern)
    Select(browser.find_element(By.ID, "ranking")).select_by_value("pattern")
    state = page_state(browser)

    signal = data["layers"][layer]["signals"][name]
    values = unit_values(signal, unit, T)
    lo, hi = signal["range"]
    assert state["colours"] == ["rgb({}, {}, {})".format(*colour(v, lo, hi)) for v in values]

    # the pattern, matched by Python's re (the same for this pattern) in UTF-16 units
    offsets = utf16_offsets(data["text"])
    matches = [(offsets[m.start()], offsets[m.end()]) for m in re.finditer(pattern, data["text"])]
    spans = list(zip(data["tokens"]["start"], data["tokens"]["end"], strict=True))
    indicator = ranking.unit_indicator(spans, matches, offsets[-1])
    assert "😀" in data["text"] and 0 < indicator.sum() < T
    assert state["inside"] == [bool(m) for m in indicator]
    assert state["status"].startswith(f"{len(matches)} matches cover {int(indicator.sum())} of")
    import numpy as np

    codes = np.array([unit_values(signal, u, T) for u in range(signal["size"])]).T  # [T, H]
    assert_ranks(state["ranks"], ranking.pattern_correlation(codes, indicator).tolist(), True)

    Select(browser.find_element(By.ID, "ranking")).select_by_value("variance")
    assert_ranks(page_state(browser)["ranks"], signal["variance"], False)
    Select(browser.find_element(By.ID, "signal")).select_by_value("f")  # a sigmoid gate
    Select(browser.find_element(By.ID, "ranking")).select_by_value("saturation")
    gate = data["layers"][layer]["signals"]["f"]
    assert_ranks(page_state(browser)["ranks"], gate["saturation"], False)

    t = 7
    token = browser.find_elements(By.CSS_SELECTOR, "#text .tok")[t]
    ActionChains(browser).move_to_element(token).perform()
    tip = browser.find_element(By.ID, "tip").text
    preds = data["predictions"]
    assert f"p {preds['next_prob'][t]:.4f}, loss {preds['loss'][t]:.3f} nats" in tip
    assert f"{preds['top_probs'][t][0]:.4f}" in tip
    shot = tmp_path / "viz.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
