"""What every template must not do, read from the templates themselves."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.template.base import Lexer, TokenType

ROOT = Path(settings.BASE_DIR)


def test_no_template_prints_a_comment_that_spans_lines():
    """Django's {# #} comment is one line only: one over two lines was printed on the
    township's report page ("{# The township says the signed report reached it ...")."""
    printed = [
        f"{path.relative_to(ROOT)}:{token.lineno}"
        for folder in ("templates", "billing", "cloudpacs", "consults", "facilities", "dicomnode")
        for path in sorted((ROOT / folder).rglob("*.html"))
        for token in Lexer(path.read_text(encoding="utf-8")).tokenize()
        if token.token_type == TokenType.TEXT and "{#" in token.contents
    ]
    assert printed == []
