"""Judge-free scoring: metrics that are code (ROUGE-L, gold match, NLL) and code judges built on them."""
