"""The gate's verdict as GitHub-flavoured Markdown for a CI job summary: verdict first, then one line per
failing check (with where it diverges, when explained), then the tolerances used.
"""

from __future__ import annotations

from resnet_deploy.gate.verdict import GateResult
from resnet_deploy.report.files import markdown_text
from resnet_deploy.tolerances import METRIC_RANGES

#: GitHub caps a step summary at 1 MiB; stay far below and say what was left out.
MAX_MARKDOWN_ROWS = 200


def markdown(result: GateResult, title: str = "Parity gate", gating: bool = True) -> str:
    """A compact GitHub-flavoured summary: verdict first, then one line per failing check, then the
    tolerances used. Plain Markdown (no HTML, no ANSI), small enough for $GITHUB_STEP_SUMMARY."""
    icon = "✅" if result.passed else "❌"
    title = title if gating else "Parity check"
    verdict = markdown_text(result.summary(gating))
    lines = [f"### {icon} {markdown_text(title)}: {'passed' if result.passed else 'FAILED'}", "", verdict, ""]
    lines += [markdown_text(result.coverage()), ""]
    failures = result.failures
    if failures:
        lines += ["| artifact | runtime | precision | shape | problem |", "| --- | --- | --- | --- | --- |"]
        for c in failures[:MAX_MARKDOWN_ROWS]:
            problem = c.error or "; ".join(str(v) for v in c.violations)
            lines.append(
                f"| `{c.artifact}` | {markdown_text(c.runtime)} | {c.precision} | {markdown_text(c.shape)} | {markdown_text(problem)} |"
            )
        if len(failures) > MAX_MARKDOWN_ROWS:
            lines.append(f"\n… and {len(failures) - MAX_MARKDOWN_ROWS} more failing checks (see the JUnit report)")
        explained = [c for c in failures if c.explanation]
        for c in explained[:10]:
            head = f"**Where `{c.artifact}` diverges** ({markdown_text(c.runtime)}, {markdown_text(c.shape)}):"
            lines += ["", head, "", "```", c.explanation, "```"]
        lines.append("")
    lines += ["Tolerances (" + markdown_text(result.config.source) + "):", ""]
    lines += ["| precision | " + " | ".join(METRIC_RANGES) + " |", "| --- |" + " --- |" * len(METRIC_RANGES)]
    for precision, tol in result.config.precisions.items():
        cells = [("-" if getattr(tol, m) is None else f"{getattr(tol, m):g}") for m in METRIC_RANGES]
        lines.append(f"| {precision} | " + " | ".join(cells) + " |")
    for rule in result.config.rules:
        cells = [
            ("(default)" if m not in rule.bounds else "-" if rule.bounds[m] is None else f"{rule.bounds[m]:g}")
            for m in METRIC_RANGES
        ]
        lines.append(f"| `{rule.pattern}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
