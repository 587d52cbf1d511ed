"""Jobs: slice-by-slice training of compartments, the paragon and ensemble members, on a backend."""

from .backends import BACKENDS, run_jobs
from .failures import JobsFailed
from .slices import JobResult, SliceJob, run_job, stage_steps

__all__ = ["BACKENDS", "JobsFailed", "run_jobs", "JobResult", "SliceJob", "run_job", "stage_steps"]
from .compartments import PARAGON, plan_compartments, train_compartments, train_paragon
from .models import default_model_config

__all__ += ["PARAGON", "default_model_config", "plan_compartments", "train_compartments", "train_paragon"]
from .base import train_base

__all__ += ["train_base"]
