"""Cost and abuse limits shared by every instance: per-client rate, active-call slots, daily budgets
and the per-day usage rows, kept in the app's own storage account (one table)."""
