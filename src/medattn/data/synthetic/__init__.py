"""Synthetic data sets with known ground truth, written in the real on-disk layouts."""

from medattn.data.synthetic.derm import write_derm
from medattn.data.synthetic.path import write_path
from medattn.data.synthetic.suite import write_suite

__all__ = ["write_derm", "write_path", "write_suite"]
