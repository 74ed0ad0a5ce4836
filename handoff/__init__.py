"""The domain: calls, handoffs, agents, policy, routing, their state machines and store."""
