"""Language models: the student (load, train, generate, all cached) and the teacher/judge client."""
