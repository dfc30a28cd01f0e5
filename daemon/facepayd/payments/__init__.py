"""Face payments: the micropay state machine, driven from the journal."""
