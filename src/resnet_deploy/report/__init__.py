"""Reports of a `CompareResult`: terminal table, JSON, CSV, Markdown and a PNG plot.

Every format carries every row; JSON and CSV carry every latency percentile and parity metric, the table and
Markdown the ones a reader scans for (p50, p99, images/s, speedup, cosine, top-1).

rows.py   what each row shows (cells, status, notes), shared by the table and the Markdown
table.py  the terminal table
files.py  JSON, CSV, Markdown; checking report paths before a run, writing them after (atomically)
plot.py   the PNG
"""

from resnet_deploy.report.files import (
    check_report_paths,
    csv_records,
    markdown_text,
    to_csv,
    to_json,
    to_markdown,
    write_reports,
)
from resnet_deploy.report.plot import plot
from resnet_deploy.report.rows import CSV_FIELDS, LATENCY_FIELDS, PARITY_FIELDS, notes, status
from resnet_deploy.report.table import print_table

__all__ = [
    "CSV_FIELDS",
    "LATENCY_FIELDS",
    "PARITY_FIELDS",
    "check_report_paths",
    "csv_records",
    "markdown_text",
    "notes",
    "plot",
    "print_table",
    "status",
    "to_csv",
    "to_json",
    "to_markdown",
    "write_reports",
]
