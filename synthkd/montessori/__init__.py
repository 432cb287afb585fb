"""Montessori-Instruct (Li, Yu, Xiong, ICLR 2025): local data influence of synthetic examples on a student."""
