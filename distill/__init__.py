"""The offline distill job (logs -> dataset -> TRL + PEFT -> eval gate -> registry). Not built yet."""
