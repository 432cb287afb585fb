"""Student preference distillation with DPO (TS-Align style ranking, DistiLLM-2 style teacher-vs-student)."""
