"""Lion: adversarial distillation (Jiang et al., EMNLP 2023)."""
