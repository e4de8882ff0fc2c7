"""The public Python API: `import aim_cli as aim`.

What the CLI runs, without files or Typer. Models from any source (`load_model`,
`list_models`, the `ModelSource` plugin interface); the tasks over inputs with a profile,
yielding typed records; validated profiles, modulation of any logits tensor, the transformers
logits processor, the exact analytic functions and calibration from logits a user already has;
image tiers on Ray; certified tiers verified and a tiers folder's HTML report; lm-eval tasks
at a sweep of tiers (evaluate); tiers behind a server (serve_plan, start_server). Errors are
aim_cli.errors.AimError subclasses with one-line messages, as on the command line. Each name
lives in one module of this package (aim_cli.__init__ lists where).
"""

from __future__ import annotations

import aim_cli
from aim_cli.api.calibration import calibrate
from aim_cli.api.classification import ClassificationRun, ClassifiedImage, Prediction, classify
from aim_cli.api.evaluation import EvalReport, EvalRow, evaluate
from aim_cli.api.generation import Completion, Generation, generate
from aim_cli.api.logits import (
    AimError,
    Calibration,
    CurveRow,
    FocusRequest,
    InputError,
    ModelError,
    ModulationPlan,
    MonteCarloCheck,
    Profile,
    ProfileError,
    ProfileLike,
    accuracy_curve,
    calibrate_logits,
    expected_accuracy,
    expected_recall,
    item_key,
    logits_processor,
    modulate,
    plan,
    win_probability,
)
from aim_cli.api.models import ModelRequest, ModelSource, ModelSourceInfo, list_models, load_model
from aim_cli.api.ray import vision_app, vision_job
from aim_cli.api.report import ReportSummary, ReportTier, write_report
from aim_cli.api.segmentation import SegmentedImage, SegmentEvaluation, SegmentMetrics, SegmentRun, segment
from aim_cli.api.serve import ImageServeOptions, ServePlan, ServeSettings, serve_plan, start_server
from aim_cli.api.verification import Verification, verify
from aim_cli.errors import FailedInput

# The public names are listed once, in aim_cli/__init__.py, which must stay cheap to import.
__all__ = list(aim_cli.__all__)
