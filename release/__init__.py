"""Progressive releases: gate, shadow, canary, promotion or rollback, judged from live metrics."""
