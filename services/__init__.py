"""The control-plane services: auth, connections and orchestrator."""
