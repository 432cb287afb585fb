"""Symbolic knowledge distillation (West et al., NAACL 2022): teacher-written commonsense triples
filtered by a trained critic."""
