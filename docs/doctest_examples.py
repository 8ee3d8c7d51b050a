"""A griffe extension: the ``Example:`` sections of aimet_keras docstrings.

The package writes its doctests under an ``Example:`` header without
indenting them (so that they read as written in ``help()``); Google-style
parsing wants a section's lines indented. This indents the lines after
the header so that mkdocstrings renders them as an examples section (code,
not Markdown text).
"""

import re

import griffe

_HEADER = re.compile(r"^(\s*)Examples?:\s*$")


def indent_examples(text):
    """``text`` with the lines after an ``Example:`` header indented."""
    lines = text.splitlines()
    out, inside, base = [], False, ""
    for line in lines:
        match = _HEADER.match(line)
        if match:
            inside, base = True, match.group(1)
            out.append(line)
            continue
        if inside and line.strip() and not line.startswith(base + "    "):
            if re.match(rf"^{base}\w[\w ]*:\s*$", line):
                inside = False  # the next section
                out.append(line)
                continue
            line = base + "    " + line[len(base) :]
        out.append(line)
    return "\n".join(out)


class DoctestExamples(griffe.Extension):
    """Indents ``Example:`` sections before the docstring is parsed."""

    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
