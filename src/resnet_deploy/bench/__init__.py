"""`resnet-bench compare`: latency and parity of every artifact on every runtime that can run it here.

options.py    what a run is asked to do
preflight.py  every request checked before anything slow (once), what it found kept in the options
plan.py       the jobs (artifact x runtime), the shapes, and what the workspace needs first
measure.py    one job's rows: parity at each shape, then latency in each copy mode, judged
latency.py    timing one runtime at one shape (warm-up, iterations, statistics)
floor.py      the arithmetic and memory floors of each row on this device
compare.py    the run
"""
