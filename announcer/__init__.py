"""Announce every Kubernetes Service IP to BGP peers through ExaBGP."""
