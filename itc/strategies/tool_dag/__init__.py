"""Parallel tool calls: an LLM plans tool calls as a dependency graph (LLMCompiler) or in
rounds of independent calls (Divide-Then-Aggregate); an executor runs each call as soon as
the calls it depends on are done, while the plan still streams; a joiner answers or asks
for a new plan. One file per part: the plan language (`plan`), its checks (`check`), the
grammar that makes even a small model write a valid plan (`grammar`), the executor
(`execute`), the joiner (`join`) and the nodes (`node`, `rounds`)."""
