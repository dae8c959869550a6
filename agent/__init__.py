"""The customer-side agent: dials out to the control plane and runs the tenant Temporal worker."""
