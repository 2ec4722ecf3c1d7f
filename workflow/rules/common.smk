from medflow.config import ConfigError, check_config, manifest_view, report_view, spec_for
from medflow.study import stratify_label
from medflow.stages import STAGE_VERSIONS
from medflow.train.devices import gpu_requests_enabled
from medflow.workflow.plan import Plan, memory_mb, names_regex

try:
    CHECKED = check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# `--resources gpu=N` caps jobs that request a GPU. On a machine without one those jobs run on the
# CPU, and requesting the GPU would only serialise them; `gpu_requests: always` is for cluster
# profiles, where the submitting host has no GPU but the compute nodes do.
PLAN = Plan(CHECKED, request_gpus=gpu_requests_enabled(CHECKED["gpu_requests"]))
LAYOUT = PLAN.layout
EVALUATION = CHECKED["evaluation"]
ENV = "../../envs/medflow.yaml"


wildcard_constraints:
    **PLAN.wildcard_constraints(),
