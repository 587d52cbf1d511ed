"""Jobs: slice-by-slice training of compartments, the paragon and ensemble members, on a backend."""

from .backends import BACKENDS, JobsFailed, run_jobs
from .slices import JobResult, SliceJob, run_job, stage_steps

__all__ = ["BACKENDS", "JobsFailed", "run_jobs", "JobResult", "SliceJob", "run_job", "stage_steps"]
from .compartments import PARAGON, default_model_config, num_classes, plan_compartments, train_compartments, train_paragon

__all__ += ["PARAGON", "default_model_config", "num_classes", "plan_compartments", "train_compartments", "train_paragon"]
from .base import BASE, active_base, train_base

__all__ += ["BASE", "active_base", "train_base"]
