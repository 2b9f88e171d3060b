"""`harness report`: the static site built from the committed results. Structure only (the
browser checks are in test_report_browser.py): a page per primitive with the results, the
three languages side by side, every shared step aligned, every link resolvable, nothing
that needs a network or JavaScript, and the committed copy in results/report/ current."""
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness import site
from harness.cli import main
from harness.core import catalogue

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


class Page(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.ids, self.hrefs, self.srcs, self.tags, self.classes = set(), [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])
        if tag == "link" and a.get("href"):
            self.hrefs.append(a["href"])
        self.classes.append((tag, a.get("class", ""), a.get("id", "")))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    pages = site.build(site.default_folders(), out)
    return out, pages


def _pages(out):
    return {p.name: Page(p.read_text(encoding="utf-8")) for p in out.glob("*.html")}


def test_every_primitive_with_results_has_a_page_and_the_index_links_it(built):
    out, pages = built
    names = {p.name for p in pages}
    with_results = {r["primitive"] for f in site.default_folders()
                    for r in json.loads((f / "results.json").read_text())["results"]}
    expected = {n for n in catalogue.PRIMITIVES if n in with_results}
    assert expected and {f"{n}.html" for n in expected} <= names
    index = Page((out / "index.html").read_text())
    assert {f"{n}.html" for n in expected} <= {h.split("#")[0] for h in index.hrefs}
    assert "train-mlp.html" in names


def test_every_link_resolves_and_nothing_leaves_the_folder(built):
    out, _ = built
    pages = _pages(out)
    bad = []
    for name, page in pages.items():
        assert "script" not in page.tags, f"{name} uses JavaScript"
        for href in page.hrefs + page.srcs:
            assert not href.startswith(("http:", "https:", "//", "/")), f"{name}: {href} leaves the folder"
            target, _, frag = href.partition("#")
            target = target or name
            if target.endswith(".css"):
                assert (out / target).exists(), f"{name}: {href}"
                continue
            if target not in pages:
                bad.append(f"{name}: {href} (no page {target})")
            elif frag and frag not in pages[target].ids:
                bad.append(f"{name}: {href} (no id {frag})")
    assert not bad, bad


def test_a_primitive_page_puts_the_three_languages_side_by_side_step_by_step(built):
    out, _ = built
    text = (out / "softmax.html").read_text()
    page = Page(text)
    # one anchored section per variant of each language, and each declared step aligned
    prim = catalogue.PRIMITIVES["softmax"]
    for st in prim.steps:
        assert f"step-{st.idea}" in page.ids
        for lang, v in st.variants().items():
            assert f"{lang}-{v}" in page.ids
    for kernel in ("softmax_online", "softmax_warp_online", "softmax_online_simd"):
        assert f">{kernel}<" in text                              # each step's code, as Pygments tokens
    assert 'class="hl"' in text                                   # Pygments highlighted the code
    assert "<svg" in text                                         # charts inline
    assert "intel-xeon-2core" in text and "amd-epyc-2core" in text  # results of every machine
    for heading in ("Python", "CUDA", "Mojo"):
        assert f"<h4>{heading}" in text
    assert "id=tolerance" in text and "rtol" in text
    assert "exp(x) overflows unless the" in text                  # each distribution, with why


def test_the_pages_give_the_results_beside_the_code(built):
    out, _ = built
    text = (out / "matmul.html").read_text()
    for col in ("median", "IQR", "% of peak", "× Python", "× NumPy", "max error", "% of tol", "status"):
        assert col in text
    assert "not run — backend unavailable" in text                # CUDA on a CPU machine: said, not hidden


def test_a_primitive_with_no_steps_lists_each_ladder_in_its_own_order(built, tmp_path, monkeypatch):
    from dataclasses import replace
    from harness.site import pages
    prim = catalogue.PRIMITIVES["relu"]
    monkeypatch.setitem(catalogue.PRIMITIVES, "relu", replace(prim, steps=()))
    machines = [site.data.load_machine(RESULTS / "intel-xeon-2core")]
    text = pages.primitive("relu", machines)
    assert "declares no shared steps" in text and 'id="python-loop"' in text and 'id="mojo-parallel"' in text


def test_two_machines_of_one_schema_get_a_comparison_page(tmp_path):
    a = tmp_path / "a"
    shutil.copytree(RESULTS / "intel-xeon-2core", a)
    b = tmp_path / "b"
    shutil.copytree(RESULTS / "intel-xeon-2core", b)
    doc = json.loads((b / "results.json").read_text())
    doc["env"]["machine"], doc["env"]["cpu_cores"] = "bigger-box", 16
    (b / "results.json").write_text(json.dumps(doc))
    out = tmp_path / "site"
    names = {p.name for p in site.build([a, b], out)}
    assert "compare.html" in names
    text = (out / "compare.html").read_text()
    assert "cpu_cores" in text and "bigger-box" in text and "ratio" in text


def test_the_same_machine_twice_is_refused(capsys, tmp_path):
    code = main(["report", str(RESULTS / "intel-xeon-2core"), str(RESULTS / "intel-xeon-2core"),
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "same machine" in err and len(err.strip().splitlines()) == 1


def test_the_committed_report_is_the_one_the_committed_results_give(built):
    out, _ = built
    committed = RESULTS / "report"
    assert (committed / "index.html").exists(), "results/report/ is missing: run `python -m harness report`"
    fresh = {p.name: p.read_bytes() for p in out.iterdir()}
    old = {p.name: p.read_bytes() for p in committed.iterdir() if p.suffix in (".html", ".css")}
    stale = sorted(n for n in fresh.keys() | old.keys() if fresh.get(n) != old.get(n))
    assert not stale, f"results/report/ is out of date ({', '.join(stale[:5])}): run `python -m harness report`"


def test_a_rebuild_removes_its_own_stale_pages_and_nothing_else(tmp_path):
    out = tmp_path / "site"
    site.build(site.default_folders(), out)
    (out / "notes.html").write_text("<p>mine</p>")                       # the user's own file
    stale = (out / "index.html").read_text().replace("<title>", "<title>old ")
    (out / "conv.html").write_text(stale)                                # a page of ours, no longer made
    site.build(site.default_folders(), out)
    assert (out / "notes.html").exists() and not (out / "conv.html").exists()
