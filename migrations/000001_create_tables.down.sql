DROP TABLE IF EXISTS schedules, task_queues, workers, workflow_steps, workflow_runs;
