"""Jobs: one package per kind of run, each implementing the Job contract of
:mod:`vldistill.jobs.base`; :mod:`vldistill.jobs.table` is the table `vldistill run`
dispatches through."""
