"""Image-classification distillation (``job: classification``): a teacher classifier, students
with and without KD over seeds, an online or cached teacher source."""
