"""Kubernetes Services and EndpointSlices for the service load balancer (not in Felix's stream)."""
