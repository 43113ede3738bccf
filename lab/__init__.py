"""Lab: network namespaces, FRR, ExaBGP and a stand-in Kubernetes API server."""
