"""Verdicts: one row per case, shown as a text table (terminal) or HTML (Jupyter)."""
from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass, field


@dataclass
class CaseResult:
    """The verdict on one case. ``expected``/``got`` describe the first difference."""

    name: str
    passed: bool
    expected: str = ""
    got: str = ""
    hint: str = ""
    where: str = ""
    max_score: float = 1.0

    @property
    def score(self) -> float:
        return self.max_score if self.passed else 0.0

    @property
    def message(self) -> str:
        """One paragraph for a human: what differed, and the hint."""
        if self.passed:
            return "passed"
        parts = [f"{self.where}: " if self.where else "", f"expected {self.expected}; got {self.got}."]
        if self.hint:
            parts.append(f" Hint: {self.hint}")
        return "".join(parts)


@dataclass
class Report:
    """All verdicts for one exercise (in a notebook, or one submitted file)."""

    exercise: str
    title: str
    cases: list[CaseResult]
    source: str = ""                  # the graded file, when there is one
    notes: list[str] = field(default_factory=list)   # e.g. cells that raised, output truncated
    output: str = ""                  # what the submission printed (capped)
    seconds: float = 0.0
    isolation: str = ""               # how pagedlab grade kept it apart ("" for check())

    @property
    def score(self) -> float:
        return sum(case.score for case in self.cases)

    @property
    def max_score(self) -> float:
        return sum(case.max_score for case in self.cases)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(case.passed for case in self.cases)

    def heading(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return (f"{self.exercise} {self.title}{where}: {self.score:g}/{self.max_score:g} "
                f"cases passed")

    def __str__(self) -> str:
        lines = [self.heading()]
        for case in self.cases:
            mark = "PASS" if case.passed else "FAIL"
            lines.append(f"  [{mark}] {case.name}")
            if not case.passed:
                for key, text in (("at", case.where), ("expected", case.expected),
                                  ("got", case.got), ("hint", case.hint)):
                    if text:
                        lines += textwrap.wrap(text, width=96, initial_indent=f"      {key:<8} ",
                                               subsequent_indent=" " * 15)
        lines += [f"  note: {note}" for note in self.notes]
        if self.isolation == "none":
            lines.append("  note: NOT ISOLATED: this notebook ran as the grader's own user")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        color = "#1a7f37" if self.passed else "#b35900"
        rows = []
        for case in self.cases:
            mark = ('<span style="color:#1a7f37">&#10004; passed</span>' if case.passed
                    else '<span style="color:#cf222e">&#10008; failed</span>')
            cells = [case.name, mark] + ([""] * 3 if case.passed else
                                         [f"{case.where}: {case.expected}" if case.where else case.expected,
                                          case.got, case.hint])
            rows.append("<tr>" + "".join(
                f'<td style="text-align:left;vertical-align:top">{c if i == 1 else html.escape(c)}</td>'
                for i, c in enumerate(cells)) + "</tr>")
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.notes)
        head = "".join(f'<th style="text-align:left">{h}</th>'
                       for h in ("case", "result", "expected", "got", "hint"))
        return (f'<div><p style="color:{color};font-weight:bold">{html.escape(self.heading())}</p>'
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                + (f"<ul>{notes}</ul>" if notes else "") + "</div>")
