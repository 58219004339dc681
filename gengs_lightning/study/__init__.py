"""Studies: grids of command-line runs with one result file each, and the reports made from them."""

from gengs_lightning.study.report import write_report
from gengs_lightning.study.runner import Layout, execute, merge, run_study
from gengs_lightning.study.spec import Run, Setting, Study, StudyError

__all__ = ["Layout", "Run", "Setting", "Study", "StudyError", "execute", "merge", "run_study", "write_report"]
