"""Gradual rollout of distilled checkpoints: arms, the traffic split, and the promotion policy.

Per public model there is at most one rollout. While it is a **canary**, requests are split
between the incumbent arm (`base`: the base weights at the model's best_of) and the candidate
arm (`candidate`: the checkpoint's LoRA adapter at `rollout.candidate_best_of`, normally 1) by a
stable hash of the `user` field (else the API key, else the request id), so a user stays on one
arm. A sampled share of incumbent requests is also answered by the candidate in the background
(arm `shadow`, logged, never returned) so both arms are compared on the same prompts too.

After **promotion** the checkpoint serves all traffic at its best_of (arm `promoted`), so the
served cost drops by the incumbent's N. The state lives in the store's `rollouts` table: a
restarted gateway reloads the adapter and resumes the same split. Every start, look, step,
promotion, rollback and failure is a `rollout_events` row with the numbers; a rollback also marks
the checkpoint `rolled_back`, so the next distill run uses its data window again.

One concern per module: `routing` (where one request goes), `policy` (the statistic and the
decision, pure), `adapters` (loading and freeing checkpoints on backends), `servable` (which
checkpoints may be rolled out), `manager` (the state, the policy loop and operator control).
"""

from gateway.rollout.manager import RolloutManager
from gateway.rollout.policy import ArmStats, Decision, arm_stats, decide, decide_at_look, sequential_plan
from gateway.rollout.routing import Route, adapter_name

__all__ = ["ArmStats", "Decision", "RolloutManager", "Route", "adapter_name", "arm_stats", "decide",
           "decide_at_look", "sequential_plan"]
