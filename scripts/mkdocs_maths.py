"""MkDocs hook: the maths of the pages (pymdownx.arithmatex, generic mode) rendered to
inline SVG at build time with matplotlib's mathtext, so a page shows its formulas with
no script and nothing fetched from the network. A formula mathtext cannot typeset, or a
build without matplotlib, keeps the TeX source as code."""

from __future__ import annotations

import html
import io
import re
from functools import lru_cache

_SPAN = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
_DELIMS = ((r"\(", r"\)"), (r"\[", r"\]"), ("$$", "$$"), ("$", "$"))


def _strip(tex: str) -> str:
    tex = tex.strip()
    for left, right in _DELIMS:
        if tex.startswith(left) and tex.endswith(right) and len(tex) >= len(left) + len(right):
            return tex[len(left) : len(tex) - len(right)].strip()
    return tex


def _for_mathtext(tex: str) -> str:
    tex = re.sub(r"\\[bB]igg?[lr]?(?![a-zA-Z])", "", tex)  # \big( -> (: mathtext sizes delimiters itself
    tex = re.sub(r"\\text\{", r"\\mathrm{", tex)
    tex = tex.replace(r"\!", "").replace(r"\;", r"\ ").replace(r"\:", r"\ ")
    return " ".join(tex.split())  # display maths spans lines; mathtext takes one


@lru_cache(maxsize=None)
def render(tex: str) -> str | None:
    """The SVG markup of one formula, or None if it cannot be rendered here."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import rcParams
        from matplotlib.mathtext import math_to_image
    except ImportError:
        return None
    rcParams["svg.hashsalt"] = "fedrag-docs"  # the same page builds to the same bytes
    rcParams["svg.fonttype"] = "path"  # glyphs as paths: no font to fetch
    rcParams["mathtext.fontset"] = "cm"
    buf = io.BytesIO()
    try:
        math_to_image(f"${_for_mathtext(tex)}$", buf, format="svg", dpi=72)
    except Exception:  # noqa: BLE001 - any mathtext parse failure falls back to the source
        return None
    svg = buf.getvalue().decode()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and the DOCTYPE (a DTD address)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    label = html.escape(tex, quote=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def _replace(match: re.Match) -> str:
    tag, body = match.group(1), match.group(2)
    tex = _strip(html.unescape(body))
    svg = render(tex)
    if svg is None:
        return f'<{tag} class="arithmatex"><code>{html.escape(tex)}</code></{tag}>'
    return f'<{tag} class="arithmatex arithmatex-svg">{svg}</{tag}>'


def on_post_page(output: str, page, config) -> str:
    return _SPAN.sub(_replace, output) if 'class="arithmatex"' in output else output
