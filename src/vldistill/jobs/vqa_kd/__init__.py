"""VQA distillation (``job: vqa_kd``): data, teacher, students with and without KD, phases,
the teacher-output cache."""
