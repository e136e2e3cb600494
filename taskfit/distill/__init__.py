"""Distillation: a teacher (any strategy x model) labels inputs, a student learns its answers.

The path: ``spec`` (a task file's ``distill:`` row) -> ``label`` (the teacher's answers on the train inputs, the
unlabeled file and optional synthetic inputs; cached, budgeted, stored as a run) -> ``student`` (the tuning
machinery trains on the teacher's labels, and on the gold ones for comparison) -> ``board`` (the student's
leaderboard row gets its teacher, the labelling cost and its agreement with the teacher).
"""
