"""Open every page of the built docs in a headless Chromium with the network cut off, and
check that each shows its diagrams and maths rendered and asked for nothing off this host.

    python scripts/docs_in_browser.py [SITE_DIR]     # default: mkdocs build into a temporary folder

Needs Playwright's Python package and a Chromium (`CHROMIUM`, default /usr/bin/chromium:
Debian's `chromium` package); neither is a fedrag dependency, so this is a script, not a
test. The site is served on 127.0.0.1; any other address a page asks for is blocked and
counted. Prints one row per page and exits 1 when a page has a problem.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

# per page: images (diagrams) drawn, formulas drawn as SVG, and formulas left as TeX source
PROBE = """() => {
  const imgs = [...document.querySelectorAll('article img')];
  const drawn = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0);
  const maths = [...document.querySelectorAll('.arithmatex')];
  const svg = maths.filter(m => m.classList.contains('arithmatex-svg')
      && m.querySelector('svg') && m.querySelector('svg').getBoundingClientRect().width > 0);
  const raw = [...document.querySelectorAll('pre code.language-mermaid, .mermaid')].length;
  return {images: imgs.length, drawn: drawn.length, maths: maths.length, svg: svg.length, raw_diagrams: raw};
}"""


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # the table is the output
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def check(site: Path) -> list[dict]:
    """One dict per page: what it drew, and what it asked for that is not on this host."""
    from playwright.sync_api import sync_playwright

    server, base = _serve(site)
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.name != "404.html")
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
            context = browser.new_context(offline=False)
            off_host: list[str] = []
            failed: list[str] = []

            def route(r):
                host = urlparse(r.request.url).hostname
                if r.request.url.startswith(("data:", "blob:", "about:")) or host == "127.0.0.1":
                    return r.continue_()
                off_host.append(r.request.url)
                return r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on("requestfailed", lambda req: failed.append(req.url) if "127.0.0.1" in req.url else None)
            for rel in pages:
                off_host.clear()
                failed.clear()
                page.goto(f"{base}/{rel}", wait_until="networkidle")
                row = {"page": rel, **page.evaluate(PROBE), "off_host": list(off_host), "failed": list(failed)}
                row["ok"] = (
                    row["drawn"] == row["images"]
                    and row["svg"] == row["maths"]
                    and not row["raw_diagrams"]
                    and not row["off_host"]
                    and not row["failed"]
                )
                rows.append(row)
            browser.close()
    finally:
        server.shutdown()
    return rows


def main() -> int:
    if len(sys.argv) > 1:
        site = Path(sys.argv[1])
    else:
        site = Path(tempfile.mkdtemp(prefix="fedrag-site-"))
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)], check=True)
    rows = check(site)
    print("| page | diagrams drawn | formulas as SVG | asked off this host | failed locally | ok |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['page']} | {r['drawn']}/{r['images']} | {r['svg']}/{r['maths']} | {len(r['off_host'])} "
            f"| {len(r['failed'])} | {'yes' if r['ok'] else 'NO'} |"
        )
    bad = [r for r in rows if not r["ok"]]
    for r in bad:
        print(f"{r['page']}: off host {r['off_host'][:3]}, failed {r['failed'][:3]}, raw diagrams {r['raw_diagrams']}")
    print(
        f"{len(rows)} pages, {sum(r['images'] for r in rows)} diagrams/images, "
        f"{sum(r['maths'] for r in rows)} formulas; {len(bad)} with a problem"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
