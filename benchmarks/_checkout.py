"""Imported first by the benchmarks: they measure the solvers and service of the checkout they sit
in, not the installed ones.  (`python benchmarks/x.py` puts benchmarks/ on sys.path, not the
checkout, so a worktree of another commit imported the editable install of the main one: an A/B
of two commits measured one of them twice.)"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
