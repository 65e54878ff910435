"""The CI parity gate: the verdict over compare's judged rows, JUnit and Markdown, and what runs around it.

verdict.py  cases and the verdict (exit 0 pass, 1 fail, 2 usage), read off each row's judgement
summary.py  the verdict as Markdown for a CI job summary
junit.py    the verdict as JUnit XML
finish.py   after the run: explain failures, write the reports, print the verdict, the exit code
"""
