"""The offline distill job: logs → dataset → TRL + PEFT → eval gate → registry (see `distill.job`)."""
