"""TA batch grading: a folder of submissions, graded in parallel, resumably, with a class summary.

``layouts`` finds the submissions (plain files, folders, LMS and Canvas exports),
``runner`` schedules them over long-lived ``worker`` processes, ``store`` writes every
per-student file atomically and remembers what was graded, ``summary`` and ``histogram``
write the class outputs. ``shard`` splits a class for parallel processes that share one
output folder, and ``slurm`` runs those as a Slurm job array followed by a merge.
"""

from grader.batch.runner import BatchOptions, BatchOutcome, merge_batch, run_batch

__all__ = ["BatchOptions", "BatchOutcome", "merge_batch", "run_batch"]
