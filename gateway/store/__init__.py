"""The log: one SQLite file (WAL), opened as is by sqlite-utils and Datasette.

Everything that touches it goes through this package, as sqlite-utils keeps its API in one place:
- `schema`: the tables, the enums their status/arm/kind columns take, `open_database`/`connection`;
- `store`: `Store`, the log as the gateway uses it: schema, writer, reads of queued or written records;
- `writer`: the background thread that writes request logs without making requests wait, and `spill`,
  the file it keeps what it could not commit in; `records`: the record and the transaction writing it;
- `feedback`: writing a person's verdict;
- `reads`: the reads over requests, candidates and feedback, as typed rows;
- `checkpoints`: the checkpoint registry; `rollouts`: rollout state and events;
- `locks`: named locks (one distill run, one `tao loop` per database);
- `retention`: pruning old requests and giving the space back;
- `runs`: distill runs and how each ended.
No other module holds SQL: ask for a new read here rather than writing a query elsewhere.
"""

from gateway.store.checkpoints import (
    Checkpoint,
    get_checkpoint,
    last_distilled_until,
    newest_published_adapter,
    register_checkpoint,
    set_checkpoint_status,
    unstarted_candidate,
)
from gateway.store.locks import LockHeld, exclusive, hold_lease, release_lease
from gateway.store.reads import (
    ArmOutcomes,
    BestOfNCandidate,
    Conversation,
    ScoredCandidate,
    ServedReply,
    ShadowPair,
    Verdict,
    arm_outcomes,
    assistant_turn,
    best_of_n_candidates,
    candidate_count_and_winner,
    feedback_verdicts,
    request_caller,
    scored_chat_candidates,
    served_replies,
    shadow_pairs,
)
from gateway.store.retention import Pruned, checkpoint_wal, copy_database, prune, vacuum
from gateway.store.rollouts import (
    Incumbent,
    Rollout,
    RolloutEvent,
    active_rollouts,
    get_rollout,
    promoted_incumbent,
    rollout_events,
    save_rollout,
)
from gateway.store.runs import distill_run_counts, record_distill_run
from gateway.store.schema import (
    REWARD_MODEL_METHOD,
    SHADOW_SUFFIX,
    TRAINING_ARMS,
    Arm,
    CheckpointStatus,
    FeedbackKind,
    RequestStatus,
    RolloutState,
    caller_salt,
    connection,
    ensure_schema,
    open_database,
)
from gateway.store.feedback import record_feedback
from gateway.store.records import RequestLog
from gateway.store.store import Store
from gateway.store.writer import StoreHealth

__all__ = [
    "REWARD_MODEL_METHOD", "SHADOW_SUFFIX", "TRAINING_ARMS", "Arm", "ArmOutcomes", "Conversation", "BestOfNCandidate", "Checkpoint",
    "CheckpointStatus", "FeedbackKind", "Incumbent", "LockHeld", "Pruned", "RequestLog", "RequestStatus", "Rollout", "RolloutEvent", "RolloutState",
    "ScoredCandidate", "ServedReply", "ShadowPair", "Store", "StoreHealth", "Verdict", "active_rollouts", "arm_outcomes", "assistant_turn",
    "best_of_n_candidates", "caller_salt", "candidate_count_and_winner", "checkpoint_wal", "connection", "copy_database", "ensure_schema", "exclusive", "hold_lease", "release_lease",
    "distill_run_counts", "feedback_verdicts", "record_feedback", "get_checkpoint", "get_rollout", "last_distilled_until", "newest_published_adapter",
    "open_database", "promoted_incumbent", "prune",
    "record_distill_run", "register_checkpoint", "request_caller", "rollout_events", "save_rollout", "scored_chat_candidates", "served_replies",
    "set_checkpoint_status", "shadow_pairs", "unstarted_candidate", "vacuum",
]
