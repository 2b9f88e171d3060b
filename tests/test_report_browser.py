"""The report in a real browser: headless Chromium (Debian's package, driven by Playwright
for Python; Playwright's own browser download cannot work on these machines). For every
page built from the committed results: no console error, every image and chart rendered
with a size above 0, every same-page anchor resolving; the three code columns side by side
on a primitive page (stacked on a phone); no horizontal scroll at 390 px; a dark mode.

Screenshots of the index and of one step of a primitive page go to $KR_ARTIFACTS (default
.artifacts/, git-ignored). Without Playwright or Chromium the tests skip with the reason;
CI sets KR_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""
import os
import shutil
from pathlib import Path

import pytest

from harness import site

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("KR_CHROMIUM", "/usr/bin/chromium")
# As root on these VMs Chromium needs no sandbox; without the networking flags it stalls on
# refused connections to Google's services.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; make test installs it)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set KR_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = _unavailable()
    if why:
        if os.environ.get("KR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"KR_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=ARGS, viewport={"width": 1440, "height": 900})
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    site.build(site.default_folders(), out)
    return out


@pytest.fixture(scope="module")
def artifacts():
    d = Path(os.environ.get("KR_ARTIFACTS", ROOT / ".artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _open(ctx, path: Path):
    page = ctx.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors


RENDERED = """() => {
  const bad = [];
  for (const img of document.images)
    if (!img.complete || img.naturalWidth === 0 || img.naturalHeight === 0) bad.push('img ' + img.src);
  for (const svg of document.querySelectorAll('svg')) {
    const r = svg.getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0) bad.push('svg ' + (svg.getAttribute('aria-label') || '?'));
  }
  for (const a of document.querySelectorAll('a[href^="#"]')) {
    const id = decodeURIComponent(a.getAttribute('href').slice(1));
    if (id && !document.getElementById(id)) bad.push('anchor #' + id);
  }
  return bad;
}"""


def test_every_page_renders_with_no_error(browser, report):
    problems = {}
    for path in sorted(report.glob("*.html")):
        page, errors = _open(browser, path)
        bad = page.evaluate(RENDERED) + [f"console: {e}" for e in errors]
        if page.evaluate("document.querySelectorAll('svg').length") == 0 and path.name != "compare.html":
            bad.append("no chart on the page")
        if bad:
            problems[path.name] = bad[:5]
        page.close()
    assert not problems, problems


def test_a_primitive_page_has_three_code_columns_side_by_side(browser, report, artifacts):
    page, errors = _open(browser, report / "softmax.html")
    boxes = page.evaluate("""() => [...document.querySelectorAll('#step-online .cols > .lang')]
                              .map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width]; })""")
    assert len(boxes) == 3, boxes
    lefts = [b[0] for b in boxes]
    assert len({round(b[1]) for b in boxes}) == 1 and lefts == sorted(lefts) and len(set(lefts)) == 3
    assert all(b[2] > 200 for b in boxes)
    assert page.evaluate("document.querySelectorAll('#step-online .lang .hl').length") == 3
    page.locator("#step-online").screenshot(path=str(artifacts / "report_softmax_online.png"))
    page.goto((report / "softmax.html").as_uri() + "#step-online")
    page.screenshot(path=str(artifacts / "report_softmax.png"))           # the README's picture
    page.close()
    assert not errors


def test_at_phone_width_nothing_scrolls_sideways_and_the_columns_stack(browser, report, artifacts):
    for name in ("index.html", "softmax.html"):
        page = browser.new_page()
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto((report / name).as_uri(), wait_until="load")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} scrolls sideways by {overflow} px at 390 px"
        if name == "softmax.html":
            tops = page.evaluate("""() => [...document.querySelectorAll('#step-online .cols > .lang')]
                                     .map(e => e.getBoundingClientRect().top)""")
            assert tops == sorted(tops) and len(set(tops)) == 3, "the columns do not stack"
        else:
            page.screenshot(path=str(artifacts / "report_index_phone.png"), full_page=False)
        page.close()


def test_the_index_in_light_and_dark(browser, report, artifacts):
    page, _ = _open(browser, report / "index.html")
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.screenshot(path=str(artifacts / "report_index.png"), full_page=False)
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.close()
    assert light != dark and dark.startswith("rgb(") and sum(map(int, dark[4:-1].split(","))) < 150
