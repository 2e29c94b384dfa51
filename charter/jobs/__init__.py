"""A generation job's life, from its spec to its summary.

- `spec`: what a job is (`JobSpec`, whose hash is the job id) and what a caller may choose
  about it (`JobOptions`, `RunOptions`);
- `store`: the `jobs`, `job_prompts` and `preferences` tables;
- `leases`: who runs a job now, so two runners never pay for the same calls;
- `session`: one run of one job (open the models, create or resume the job, run, close),
  used by `charter generate`, the service and `charter pipeline`;
- `run`: the run loop, prompt by prompt; `modes`: compare and revise for one prompt;
  `stopping`: a clean stop on request;
- `results` and `summary`: readers of what a job stored, and its `JobSummary`.
"""
