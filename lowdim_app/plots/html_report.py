"""Self-contained HTML reports (figures and thumbnails inlined as base64 PNG, no external files or
scripts): what ``audit`` writes next to its table."""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

from .common import RENDER_LOCK

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1b1f;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:0} table{border-collapse:collapse;font-size:.9rem} td,th{padding:.3rem .6rem;
border-bottom:1px solid #eee;text-align:left;vertical-align:middle} th{background:#f6f6f8}
.counts td{font-variant-numeric:tabular-nums} code,pre{background:#f6f6f8;padding:.15rem .3rem;border-radius:4px}
pre{padding:.6rem;white-space:pre-wrap;word-break:break-all} img.fig{max-width:100%} img.thumb{image-rendering:pixelated}
.memorized{color:#b3261e;font-weight:600} .generalized{color:#1b6e2e} .uncertain{color:#8a5a00}
"""


def png_data_uri(image) -> str:
    """A PIL image or a matplotlib Figure (closed afterwards) as a ``data:image/png`` URI."""
    buf = io.BytesIO()
    if hasattr(image, "savefig"):
        import matplotlib.pyplot as plt

        with RENDER_LOCK:
            image.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(image)
    else:
        image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.sections.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.sections.append(f"<p>{html.escape(text)}</p>")

    def figure(self, fig, alt: str, elem_id: str = "") -> None:
        ident = f' id="{html.escape(elem_id)}"' if elem_id else ""
        self.sections.append(f'<img class="fig"{ident} alt="{html.escape(alt)}" src="{png_data_uri(fig)}">')

    def table(self, header: list[str], rows: list[list], elem_id: str = "", css_class: str = "") -> None:
        """Cells are escaped text, or ``("img", PIL image)`` for a thumbnail; a cell in column ``verdict``
        gets its verdict as CSS class."""
        col = header.index("verdict") if "verdict" in header else -1
        out = [f'<table id="{html.escape(elem_id)}" class="{html.escape(css_class)}"><tr>'
               + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
        for row in rows:
            cells = []
            for j, v in enumerate(row):
                if isinstance(v, tuple) and v and v[0] == "img":
                    cells.append(f'<td><img class="thumb" alt="" src="{png_data_uri(v[1])}"></td>')
                else:
                    cls = f' class="{html.escape(str(v))}"' if j == col else ""
                    cells.append(f"<td{cls}>{html.escape('' if v is None else str(v))}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        self.sections.append("".join(out) + "</table>")

    def code(self, text: str) -> None:
        self.sections.append(f"<pre>{html.escape(text)}</pre>")

    def render(self) -> str:
        return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1><p class=\"sub\">{html.escape(self.subtitle)}</p>"
                + "\n".join(self.sections) + "</body></html>")
