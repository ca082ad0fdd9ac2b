"""Experiments over registry entries: few-shot harness, baselines, benchmark suites, BayesPrompt modes and report,
task similarity, SUPMER domain generalisation. They name inits; they never know how an init was made."""
