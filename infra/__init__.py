"""CDK app for the self-hosted agent: one stack composed of small constructs."""
