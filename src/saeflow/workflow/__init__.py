"""The workflow machinery: config, content keys, the plan, the store, the step registry, job start-up."""
